/**
 * A small LRU cache of piece data for uploads, shared by a session's
 * torrents. Peers ask for 16 KiB blocks, usually a piece's blocks in order
 * and several peers the same pieces; reading 1 MiB chunks once and serving
 * the blocks from memory saves the device many small reads. Its size is a
 * fixed part of the session's memory budget.
 */
import type { PieceStore } from '../storage/types.js'
import { pieceSize } from '../torrent/piece-map.js'

export const CHUNK_SIZE = 1024 * 1024

interface Entry {
  readonly data: Promise<Buffer>
  readonly size: number
}

export class ReadCache {
  private readonly entries = new Map<string, Entry>()
  private readonly ids = new WeakMap<PieceStore, number>()
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
  async read(store: PieceStore, index: number, offset: number, length: number): Promise<Buffer> {
    const chunk = Math.min(CHUNK_SIZE, store.layout.pieceLength)
    const first = Math.floor(offset / chunk)
    if (this.capacity < chunk || Math.floor((offset + length - 1) / chunk) !== first) {
      return store.read(index, offset, length)
    }
    let entry = this.entries.get(this.key(store, index, first))
    if (entry) this.touch(store, index, first, entry)
    else entry = this.load(store, index, first, chunk)
    // peers read a piece's blocks in order: have the next chunk read while this one is sent
    const next = first + 1
    if (next * chunk < pieceSize(store.layout, index) && !this.entries.has(this.key(store, index, next))) this.load(store, index, next, chunk)
    const data = await entry.data
    const at = offset - first * chunk
    return data.subarray(at, at + length)
  }

  private key(store: PieceStore, index: number, chunk: number): string {
    return `${this.storeId(store)}:${index}:${chunk}`
  }

  private touch(store: PieceStore, index: number, chunk: number, entry: Entry): void {
    const key = this.key(store, index, chunk)
    this.entries.delete(key)
    this.entries.set(key, entry)
  }

  private load(store: PieceStore, index: number, n: number, chunk: number): Entry {
    const key = this.key(store, index, n)
    const start = n * chunk
    const size = Math.min(chunk, pieceSize(store.layout, index) - start)
    const entry = { data: store.read(index, start, size), size }
    this.entries.set(key, entry)
    this.used += size
    entry.data.catch(() => this.forget(key))
    this.evict()
    return entry
  }

  private forget(key: string): void {
    const e = this.entries.get(key)
    if (!e) return
    this.entries.delete(key)
    this.used -= e.size
  }

  private evict(): void {
    for (const key of this.entries.keys()) {
      if (this.used <= this.capacity) break
      this.forget(key)
    }
  }

  /** Forget a store's chunks (its torrent was removed or its data rewritten). */
  drop(store: PieceStore): void {
    const id = this.ids.get(store)
    if (id === undefined) return
    for (const key of [...this.entries.keys()]) if (key.startsWith(`${id}:`)) this.forget(key)
  }
}
