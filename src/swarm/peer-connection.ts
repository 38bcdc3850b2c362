/**
 * One TCP connection to a peer: the socket, the bittorrent-protocol Wire on
 * it, and what the swarm keeps per peer (rates, requests in flight, the
 * upload queue). Socket reads go through `pauseReads`/`resumeReads` so the
 * swarm can push back on peers when the disk falls behind: bytes are fed by
 * hand (not piped) so a pause really stops reading — request, cancel and
 * piece messages to the BlockChannel, the rest to the wire — and each
 * chunk passes the FrameGuard first, so a peer that breaks the framing is
 * cut off before the wire buffers anything for it.
 */
import { EventEmitter } from 'node:events'
import { connect, type Socket } from 'node:net'
import Wire from 'bittorrent-protocol'
import { describePeer, type PeerIdentity } from './ban-list.js'
import { BlockChannel } from './block-channel.js'
import { FrameGuard } from './frame-guard.js'
import type { PieceSet } from './piece-set.js'
import { RateMeter } from './rate-meter.js'

/** A peer's request for a block, waiting to be served. */
export interface UploadRequest {
  readonly index: number
  readonly offset: number
  readonly length: number
}

export const HANDSHAKE_TIMEOUT_MS = 20_000
/** No byte from the peer for this long (keep-alives come every 55 s): the connection is dead. */
export const IDLE_TIMEOUT_MS = 150_000
/** No requested block for this long: the peer is snubbing us (see TorrentSwarm; --request-timeout). */
export const REQUEST_TIMEOUT_MS = 30_000

export class PeerConnection extends EventEmitter {
  readonly wire = new Wire()
  /** Request, cancel and piece messages (the wire has the rest). */
  readonly blocks: BlockChannel
  /** The peer's listen port when known (dialed, or told in its extended handshake), else its source port. */
  listenPort: number
  peerId?: string
  client?: string
  readonly download = new RateMeter()
  readonly upload = new RateMeter()
  /** Blocks asked of this peer and not yet received (blockKey of piece and block). */
  readonly inflight = new Set<number>()
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
  /** Requests refused (queue full, piece we lack) since its upload queue was last empty. */
  refusedRequests = 0
  /** A request timed out and no requested block came since. */
  snubbed = false
  /** Blocks it sent that we had not asked for (or no longer), since the last one we had. */
  unrequestedBlocks = 0
  /** Checks each frame from the peer before the wire sees it. */
  readonly frames = new FrameGuard()
  closed = false
  closeReason?: string
  /** It broke the protocol (closed by `violation`): the swarm bans it. */
  misbehaved = false
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
    readers.set(socket, this)
    socket.on('data', (chunk: Buffer) => this.received(chunk, false))
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
    this.blocks = new BlockChannel(socket, this.wire)
    this.blocks.on('error', (err: Error) => this.violation(err.message))
    this.blocks.setTimeout(REQUEST_TIMEOUT_MS)
    this.wire.once('handshake', (_infoHash: string, peerId: string) => {
      clearTimeout(this.handshakeTimer)
      this.peerId = peerId
    })
    this.handshakeTimer = setTimeout(() => this.close('no handshake'), HANDSHAKE_TIMEOUT_MS)
    this.handshakeTimer.unref()
  }

  /** Bytes from the socket; `transient`: in a buffer the next read reuses (copy what is kept). */
  received(chunk: Buffer, transient: boolean): void {
    if (this.closed) return
    const bad = this.frames.feed(chunk)
    if (bad) this.violation(bad)
    else this.blocks.feed(chunk, transient)
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

  /** The peer broke the protocol: close, marked as misbehaved (a reason for a ban). */
  violation(what: string): void {
    if (this.closed) return
    this.misbehaved = true
    this.close(`protocol violation: ${what}`)
  }

  /** Close once; 'close' is emitted with the reason. */
  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    this.closeReason = reason
    clearTimeout(this.handshakeTimer)
    this.blocks.close()
    this.wire.destroy()
    this.socket.destroy()
    this.emit('close', reason)
  }
}

/** Each socket's connection, for reads that arrive through `onread`. */
const readers = new WeakMap<Socket, PeerConnection>()
/** Bytes a dialed connection reads at once, into its one buffer. */
const READ_BUFFER = 128 * 1024

/**
 * Dial a peer for a PeerConnection: its reads land in one buffer reused for
 * every read, not a new one each (a gigabyte of short-lived buffers per
 * gigabyte downloaded, which V8 has to collect).
 */
export function connectPeer(opts: { host: string; port: number; localAddress?: string }): Socket {
  const socket: Socket = connect({
    ...opts,
    onread: {
      buffer: Buffer.allocUnsafeSlow(READ_BUFFER),
      callback: (n: number, buf: Uint8Array) => {
        readers.get(socket)?.received(Buffer.from(buf.buffer, buf.byteOffset, n), true)
        return true
      },
    },
  })
  return socket
}
