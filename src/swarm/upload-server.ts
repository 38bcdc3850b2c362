/**
 * Serving peers' block requests, bounded: each peer has a queue of request
 * descriptors (capped), served one at a time while its socket has room, each
 * block paced by the session's upload limit and read through the read cache.
 * A slow peer therefore never makes us hold more than its socket buffer's
 * worth of data.
 */
import type { PieceStore } from '../storage/types.js'
import { pieceSize } from '../torrent/piece-map.js'
import type { PeerConnection } from './peer-connection.js'
import type { PieceSet } from './piece-set.js'
import type { TokenBucket } from './rate-limit.js'
import type { ReadCache } from './read-cache.js'

/** Requests queued per peer beyond which new ones are refused. */
export const MAX_QUEUED_REQUESTS = 1024
/** Largest block a peer may ask for (the protocol's norm is 16 KiB). */
export const MAX_BLOCK = 128 * 1024
/** Stop reading for a peer while this much is waiting in its socket. */
export const SEND_HIGH_WATER = 1024 * 1024

export interface UploadDeps {
  readonly store: PieceStore
  readonly have: PieceSet
  readonly cache: ReadCache
  readonly limit: TokenBucket
  /** A read failed: the target is unusable. */
  readonly onError: (err: Error) => void
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export class UploadServer {
  constructor(private readonly deps: UploadDeps) {}

  /** A request from `conn` (the wire only passes requests from peers we do not choke). */
  request(conn: PeerConnection, index: number, offset: number, length: number, respond: (err: Error | null, data?: Uint8Array) => void): void {
    const { layout } = this.deps.store
    if (index >= layout.pieceCount || !this.deps.have.has(index)) return respond(new Error(`piece ${index} is not available`))
    if (length <= 0 || length > MAX_BLOCK || offset < 0 || offset + length > pieceSize(layout, index)) {
      conn.close(`bad request: piece ${index} ${offset}+${length}`)
      return
    }
    if (conn.uploadQueue.length >= MAX_QUEUED_REQUESTS) return respond(new Error('request queue is full'))
    conn.uploadQueue.push({ index, offset, length, respond })
    void this.serve(conn)
  }

  /** The peer cancelled a request. */
  cancel(conn: PeerConnection, index: number, offset: number, length: number): void {
    const q = conn.uploadQueue
    const i = q.findIndex((r) => r.index === index && r.offset === offset && r.length === length)
    if (i >= 0) q.splice(i, 1)
  }

  /** We choked the peer: its pending requests are void. */
  clear(conn: PeerConnection): void {
    conn.uploadQueue.length = 0
  }

  private async serve(conn: PeerConnection): Promise<void> {
    if (conn.serving) return
    conn.serving = true
    try {
      while (!conn.closed && conn.uploadQueue.length > 0) {
        if (conn.sendBuffered >= SEND_HIGH_WATER) {
          await new Promise<void>((resolve) => {
            const done = () => {
              conn.off('drain', done)
              conn.off('close', done)
              resolve()
            }
            conn.on('drain', done)
            conn.on('close', done)
          })
          continue
        }
        const req = conn.uploadQueue.shift()!
        const wait = this.deps.limit.take(req.length)
        if (wait > 0) await sleep(wait)
        if (conn.closed || conn.wire.amChoking) continue
        const data = await this.deps.cache.read(this.deps.store, req.index, req.offset, req.length)
        if (conn.closed) break
        // a no-op if the peer cancelled meanwhile; the wire counts what it really sends ('upload')
        req.respond(null, data)
      }
    } catch (err) {
      this.deps.onError(err as Error)
    } finally {
      conn.serving = false
    }
  }
}
