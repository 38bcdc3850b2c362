/**
 * One TCP connection to a peer: the socket, the bittorrent-protocol Wire on
 * it, and what the swarm keeps per peer (rates, requests in flight, the
 * upload queue). Socket reads go through `pauseReads`/`resumeReads` so the
 * swarm can push back on peers when the disk falls behind: bytes are fed to
 * the wire by hand (not piped) so a pause really stops reading.
 */
import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import Wire from 'bittorrent-protocol'
import { describePeer, type PeerIdentity } from './ban-list.js'
import type { PieceSet } from './piece-set.js'
import { RateMeter } from './rate-meter.js'

/** A peer's request for a block, waiting to be served. */
export interface UploadRequest {
  readonly index: number
  readonly offset: number
  readonly length: number
  readonly respond: (err: Error | null, data?: Uint8Array) => void
}

export const HANDSHAKE_TIMEOUT_MS = 20_000
/** No byte from the peer for this long (keep-alives come every 55 s): the connection is dead. */
export const IDLE_TIMEOUT_MS = 150_000
/** A request unanswered for this long: the peer is snubbing us. */
export const REQUEST_TIMEOUT_MS = 30_000

export class PeerConnection extends EventEmitter {
  readonly wire = new Wire()
  /** The peer's listen port when known (dialed, or told in its extended handshake), else its source port. */
  listenPort: number
  peerId?: string
  client?: string
  readonly download = new RateMeter()
  readonly upload = new RateMeter()
  /** Blocks asked of this peer and not yet received: "piece:block" → the block's piece. */
  readonly inflight = new Map<string, { index: number; block: number }>()
  /** How many blocks to keep requested; grows with the peer's rate. */
  depth = 16
  /** Requests the peer will queue (its extended handshake's "reqq"; 250 if it does not say). */
  maxRequests = 250
  /** Pieces the peer has (from its bitfield and have messages), once it is in a swarm. */
  pieces?: PieceSet
  /** Pieces the peer has that we lack (interest). */
  wantedCount = 0
  readonly uploadQueue: UploadRequest[] = []
  serving = false
  closed = false
  closeReason?: string
  private readsPaused = false
  private corked = false
  private readonly handshakeTimer: NodeJS.Timeout

  constructor(
    readonly socket: Socket,
    readonly direction: 'in' | 'out',
    readonly ip: string,
    readonly remotePort: number,
  ) {
    super()
    this.listenPort = remotePort
    socket.setNoDelay(true)
    socket.setTimeout(IDLE_TIMEOUT_MS, () => this.close('idle timeout'))
    socket.on('data', (chunk: Buffer) => {
      if (!this.closed) this.wire.write(chunk)
    })
    socket.on('error', (err) => this.close(`socket error: ${(err as NodeJS.ErrnoException).code ?? err.message}`))
    socket.on('close', () => this.close('connection closed by peer'))
    socket.on('drain', () => this.emit('drain'))
    // the wire emits each message (often 17-byte requests) separately: cork the
    // socket for the rest of the tick so a burst leaves as one write
    this.wire.on('data', (chunk: Uint8Array) => {
      if (socket.destroyed) return
      if (!this.corked) {
        this.corked = true
        socket.cork()
        process.nextTick(() => {
          this.corked = false
          socket.uncork()
        })
      }
      socket.write(chunk)
    })
    this.wire.on('error', (err: Error) => this.close(`protocol error: ${err.message}`))
    this.wire.on('close', () => this.close('wire closed'))
    this.wire.on('finish', () => this.close('wire closed'))
    this.wire.setKeepAlive(true)
    this.wire.setTimeout(REQUEST_TIMEOUT_MS, true)
    this.wire.once('handshake', (_infoHash: string, peerId: string) => {
      clearTimeout(this.handshakeTimer)
      this.peerId = peerId
    })
    this.handshakeTimer = setTimeout(() => this.close('no handshake'), HANDSHAKE_TIMEOUT_MS)
    this.handshakeTimer.unref()
  }

  get identity(): PeerIdentity {
    return { ip: this.ip, port: this.listenPort, peerId: this.peerId }
  }

  /** "ip:port" of the peer's listen port (or source port if unknown). */
  get address(): string {
    return describePeer({ ip: this.ip, port: this.listenPort })
  }

  /** Whether the peer has every piece. */
  get isSeed(): boolean {
    return this.pieces?.complete ?? false
  }

  /** Bytes queued for the socket and not yet sent. */
  get sendBuffered(): number {
    return this.socket.writableLength
  }

  pauseReads(): void {
    if (this.readsPaused || this.closed) return
    this.readsPaused = true
    this.socket.pause()
  }

  resumeReads(): void {
    if (!this.readsPaused || this.closed) return
    this.readsPaused = false
    this.socket.resume()
  }

  /** Close once; 'close' is emitted with the reason. */
  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    this.closeReason = reason
    clearTimeout(this.handshakeTimer)
    this.wire.destroy()
    this.socket.destroy()
    this.emit('close', reason)
  }
}
