/**
 * The PieceStore contract, one suite that every store runs (the idea of
 * abstract-chunk-store's tests): `storeContract(name, factory)` defines the
 * tests; a backend's test is one call with a factory that makes a target
 * holding given bytes and opens a store on it. The torrent is multi-extent
 * (tiny, adjacent and multi-piece extents, a piece over four of them, a short
 * last piece); pieces are written in random order.
 *
 * The calling file runs `afterEach(cleanupAll)`: every store opened here is
 * closed by it (before the factory's own cleanups, which ran earlier).
 */
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { mulberry32 } from '../../tools/lib/random.js'
import { gapsOf } from '../../src/torrent/extents.js'
import { buildTorrent, type ExtentTorrent, type GapPolicy } from '../../src/torrent/metainfo.js'
import { mapPieceRange, pieceSize } from '../../src/torrent/piece-map.js'
import { type PieceStore, StorageError } from '../../src/storage/types.js'
import { onCleanup, pseudoRandom } from './sys.js'

const KiB = 1024
/** The target's size. */
export const CONTRACT_SIZE = 1024 * KiB
const PIECE = 16 * KiB

export interface ContractTarget {
  readonly store: PieceStore
  /**
   * The target's bytes now, CONTRACT_SIZE of them: the device or file; for a
   * directory of extent files, the initial bytes with each file laid over
   * them at its extent's offset.
   */
  readTarget(): Promise<Buffer>
}

/** Make a fresh target holding `initial` (CONTRACT_SIZE bytes) and open a store for `torrent` on it. */
export type StoreFactory = (torrent: ExtentTorrent, initial: Buffer, mode: 'read' | 'write') => Promise<ContractTarget>

export interface ContractOptions {
  /** The target holds only the extents (an extents directory): there are no gaps to zero. */
  readonly extentsOnly?: boolean
}

/** Sorted, unaligned; 1 byte, adjacent ones, one over several pieces; the last ends 1000 bytes before the target's end. */
const EXTENTS = [
  { offset: 4096 + 7, length: 1 },
  { offset: 8192, length: 5000 },
  { offset: 8192 + 5000, length: 300 },
  { offset: 20_000, length: 3 * PIECE + 123 },
  { offset: 90_001, length: 700 },
  { offset: 100_000, length: 2000 },
  { offset: 200_000, length: 40_000 },
  { offset: 300_005, length: 9999 },
  { offset: CONTRACT_SIZE - 5000, length: 4000 },
]
/** What the torrent brings, and what the target holds before. */
const SOURCE = pseudoRandom(CONTRACT_SIZE, 301)
const STALE = pseudoRandom(CONTRACT_SIZE, 302)
/** Where a "zero" torrent's zeroing stops: the bytes past it stay. */
const TARGET_SIZE = CONTRACT_SIZE - 512

function torrentOf(gaps: GapPolicy): ExtentTorrent {
  const stream = Buffer.concat(EXTENTS.map((e) => SOURCE.subarray(e.offset, e.offset + e.length)))
  const hashes: Buffer[] = []
  for (let p = 0; p < stream.length; p += PIECE) hashes.push(createHash('sha1').update(stream.subarray(p, p + PIECE)).digest())
  const meta = gaps === 'zero' ? { gaps, targetSize: TARGET_SIZE } : { gaps }
  return buildTorrent({ name: 'disk0', pieceLength: PIECE, pieces: Buffer.concat(hashes), extents: EXTENTS, meta }).torrent
}

function pieceData(t: ExtentTorrent, index: number, from = SOURCE): Buffer {
  const size = pieceSize(t.layout, index)
  const out = Buffer.alloc(size)
  for (const s of mapPieceRange(t.layout, index, 0, size)) from.copy(out, s.bufferOffset, s.diskOffset, s.diskOffset + s.length)
  return out
}

/** The stale bytes with the extents from `from` and, when asked, the gaps below `zeroTo` zeroed. */
function expected(t: ExtentTorrent, zeroTo = 0, from = SOURCE): Buffer {
  const out = Buffer.from(STALE)
  if (zeroTo > 0) for (const g of gapsOf(t.extents, zeroTo)) out.fill(0, g.offset, g.offset + g.length)
  for (const e of t.extents) from.copy(out, e.offset, e.offset, e.offset + e.length)
  return out
}

function shuffled(n: number, seed: number): number[] {
  const order = [...Array(n).keys()]
  const rnd = mulberry32(seed)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  return order
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(Error)
  return err as Error
}

export function storeContract(name: string, factory: StoreFactory, options: ContractOptions = {}): void {
  const open = async (t: ExtentTorrent, initial: Buffer, mode: 'read' | 'write'): Promise<ContractTarget> => {
    const target = await factory(t, Buffer.from(initial), mode)
    onCleanup(() => target.store.close())
    return target
  }
  const untouched = (t: ExtentTorrent) => expected(t, 0, STALE)

  describe(`PieceStore contract: ${name}`, () => {
    it('takes every piece in random order (pieces over several extents, a short last one) and reads them back; the extents hold the source, the rest is untouched', async () => {
      const t = torrentOf('dont-care')
      const sizes = [...Array(t.pieceCount).keys()].map((i) => pieceSize(t.layout, i))
      expect(Math.max(...sizes.map((s, i) => mapPieceRange(t.layout, i, 0, s).length))).toBeGreaterThanOrEqual(4)
      expect(sizes.at(-1)).toBeLessThan(PIECE)

      const { store, readTarget } = await open(t, STALE, 'write')
      for (const i of shuffled(t.pieceCount, 7)) await store.writePiece(i, pieceData(t, i))
      const reused = Buffer.alloc(PIECE)
      for (let i = 0; i < t.pieceCount; i++) {
        const want = pieceData(t, i)
        expect((await store.read(i, 0, sizes[i])).equals(want)).toBe(true)
        expect((await store.read(i, 1, sizes[i] - 2)).equals(want.subarray(1, -1))).toBe(true)
        const got = await store.read(i, 0, sizes[i], reused)
        expect(got.buffer === reused.buffer && got.equals(want)).toBe(true)
      }
      await store.finish()
      await store.close()
      expect((await readTarget()).equals(expected(t))).toBe(true)
    })

    it(
      options.extentsOnly ? "a 'zero' torrent: finish() leaves the extents as written (the target has no gaps)" : "a 'zero' torrent: finish() zeroes the gaps up to the torrent's target size, the bytes past it stay",
      async () => {
        const t = torrentOf('zero')
        const { store, readTarget } = await open(t, STALE, 'write')
        for (const i of shuffled(t.pieceCount, 8)) await store.writePiece(i, pieceData(t, i))
        await store.finish()
        await store.close()
        const got = await readTarget()
        expect(got.equals(expected(t, options.extentsOnly ? 0 : TARGET_SIZE))).toBe(true)
        expect(got.subarray(TARGET_SIZE).equals(STALE.subarray(TARGET_SIZE))).toBe(true)
      },
    )

    it('refuses a piece index out of range and a read outside its piece, and writes nothing', async () => {
      const t = torrentOf('dont-care')
      const { store, readTarget } = await open(t, STALE, 'write')
      const last = t.pieceCount - 1
      const lastSize = pieceSize(t.layout, last)
      for (const index of [-1, t.pieceCount, 1.5, Number.NaN]) {
        const err = await rejection(store.writePiece(index, Buffer.alloc(PIECE)))
        expect(err).toBeInstanceOf(RangeError)
        expect(err.message).toMatch(/out of range/)
        expect(await rejection(store.read(index, 0, 1))).toBeInstanceOf(RangeError)
      }
      const outside: [number, number, number][] = [
        [0, -1, 10],
        [0, PIECE - 10, 11],
        [0, 0, 0],
        [last, 0, lastSize + 1],
        [last, lastSize, 1],
      ]
      for (const [index, offset, length] of outside) {
        const err = await rejection(store.read(index, offset, length))
        expect(err).toBeInstanceOf(RangeError)
        expect(err.message).toMatch(new RegExp(`not inside piece ${index}`))
      }
      expect(await rejection(store.read(0, 0, 100, Buffer.alloc(99)))).toBeInstanceOf(RangeError)
      await store.finish()
      await store.close()
      expect((await readTarget()).equals(untouched(t))).toBe(true)
    })

    it("refuses a write whose length is not the piece's; the piece can then be written", async () => {
      const t = torrentOf('dont-care')
      const { store, readTarget } = await open(t, STALE, 'write')
      const last = t.pieceCount - 1
      for (const [index, length] of [
        [0, PIECE - 1],
        [0, PIECE + 1],
        [last, PIECE],
        [last, 0],
      ]) {
        const err = await rejection(store.writePiece(index, Buffer.alloc(length, 0xee)))
        expect(err).toBeInstanceOf(RangeError)
        expect(err.message).toBe(`piece ${index} is ${pieceSize(t.layout, index)} bytes, got ${length}`)
      }
      for (const i of [0, last]) await store.writePiece(i, pieceData(t, i))
      for (const i of [0, last]) expect((await store.read(i, 0, pieceSize(t.layout, i))).equals(pieceData(t, i))).toBe(true)
      await store.finish()
      await store.close()
      const want = untouched(t)
      for (const i of [0, last]) for (const s of mapPieceRange(t.layout, i, 0, pieceSize(t.layout, i))) SOURCE.copy(want, s.diskOffset, s.diskOffset, s.diskOffset + s.length)
      expect((await readTarget()).equals(want)).toBe(true)
    })

    it('refuses a second write of a piece and keeps the first', async () => {
      const t = torrentOf('dont-care')
      const { store, readTarget } = await open(t, STALE, 'write')
      for (const i of shuffled(t.pieceCount, 9)) await store.writePiece(i, pieceData(t, i))
      const err = await rejection(store.writePiece(2, pieceData(t, 2, STALE)))
      expect(err).toBeInstanceOf(StorageError)
      expect(err.message).toMatch(/^piece 2 of .+ was already written: a piece is written once, after its hash passed$/)
      expect((await store.read(2, 0, PIECE)).equals(pieceData(t, 2))).toBe(true)
      // the refusal is no failure of the target: the deploy still finishes
      await store.finish()
      await store.close()
      expect((await readTarget()).equals(expected(t))).toBe(true)
    })

    it('refuses every use after close; close again is harmless', async () => {
      const t = torrentOf('dont-care')
      const { store } = await open(t, STALE, 'write')
      await store.writePiece(0, pieceData(t, 0))
      await store.close()
      await store.close()
      for (const p of [store.read(0, 0, 1), store.writePiece(1, pieceData(t, 1)), store.flush(), store.finish()]) {
        const err = await rejection(p)
        expect(err).toBeInstanceOf(StorageError)
        expect(err.message).toMatch(/ is closed$/)
      }
    })

    it('flush and finish may be called again: with nothing written, between writes, after finish', async () => {
      const t = torrentOf('zero')
      const { store, readTarget } = await open(t, STALE, 'write')
      await store.flush()
      const order = shuffled(t.pieceCount, 10)
      for (const [n, i] of order.entries()) {
        await store.writePiece(i, pieceData(t, i))
        if (n % 2 === 0) await store.flush()
      }
      await store.flush()
      await store.flush()
      await store.finish()
      await store.finish()
      await store.close()
      expect((await readTarget()).equals(expected(t, options.extentsOnly ? 0 : TARGET_SIZE))).toBe(true)
    })

    it('opened for reading (seeding): serves every piece, refuses writes, flush and finish do nothing', async () => {
      const t = torrentOf('zero')
      const { store, readTarget } = await open(t, expected(t), 'read')
      for (const i of shuffled(t.pieceCount, 11)) expect((await store.read(i, 0, pieceSize(t.layout, i))).equals(pieceData(t, i))).toBe(true)
      const err = await rejection(store.writePiece(0, pieceData(t, 0)))
      expect(err).toBeInstanceOf(StorageError)
      expect(err.message).toMatch(/ was opened for reading \(seeding\), not writing$/)
      await store.flush()
      await store.finish()
      await store.close()
      await store.close()
      await store.flush()
      expect((await readTarget()).equals(expected(t))).toBe(true)
    })
  })
}
