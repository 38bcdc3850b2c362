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
import type { PeerConnection, UploadRequest } from './peer-connection.js'
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
  /** The request each connection's serve loop is reading now (a cancel of it is noted by deleting it). */
  private readonly current = new WeakMap<PeerConnection, UploadRequest>()

  constructor(private readonly deps: UploadDeps) {}

  /** A request from `conn` (its BlockChannel only passes requests from peers we do not choke). */
  request(conn: PeerConnection, index: number, offset: number, length: number): void {
    const { layout } = this.deps.store
    // >>> 0: a number read as signed (2^31 and more) shows as sent
    if (index < 0 || index >= layout.pieceCount) return conn.violation(`request for piece ${index >>> 0} of ${layout.pieceCount}`)
    const size = pieceSize(layout, index)
    if (length <= 0 || length > MAX_BLOCK || offset < 0 || offset + length > size) {
      return conn.violation(`request for ${length >>> 0} bytes at ${offset >>> 0} of piece ${index} (${size} bytes; a block is at most ${MAX_BLOCK / 1024} KiB)`)
    }
    if (!this.deps.have.has(index)) return this.refuse(conn, `piece ${index} is not available`)
    if (conn.uploadQueue.length >= MAX_QUEUED_REQUESTS) return this.refuse(conn, 'request queue is full')
    conn.uploadQueue.push({ index, offset, length })
    void this.serve(conn)
  }

  /** Say no to a request (without the fast extension: by not answering); a peer that keeps asking after a full queue's worth of refusals is flooding us. */
  private refuse(conn: PeerConnection, why: string): void {
    if (++conn.refusedRequests > MAX_QUEUED_REQUESTS) {
      conn.violation(`${conn.refusedRequests} requests refused (the last: ${why}); it was told to keep at most ${MAX_QUEUED_REQUESTS} queued`)
    }
  }

  /** The peer cancelled a request. */
  cancel(conn: PeerConnection, index: number, offset: number, length: number): void {
    const q = conn.uploadQueue
    const i = q.findIndex((r) => r.index === index && r.offset === offset && r.length === length)
    if (i >= 0) q.splice(i, 1)
    const now = this.current.get(conn)
    if (now && now.index === index && now.offset === offset && now.length === length) this.current.delete(conn)
  }

  /** We choked the peer: its pending requests are void. */
  clear(conn: PeerConnection): void {
    conn.uploadQueue.length = 0
    conn.refusedRequests = 0
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
        this.current.set(conn, req)
        const block = await this.deps.cache.read(this.deps.store, req.index, req.offset, req.length)
        const cancelled = this.current.get(conn) !== req
        this.current.delete(conn)
        if (conn.closed || cancelled || conn.wire.amChoking) {
          block.release()
          if (conn.closed) break
          continue
        }
        conn.blocks.piece(req.index, req.offset, block.data, block.release)
      }
      if (conn.uploadQueue.length === 0) conn.refusedRequests = 0
    } catch (err) {
      this.deps.onError(err as Error)
    } finally {
      conn.serving = false
    }
  }
}
