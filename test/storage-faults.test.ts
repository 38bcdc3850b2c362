/**
 * The storage layer on a disk with bad sectors: a FUSE file whose writes (or
 * reads) fail with EIO in a chosen byte range (helpers/faulty-fuse.py), used
 * through a loop device and directly as an image file. The error must surface
 * as a StorageError that names the target, where, and the errno, and nothing
 * may claim success afterwards.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { buildTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { mapPieceRange, pieceSize } from '../src/torrent/piece-map.js'
import { openStore } from '../src/storage/store.js'
import { StorageError, type PieceStore } from '../src/storage/types.js'
import { type ByteSpan, type FaultyDevice, faultyDevice } from './helpers/faulty-device.js'
import { cleanupAll, onCleanup, pseudoRandom } from './helpers/sys.js'

afterEach(cleanupAll)

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 4 * MiB
const PIECE = 16 * KiB
/** The bad sectors: unaligned, inside the second extent. */
const BAD: ByteSpan = [MiB + 5000, MiB + 25000]

const hex = (n: number) => `0x${n.toString(16)}`

/** What the disk held before the deploy, and what the deploy brings. */
const stale = pseudoRandom(SIZE, 1)
const image = pseudoRandom(SIZE, 2)

/** Three extents; the second crosses BAD (260 KiB into it, past the first 128 KiB FUSE request of a long write), the first and last are far from it. */
const torrent: ExtentTorrent = (() => {
  const extents = [
    { offset: 4096, length: 300_000 },
    { offset: 0xc0000 + 123, length: 400_000 },
    { offset: 2 * MiB, length: 500_000 },
  ]
  const stream = Buffer.concat(extents.map((e) => image.subarray(e.offset, e.offset + e.length)))
  const hashes: Buffer[] = []
  for (let p = 0; p < stream.length; p += PIECE) hashes.push(createHash('sha1').update(stream.subarray(p, p + PIECE)).digest())
  return buildTorrent({ name: 'disk0', pieceLength: PIECE, pieces: Buffer.concat(hashes), extents, meta: { gaps: 'dont-care' } }).torrent
})()

const slicesOf = (i: number) => mapPieceRange(torrent.layout, i, 0, pieceSize(torrent.layout, i))
const touches = (i: number, [start, end]: ByteSpan) => slicesOf(i).some((s) => s.diskOffset < end && s.diskOffset + s.length > start)
const allPieces = [...Array(torrent.pieceCount).keys()]
/** The pieces with a byte in the bad range. */
const badPieces = allPieces.filter((i) => touches(i, BAD))

function pieceData(i: number): Buffer {
  const out = Buffer.alloc(pieceSize(torrent.layout, i))
  for (const s of slicesOf(i)) image.copy(out, s.bufferOffset, s.diskOffset, s.diskOffset + s.length)
  return out
}

async function open(target: string): Promise<PieceStore> {
  const store = await openStore(torrent, target, { mode: 'write' })
  onCleanup(() => store.close())
  return store
}

async function rejection(p: Promise<unknown>): Promise<StorageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(StorageError)
  return err as StorageError
}

/** Write the pieces in order up to the first that fails. */
async function firstFailure(store: PieceStore): Promise<{ index: number; err: StorageError } | undefined> {
  for (const i of allPieces) {
    const err = await store.writePiece(i, pieceData(i)).then(
      () => undefined,
      (e: unknown) => e,
    )
    if (err) {
      expect(err).toBeInstanceOf(StorageError)
      return { index: i, err: err as StorageError }
    }
  }
  return undefined
}

/**
 * The daemon failed at least one write inside the bad range: the error did
 * come from the "disk". Its line may still be in the pipe when the error
 * reaches the test (both are ready in the same turn): wait for it, 5 s at most.
 */
async function expectInjected(dev: FaultyDevice, op: 'read' | 'write', [start, end]: ByteSpan): Promise<void> {
  const seen = () => dev.faults().some((f) => f.op === op && f.errno === 'EIO' && f.offset < end && f.offset + f.size > start)
  for (let k = 0; k < 100 && !seen(); k++) await new Promise((r) => setTimeout(r, 50))
  expect(seen()).toBe(true)
}

/** The first extent, far from the bad range, reached the disk; the bad range still holds the stale bytes. */
async function expectDiskState(dev: FaultyDevice): Promise<void> {
  const disk = await readFile(dev.image)
  const first = torrent.extents[0]
  expect(disk.subarray(first.offset, first.offset + first.length).equals(image.subarray(first.offset, first.offset + first.length))).toBe(true)
  expect(disk.subarray(BAD[0], BAD[1]).equals(stale.subarray(BAD[0], BAD[1]))).toBe(true)
}

describe('a loop device over a disk with bad sectors', () => {
  it('every write is taken into the page cache; finish() rejects with EIO naming the device and the written span, and keeps rejecting', async () => {
    const dev = await faultyDevice({ size: SIZE, failWrites: BAD, content: stale })
    const loop = dev.loop!
    const store = await open(loop)
    for (const i of allPieces) await store.writePiece(i, pieceData(i))

    const err = await rejection(store.finish())
    expect(err.target).toBe(loop)
    expect(err.errno).toBe('EIO')
    // fdatasync says that writeback failed, not where: the store names the span of everything written since the last flush
    const low = torrent.extents[0].offset
    const last = torrent.extents[torrent.extents.length - 1]
    expect(err.offset).toBe(low)
    expect(err.pieces).toEqual(allPieces)
    expect(err.message).toBe(
      `writeback to ${loop} failed: EIO (i/o error); data written since the last flush may be lost: ${allPieces.length} piece(s) (0, 1, 2, 3, 4 … ${allPieces.length - 1}) between offsets ${hex(low)} and ${hex(last.offset + last.length)}`,
    )
    await expect(store.finish()).rejects.toBe(err)
    await expect(store.writePiece(0, pieceData(0))).rejects.toBe(err)
    await store.close()
    await expectInjected(dev, 'write', BAD)
    await expectDiskState(dev)
  })

  it('flushing after every piece pins the failure on the first piece with a byte in the bad range', async () => {
    const dev = await faultyDevice({ size: SIZE, failWrites: BAD, content: stale })
    const loop = dev.loop!
    const store = await open(loop)
    let failed: { index: number; err: StorageError } | undefined
    for (const i of allPieces) {
      await store.writePiece(i, pieceData(i))
      const err = await store.flush().then(
        () => undefined,
        (e: unknown) => e as StorageError,
      )
      if (err) {
        failed = { index: i, err }
        break
      }
    }
    expect(failed?.index).toBe(badPieces[0])
    const { index, err } = failed!
    expect(err).toBeInstanceOf(StorageError)
    expect(err.errno).toBe('EIO')
    expect(err.pieces).toEqual([index])
    const low = Math.min(...slicesOf(index).map((s) => s.diskOffset))
    const high = Math.max(...slicesOf(index).map((s) => s.diskOffset + s.length))
    expect(low).toBeLessThan(BAD[1])
    expect(high).toBeGreaterThan(BAD[0])
    expect(err.offset).toBe(low)
    expect(err.message).toBe(`writeback to ${loop} failed: EIO (i/o error); data written since the last flush may be lost: 1 piece(s) (${index}) between offsets ${hex(low)} and ${hex(high)}`)
    await expect(store.finish()).rejects.toBe(err)
    await expectInjected(dev, 'write', BAD)
  })

  it('a read that meets bad sectors fails with EIO naming the device and an offset in the bad pages', async () => {
    const dev = await faultyDevice({ size: SIZE, failReads: BAD, content: image })
    const seed = await openStore(torrent, dev.loop!, { mode: 'read' })
    onCleanup(() => seed.close())
    // the block device's page cache reads whole pages (and reads ahead): pieces far from the bad range read fine
    const far = allPieces.filter((i) => !touches(i, [BAD[0] - 256 * KiB, BAD[1] + 256 * KiB]))
    expect(far.length).toBeGreaterThan(allPieces.length / 2)
    for (const i of far) expect((await seed.read(i, 0, pieceSize(torrent.layout, i))).equals(pieceData(i))).toBe(true)
    const i = badPieces[0]
    const err = await rejection(seed.read(i, 0, pieceSize(torrent.layout, i)))
    expect(err.target).toBe(dev.loop)
    expect(err.errno).toBe('EIO')
    expect(err.offset).toBeGreaterThanOrEqual(BAD[0] - (BAD[0] % 4096))
    expect(err.offset).toBeLessThan(BAD[1])
    expect(err.message).toMatch(new RegExp(`^read of \\d+ bytes at offset ${hex(err.offset!)} on ${dev.loop} failed: EIO \\(i/o error\\)$`))
    await expectInjected(dev, 'read', BAD)
  })
})

describe('the disk with bad sectors as an image file', () => {
  it('writePiece fails at the first bad byte with EIO naming the file; the pieces before are written; finish() rejects', async () => {
    const dev = await faultyDevice({ size: SIZE, failWrites: BAD, content: stale, partial: true, loop: false })
    const store = await open(dev.file)
    const failed = await firstFailure(store)
    expect(failed?.index).toBe(badPieces[0])
    const { err } = failed!
    expect(err.target).toBe(dev.file)
    expect(err.errno).toBe('EIO')
    // the piece's bytes before the bad range went down; the error names the first bad byte
    expect(err.offset).toBe(BAD[0])
    expect(err.message).toMatch(new RegExp(`^write of \\d+ bytes at offset ${hex(BAD[0])} on ${dev.file} failed: EIO \\(i/o error\\)$`))
    // nothing may report the deploy finished
    await expect(store.finish()).rejects.toBeInstanceOf(StorageError)
    await store.close()
    await expectInjected(dev, 'write', BAD)
    await expectDiskState(dev)
  })

  it('a read that meets bad sectors names the first bad byte', async () => {
    const dev = await faultyDevice({ size: SIZE, failReads: BAD, content: image, partial: true, loop: false })
    const seed = await openStore(torrent, dev.file, { mode: 'read' })
    onCleanup(() => seed.close())
    const err = await rejection(seed.read(badPieces[0], 0, pieceSize(torrent.layout, badPieces[0])))
    expect(err.errno).toBe('EIO')
    expect(err.offset).toBe(BAD[0])
    expect(err.message).toMatch(new RegExp(`^read of \\d+ bytes at offset ${hex(BAD[0])} on ${dev.file} failed: EIO \\(i/o error\\)$`))
  })

  it('a disk smaller than it claims (fake capacity): ENOSPC at the first byte past the real capacity', async () => {
    const capacity = MiB + 12345
    const dev = await faultyDevice({ size: SIZE, noSpaceFrom: capacity, partial: true, loop: false })
    const store = await open(dev.file)
    const failed = await firstFailure(store)
    expect(failed?.index).toBe(allPieces.find((i) => touches(i, [capacity, SIZE])))
    const first = failed!.err
    expect(first.target).toBe(dev.file)
    expect(first.errno).toBe('ENOSPC')
    expect(first.offset).toBe(capacity)
    expect(first.message).toMatch(new RegExp(`^write of \\d+ bytes at offset ${hex(capacity)} on ${dev.file} failed: ENOSPC \\(no space left on device\\)$`))
    await expect(store.finish()).rejects.toBeInstanceOf(StorageError)
  })
})
