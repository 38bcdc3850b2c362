/**
 * The session's one TCP listener for incoming peers. A connection is routed
 * to its torrent by the info-hash in the peer's handshake; a handshake for a
 * torrent the session does not serve closes the connection. A connection
 * from outside the allowed networks (--allow-peers) is closed at once,
 * before a byte is read from it.
 */
import { createServer, type Server, type Socket } from 'node:net'
import type { Logger } from 'pino'
import { adoptAccepted, PeerConnection } from '../swarm/peer-connection.js'
import { PeerFilter } from '../swarm/peer-filter.js'

/** Finds the torrent for an info-hash: returns its handler, or undefined. */
export type Router = (infoHash: string) => ((conn: PeerConnection) => void) | undefined

/** Connections still waiting for their handshake, at most. */
const MAX_UNROUTED = 256

export class Listener {
  private readonly unrouted = new Set<PeerConnection>()

  private constructor(
    private readonly server: Server,
    private readonly route: Router,
    private readonly log: Logger,
    private readonly allow: PeerFilter,
  ) {
    server.on('connection', (socket) => this.accept(socket))
  }

  /** Listen on `bind`:`port` (port 0: any free port). Throws a clear error when the port is taken. */
  static open(port: number, bind: string | undefined, route: Router, log: Logger, allow = PeerFilter.any): Promise<Listener> {
    const server = createServer({ noDelay: true, pauseOnConnect: true })
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const where = `${bind ?? '0.0.0.0'}:${port}`
        if (err.code === 'EADDRINUSE') reject(new Error(`cannot listen for peers on ${where}: the port is in use (choose another with --port)`))
        else if (err.code === 'EADDRNOTAVAIL') reject(new Error(`cannot listen for peers on ${where}: no such local address (check --bind)`))
        else reject(new Error(`cannot listen for peers on ${where}: ${err.code ?? err.message}`))
      })
      server.listen({ port, host: bind }, () => {
        server.removeAllListeners('error')
        server.on('error', (err) => log.error({ err: err.message }, 'peer listener error'))
        resolve(new Listener(server, route, log, allow))
      })
    })
  }

  get port(): number {
    const a = this.server.address()
    return typeof a === 'object' && a ? a.port : 0
  }

  private accept(paused: Socket): void {
    const ip = paused.remoteAddress?.replace(/^::ffff:/, '')
    if (!ip || this.unrouted.size >= MAX_UNROUTED || !this.allow.allows(ip)) {
      paused.destroy()
      if (ip && this.unrouted.size < MAX_UNROUTED) this.log.debug({ ip, allowed: String(this.allow) }, 'incoming peer outside --allow-peers: closed')
      return
    }
    const port = paused.remotePort ?? 0
    const conn = new PeerConnection(adoptAccepted(paused), 'in', ip, port)
    this.unrouted.add(conn)
    conn.once('close', () => this.unrouted.delete(conn))
    conn.once('handshake', (infoHash: string) => {
      this.unrouted.delete(conn)
      const handler = this.route(infoHash)
      if (!handler) {
        this.log.debug({ peer: conn.address, infoHash }, 'incoming peer for an unknown torrent')
        conn.close('unknown torrent')
        return
      }
      handler(conn)
    })
  }

  /** Stop accepting; connections already handed to torrents are theirs to close. */
  close(): Promise<void> {
    for (const conn of this.unrouted) conn.close('session closing')
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}
