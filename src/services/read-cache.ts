/**
 * A small LRU cache of piece data for uploads, shared by a session's
 * torrents. Peers ask for 16 KiB blocks, usually a piece's blocks in order
 * and several peers the same pieces; reading 1 MiB chunks once and serving
 * the blocks from memory saves the device many small reads. Its size is a
 * fixed part of the session's memory budget.
 *
 * Chunk buffers are reused: a fresh 1 MiB buffer per chunk is a gigabyte of
 * short-lived external memory per gigabyte seeded, which makes V8 collect
 * its whole heap over and over (measured: a third of a seeder's CPU). A
 * block handed out is a view of its chunk, so a chunk counts its users (the
 * read filling it, and each block until the socket has taken it: `release`)
 * and its buffer is reused only once it has none, evicted or not.
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
  readonly size: number
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
  private used = 0

  constructor(readonly capacity: number) {}

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
    if (this.capacity < chunk || Math.floor((offset + length - 1) / chunk) !== first) {
      return { data: await store.read(index, offset, length), release: noop }
    }
    let entry = this.entries.get(this.key(store, index, first))
    if (entry) this.touch(entry)
    else entry = this.load(store, index, first, chunk)
    // peers read a piece's blocks in order: have the next chunk read while this one is sent
    const next = first + 1
    if (next * chunk < pieceSize(store.layout, index) && !this.entries.has(this.key(store, index, next))) this.load(store, index, next, chunk)
    entry.users++
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

  private load(store: PieceStore, index: number, n: number, chunk: number): Entry {
    const key = this.key(store, index, n)
    const start = n * chunk
    const size = Math.min(chunk, pieceSize(store.layout, index) - start)
    const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(CHUNK_SIZE)
    const entry: Entry = { key, data: store.read(index, start, size, buffer), buffer, size, users: 1, evicted: false }
    this.entries.set(key, entry)
    this.used += size
    entry.data.then(
      () => this.release(entry),
      () => {
        this.forget(entry)
        this.release(entry)
      },
    )
    this.evict()
    return entry
  }

  private release(entry: Entry): void {
    entry.users--
    if (entry.users === 0 && entry.evicted && this.free.length * CHUNK_SIZE < this.capacity) this.free.push(entry.buffer)
  }

  private forget(entry: Entry): void {
    if (this.entries.get(entry.key) !== entry) return
    this.entries.delete(entry.key)
    this.used -= entry.size
    entry.evicted = true
    if (entry.users === 0 && this.free.length * CHUNK_SIZE < this.capacity) this.free.push(entry.buffer)
  }

  private evict(): void {
    for (const entry of this.entries.values()) {
      if (this.used <= this.capacity) break
      this.forget(entry)
    }
  }

  /** Forget a store's chunks (its torrent was removed or its data rewritten). */
  drop(store: PieceStore): void {
    const id = this.ids.get(store)
    if (id === undefined) return
    for (const entry of [...this.entries.values()]) if (entry.key.startsWith(`${id}:`)) this.forget(entry)
  }
}
