/**
 * A small LRU cache of piece data for uploads, shared by a session's
 * torrents. Peers ask for 16 KiB blocks, usually a piece's blocks in order
 * and several peers the same pieces; reading 1 MiB chunks once and serving
 * the blocks from memory saves the device many small reads. Its size is a
 * fixed part of the session's memory budget, and a hard one: never more
 * chunk buffers exist than fit in `capacity`, counting those still in use.
 *
 * Chunk buffers are reused: a fresh 1 MiB buffer per chunk is a gigabyte of
 * short-lived external memory per gigabyte seeded, which makes V8 collect
 * its whole heap over and over (measured: a third of a seeder's CPU). A
 * block handed out is a view of its chunk, so a chunk counts its users (the
 * read filling it, and each block until the socket has taken it: `release`)
 * and its buffer is reused only once it has none, evicted or not. When every
 * buffer is in use (many peers unchoked at once, each asking for another
 * chunk), a block is read on its own instead: the cache does not grow with
 * the number of peers (measured before this bound: 129 chunk buffers for 31
 * unchoked peers, twice a deploy's whole memory budget).
 */
import type { PieceStore } from '../storage/types.js'
import { pieceSize } from '../torrent/piece-map.js'

export const CHUNK_SIZE = 1024 * 1024

/** A block of piece data; call `release` once it is no longer used (sent or dropped). */
export interface CachedBlock {
  readonly data: Buffer
  readonly release: () => void
}

interface Entry {
  readonly key: string
  /** The chunk's bytes (the start of `buffer`), once read. */
  readonly data: Promise<Buffer>
  readonly buffer: Buffer
  /** The read in progress, plus blocks handed out and not released. */
  users: number
  /** Dropped from the cache; its buffer is reused when the last user is done. */
  evicted: boolean
}

const noop = () => {}

export class ReadCache {
  private readonly entries = new Map<string, Entry>()
  private readonly ids = new WeakMap<PieceStore, number>()
  /** Chunk buffers with no user, for reuse. */
  private readonly free: Buffer[] = []
  private nextId = 1
  /** Chunk buffers that exist: cached, evicted but still in use, or free. */
  private buffers = 0

  constructor(readonly capacity: number) {}

  /** Chunk buffers that exist now (at most capacity / CHUNK_SIZE). */
  get chunkBuffers(): number {
    return this.buffers
  }

  private storeId(store: PieceStore): number {
    let id = this.ids.get(store)
    if (id === undefined) {
      id = this.nextId++
      this.ids.set(store, id)
    }
    return id
  }

  /** Bytes [offset, offset+length) of piece `index`, through the cache. */
  async read(store: PieceStore, index: number, offset: number, length: number): Promise<CachedBlock> {
    const chunk = Math.min(CHUNK_SIZE, store.layout.pieceLength)
    const first = Math.floor(offset / chunk)
    const direct = async () => ({ data: await store.read(index, offset, length), release: noop })
    if (this.capacity < CHUNK_SIZE || Math.floor((offset + length - 1) / chunk) !== first) return direct()
    let entry = this.entries.get(this.key(store, index, first))
    if (entry) this.touch(entry)
    else entry = this.load(store, index, first, chunk)
    // every buffer is in use: this block on its own
    if (!entry) return direct()
    // counted before the read-ahead, which may take the buffer of an idle entry
    entry.users++
    // peers read a piece's blocks in order: have the next chunk read while this one is sent
    const next = first + 1
    if (next * chunk < pieceSize(store.layout, index) && !this.entries.has(this.key(store, index, next))) this.load(store, index, next, chunk)
    let data: Buffer
    try {
      data = await entry.data
    } catch (err) {
      this.release(entry)
      throw err
    }
    const at = offset - first * chunk
    let released = false
    return {
      data: data.subarray(at, at + length),
      release: () => {
        if (released) return
        released = true
        this.release(entry)
      },
    }
  }

  private key(store: PieceStore, index: number, chunk: number): string {
    return `${this.storeId(store)}:${index}:${chunk}`
  }

  private touch(entry: Entry): void {
    this.entries.delete(entry.key)
    this.entries.set(entry.key, entry)
  }

  /** A buffer for a chunk: a free one, a new one while they fit, else that of the least recently used idle entry; undefined when all are in use. */
  private takeBuffer(): Buffer | undefined {
    const free = this.free.pop()
    if (free) return free
    if ((this.buffers + 1) * CHUNK_SIZE <= this.capacity) {
      this.buffers++
      return Buffer.allocUnsafeSlow(CHUNK_SIZE)
    }
    for (const entry of this.entries.values()) {
      if (entry.users > 0) continue
      this.forget(entry)
      return this.free.pop()
    }
    return undefined
  }

  private load(store: PieceStore, index: number, n: number, chunk: number): Entry | undefined {
    const buffer = this.takeBuffer()
    if (!buffer) return undefined
    const key = this.key(store, index, n)
    const start = n * chunk
    const size = Math.min(chunk, pieceSize(store.layout, index) - start)
    const entry: Entry = { key, data: store.read(index, start, size, buffer), buffer, users: 1, evicted: false }
    this.entries.set(key, entry)
    entry.data.then(
      () => this.release(entry),
      () => {
        this.forget(entry)
        this.release(entry)
      },
    )
    return entry
  }

  private release(entry: Entry): void {
    entry.users--
    if (entry.users === 0 && entry.evicted) this.free.push(entry.buffer)
  }

  private forget(entry: Entry): void {
    if (this.entries.get(entry.key) !== entry) return
    this.entries.delete(entry.key)
    entry.evicted = true
    if (entry.users === 0) this.free.push(entry.buffer)
  }

  /** Forget a store's chunks (its torrent was removed or its data rewritten). */
  drop(store: PieceStore): void {
    const id = this.ids.get(store)
    if (id === undefined) return
    for (const entry of [...this.entries.values()]) if (entry.key.startsWith(`${id}:`)) this.forget(entry)
  }
}
