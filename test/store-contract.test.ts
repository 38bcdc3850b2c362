/**
 * Every store runs the one PieceStore contract (helpers/store-contract.ts):
 * an image file, a loop device, a directory of extent files, memory. Then
 * the guard's failure latch, which no healthy target can show (the faults
 * themselves on real targets: storage.test.ts, storage-faults.test.ts).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { GuardedStore, type StoreBackend } from '../src/storage/guarded-store.js'
import { MemoryStore } from '../src/storage/memory-store.js'
import { openStore } from '../src/storage/store.js'
import { StorageError } from '../src/storage/types.js'
import { buildTorrent } from '../src/torrent/metainfo.js'
import { storeContract } from './helpers/store-contract.js'
import { cleanupAll, loopAttach, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)

storeContract('image file', async (torrent, initial, mode) => {
  const file = join(await tempDir('bsw-contract-'), 'target.img')
  await writeFile(file, initial)
  return { store: await openStore(torrent, file, { mode }), readTarget: () => readFile(file) }
})

storeContract('loop device', async (torrent, initial, mode) => {
  const file = join(await tempDir('bsw-contract-'), 'backing.img')
  await writeFile(file, initial)
  const dev = await loopAttach(file)
  return { store: await openStore(torrent, dev, { mode }), readTarget: () => readFile(dev) }
})

storeContract(
  'extents directory',
  async (torrent, initial, mode) => {
    const dir = await tempDir('bsw-contract-')
    const files = join(dir, torrent.name)
    await mkdir(files)
    // the extent files exist with the target's bytes: stale ones to overwrite, or the ones to seed
    for (const e of torrent.extents) await writeFile(join(files, e.name), initial.subarray(e.offset, e.offset + e.length))
    const readTarget = async () => {
      const out = Buffer.from(initial)
      for (const e of torrent.extents) (await readFile(join(files, e.name))).copy(out, e.offset)
      return out
    }
    return { store: await openStore(torrent, dir, { mode }), readTarget }
  },
  { extentsOnly: true },
)

storeContract('memory', async (torrent, initial, mode) => {
  const store = new MemoryStore(torrent, initial, { mode })
  return { store, readTarget: async () => Buffer.from(store.bytes) }
})

describe('the guard (GuardedStore)', () => {
  const P = 16 * 1024
  const torrent = buildTorrent({ name: 'x', pieceLength: P, pieces: Buffer.alloc(3 * 20), extents: [{ offset: 0, length: 3 * P - 1000 }], meta: { gaps: 'dont-care' } }).torrent

  /** A backend over memory whose writes fail for chosen pieces, and that can meet a failure on its own. */
  class FlakyBackend implements StoreBackend {
    readonly target = 'flaky'
    readonly layout = torrent.layout
    readonly bytes = Buffer.alloc(3 * P - 1000)
    failure?: Error
    closed = 0
    constructor(readonly failWrites: ReadonlySet<number> = new Set()) {}
    async read(index: number, offset: number, length: number): Promise<Buffer> {
      return Buffer.from(this.bytes.subarray(index * P + offset, index * P + offset + length))
    }
    async writePiece(index: number, data: Buffer): Promise<void> {
      if (this.failWrites.has(index)) throw new StorageError(`write of piece ${index} failed: EIO`, this.target, index * P, 'EIO')
      data.copy(this.bytes, index * P)
    }
    async flush(): Promise<void> {}
    async finish(): Promise<void> {}
    async close(): Promise<void> {
      this.closed++
    }
  }

  it('latches the first failed write: every later call fails with it; close still closes, once', async () => {
    const backend = new FlakyBackend(new Set([1]))
    let released = 0
    const store = new GuardedStore(backend, { mode: 'write', onClose: async () => void released++ })
    await store.writePiece(0, Buffer.alloc(P, 1))
    const err = await store.writePiece(1, Buffer.alloc(P, 2)).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageError)
    for (const p of [store.finish(), store.finish(), store.flush(), store.read(0, 0, 10), store.writePiece(2, Buffer.alloc(P - 1000))]) await expect(p).rejects.toBe(err)
    await Promise.all([store.close(), store.close()])
    expect([backend.closed, released]).toEqual([1, 1])
  })

  it('latches a failure the backend met outside a call (a background flush) before the next call', async () => {
    const backend = new FlakyBackend()
    const store = new GuardedStore(backend, { mode: 'write' })
    await store.writePiece(0, Buffer.alloc(P, 1))
    expect((await store.read(0, 0, 4)).equals(Buffer.alloc(4, 1))).toBe(true)
    const late = new StorageError('writeback to flaky failed: EIO', 'flaky', 0, 'EIO')
    backend.failure = late
    await expect(store.read(0, 0, 4)).rejects.toBe(late)
    backend.failure = undefined
    await expect(store.finish()).rejects.toBe(late)
    await store.close()
  })
})
