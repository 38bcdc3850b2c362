/**
 * Serving peers' block requests, bounded: each peer has a queue of request
 * descriptors (capped), served one at a time while its socket has room, each
 * block paced by the session's upload limit, read through the read cache and
 * sent on the connection's BlockChannel (the cache's chunk is released once
 * the socket has taken the block). A slow peer therefore never makes us hold
 * more than its socket buffer's worth of data. A request no honest peer sends (a piece out of range, a
 * block past the piece's end or over 128 KiB, or a flood past the queue) is
 * a protocol violation.
 */
import type { PieceStore } from '../storage/types.js'
import { pieceSize } from '../torrent/piece-map.js'
import type { PeerConnection } from './peer-connection.js'
import type { PieceSet } from './piece-set.js'
import type { TokenBucket } from '../services/rate-limit.js'
import type { ReadCache } from '../services/read-cache.js'
import { MAX_BLOCK, MAX_QUEUED_REQUESTS } from './wire-messages.js'

/** A peer's request for a block, waiting to be served. */
interface UploadRequest {
  readonly index: number
  readonly offset: number
  readonly length: number
}

/** One peer's side of the upload: its queue, whether its serve loop runs, refusals since its queue was last empty. */
interface PeerUploads {
  readonly queue: UploadRequest[]
  serving: boolean
  refused: number
  /** The request being read now (a cancel of it is noted by clearing it). */
  current?: UploadRequest
}
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
  private readonly peers = new WeakMap<PeerConnection, PeerUploads>()

  constructor(private readonly deps: UploadDeps) {}

  private of(conn: PeerConnection): PeerUploads {
    let u = this.peers.get(conn)
    if (!u) this.peers.set(conn, (u = { queue: [], serving: false, refused: 0 }))
    return u
  }

  /** A request from `conn` (the connection only passes requests from peers we do not choke). */
  request(conn: PeerConnection, index: number, offset: number, length: number): void {
    const { layout } = this.deps.store
    // >>> 0: a number read as signed (2^31 and more) shows as sent
    if (index < 0 || index >= layout.pieceCount) return conn.violation(`request for piece ${index >>> 0} of ${layout.pieceCount}`)
    const size = pieceSize(layout, index)
    if (length <= 0 || length > MAX_BLOCK || offset < 0 || offset + length > size) {
      return conn.violation(`request for ${length >>> 0} bytes at ${offset >>> 0} of piece ${index} (${size} bytes; a block is at most ${MAX_BLOCK / 1024} KiB)`)
    }
    const u = this.of(conn)
    if (!this.deps.have.has(index)) return this.refuse(conn, u, `piece ${index} is not available`)
    if (u.queue.length >= MAX_QUEUED_REQUESTS) return this.refuse(conn, u, 'request queue is full')
    u.queue.push({ index, offset, length })
    void this.serve(conn, u)
  }

  /** Say no to a request (without the fast extension: by not answering); a peer that keeps asking after a full queue's worth of refusals is flooding us. */
  private refuse(conn: PeerConnection, u: PeerUploads, why: string): void {
    if (++u.refused > MAX_QUEUED_REQUESTS) {
      conn.violation(`${u.refused} requests refused (the last: ${why}); it was told to keep at most ${MAX_QUEUED_REQUESTS} queued`)
    }
  }

  /** The peer cancelled a request. */
  cancel(conn: PeerConnection, index: number, offset: number, length: number): void {
    const u = this.peers.get(conn)
    if (!u) return
    const i = u.queue.findIndex((r) => r.index === index && r.offset === offset && r.length === length)
    if (i >= 0) u.queue.splice(i, 1)
    const now = u.current
    if (now && now.index === index && now.offset === offset && now.length === length) u.current = undefined
  }

  /** We choked the peer: its pending requests are void. */
  clear(conn: PeerConnection): void {
    const u = this.peers.get(conn)
    if (!u) return
    u.queue.length = 0
    u.refused = 0
  }

  private async serve(conn: PeerConnection, u: PeerUploads): Promise<void> {
    if (u.serving) return
    u.serving = true
    try {
      while (!conn.closed && u.queue.length > 0) {
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
        const req = u.queue.shift()!
        const wait = this.deps.limit.take(req.length)
        if (wait > 0) await sleep(wait)
        if (conn.closed || conn.amChoking) continue
        u.current = req
        const block = await this.deps.cache.read(this.deps.store, req.index, req.offset, req.length)
        const cancelled = u.current !== req
        u.current = undefined
        if (conn.closed || cancelled || conn.amChoking) {
          block.release()
          if (conn.closed) break
          continue
        }
        conn.piece(req.index, req.offset, block.data, block.release)
      }
      if (u.queue.length === 0) u.refused = 0
    } catch (err) {
      this.deps.onError(err as Error)
    } finally {
      u.serving = false
    }
  }
}
