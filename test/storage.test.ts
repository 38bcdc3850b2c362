/**
 * The storage layer on real targets: loop devices over files pre-filled with
 * stale data, image files, directories of extent files (real partclone -T
 * output among them), a mounted ext4, a read-only loop, and a tiny tmpfs that
 * makes real ENOSPC/EIO write errors.
 */
import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, stat, truncate, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { extentsEnd, gapsOf } from '../src/torrent/extents.js'
import { buildTorrent, type ExtentTorrent, type GapPolicy } from '../src/torrent/metainfo.js'
import { mapPieceRange, pieceSize } from '../src/torrent/piece-map.js'
import { deviceUsers, parseMountInfo } from '../src/storage/device-usage.js'
import { extentFilePath } from '../src/storage/dir-store.js'
import { createImageFile, openStore } from '../src/storage/store.js'
import { StorageError, TargetRefused, type PieceStore } from '../src/storage/types.js'
import { OFFLOAD_MIN, zeroRanges } from '../src/storage/zero-gaps.js'
import { open } from 'node:fs/promises'
import { cleanupAll, loopAttach, onCleanup, pseudoRandom, run, sh, tempDir } from './helpers/sys.js'

const KiB = 1024
const MiB = 1024 * KiB
const PIECE = 16 * KiB

afterEach(cleanupAll)

/** Deterministic PRNG (mulberry32) for extent layouts. */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (((t ^ (t >>> 14)) >>> 0) % n) >>> 0
  }
}

interface Range {
  offset: number
  length: number
}

/** Pseudo-random extents in [0, limit): tiny, unaligned and multi-piece lengths, gaps of 0 (adjacent) to 40 KiB. */
function randomExtents(seed: number, limit: number, count: number): Range[] {
  const rnd = prng(seed)
  const out: Range[] = []
  let pos = rnd(8 * KiB)
  for (let i = 0; i < count; i++) {
    const kind = rnd(4)
    const length = kind === 0 ? 1 + rnd(700) : kind === 1 ? 1 + rnd(PIECE) : kind === 2 ? PIECE + rnd(3 * PIECE) : 4 * KiB * (1 + rnd(4))
    if (pos + length > limit) break
    out.push({ offset: pos, length })
    pos += length + (rnd(3) === 0 ? 0 : rnd(40 * KiB))
  }
  return out
}

/** A torrent whose extents hold `image`'s bytes at those offsets (hashes correct). */
function torrentFor(image: Buffer, extents: Range[], meta: { gaps: GapPolicy; targetSize?: number }, name = 'disk0', pieceLength = PIECE): ExtentTorrent {
  const stream = Buffer.concat(extents.map((e) => image.subarray(e.offset, e.offset + e.length)))
  const hashes: Buffer[] = []
  for (let p = 0; p < stream.length; p += pieceLength) hashes.push(createHash('sha1').update(stream.subarray(p, p + pieceLength)).digest())
  return buildTorrent({ name, pieceLength, pieces: Buffer.concat(hashes), extents, meta }).torrent
}

/** The bytes of piece `index`, taken from the image. */
function pieceData(t: ExtentTorrent, image: Buffer, index: number): Buffer {
  const size = pieceSize(t.layout, index)
  const out = Buffer.alloc(size)
  for (const s of mapPieceRange(t.layout, index, 0, size)) image.copy(out, s.bufferOffset, s.diskOffset, s.diskOffset + s.length)
  return out
}

/** Write every piece, in a shuffled order, then finish and close. */
async function deploy(store: PieceStore, t: ExtentTorrent, image: Buffer): Promise<void> {
  const order = [...Array(t.pieceCount).keys()]
  const rnd = prng(99)
  for (let i = order.length - 1; i > 0; i--) {
    const j = rnd(i + 1)
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  for (const i of order) await store.writePiece(i, pieceData(t, image, i))
  await store.finish()
  await store.close()
}

/** What the target must hold afterwards: stale bytes, extents from the image, gaps zeroed below `zeroTo`. */
function expectedImage(stale: Buffer, image: Buffer, t: ExtentTorrent, zeroTo = 0): Buffer {
  const out = Buffer.from(stale)
  if (zeroTo > 0) for (const g of gapsOf(t.extents, zeroTo)) out.fill(0, g.offset, g.offset + g.length)
  for (const e of t.extents) image.copy(out, e.offset, e.offset, e.offset + e.length)
  return out
}

/** A file of `size` stale (non-zero) bytes, and a loop device over it. */
async function staleLoop(dir: string, size: number, seed: number, opts: { readOnly?: boolean } = {}): Promise<{ dev: string; stale: Buffer; file: string }> {
  const file = join(dir, `stale-${seed}.img`)
  const stale = pseudoRandom(size, seed)
  await writeFile(file, stale)
  return { dev: await loopAttach(file, opts), stale, file }
}

async function mountOn(dev: string, dir: string, opts: string[] = []): Promise<void> {
  await sh('mount', [...opts, dev, dir])
  onCleanup(async () => {
    await run('umount', [dir])
  })
}

async function refusal(p: Promise<unknown>): Promise<TargetRefused> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(TargetRefused)
  return err as TargetRefused
}

describe('block device and image file targets', () => {
  it('writes pieces that span extents onto a loop device with stale data; bytes outside extents stay; reads them back', async () => {
    const dir = await tempDir('bsw-store-')
    const size = 4 * MiB
    const { dev, stale } = await staleLoop(dir, size, 7)
    const image = pseudoRandom(size, 8)
    const t = torrentFor(image, randomExtents(1, size, 80), { gaps: 'dont-care' })
    // the layout really exercises pieces over several extents, and extents over several pieces
    expect(Math.max(...[...Array(t.pieceCount).keys()].map((i) => mapPieceRange(t.layout, i, 0, pieceSize(t.layout, i)).length))).toBeGreaterThanOrEqual(3)
    expect(t.extents.some((e) => e.length > 2 * PIECE)).toBe(true)

    await deploy(await openStore(t, dev, { mode: 'write' }), t, image)
    expect((await readFile(dev)).equals(expectedImage(stale, image, t))).toBe(true)

    const seed = await openStore(t, dev, { mode: 'read' })
    for (let i = 0; i < t.pieceCount; i++) expect((await seed.read(i, 0, pieceSize(t.layout, i))).equals(pieceData(t, image, i))).toBe(true)
    const last = t.pieceCount - 1
    expect((await seed.read(1, 100, 5000)).equals(pieceData(t, image, 1).subarray(100, 5100))).toBe(true)
    expect((await seed.read(last, 100, pieceSize(t.layout, last) - 100)).equals(pieceData(t, image, last).subarray(100))).toBe(true)
    await expect(seed.writePiece(0, pieceData(t, image, 0))).rejects.toThrow(/opened for reading/)
    await seed.close()
    await seed.close() // idempotent
  })

  it("'zero' torrent on a loop device: gaps zeroed up to the torrent's target size, the rest untouched", async () => {
    const dir = await tempDir('bsw-store-')
    const size = 32 * MiB
    const targetSize = 28 * MiB + 1000
    const { dev, stale } = await staleLoop(dir, size, 11)
    const image = pseudoRandom(size, 12)
    // extents in the first 2 MiB and one near 20 MiB: large gaps (blkdiscard) and small unaligned ones (written zeros)
    const extents = [...randomExtents(2, 2 * MiB, 40), { offset: 20 * MiB + 333, length: 70000 }]
    const t = torrentFor(image, extents, { gaps: 'zero', targetSize })
    await deploy(await openStore(t, dev, { mode: 'write' }), t, image)
    const got = await readFile(dev)
    expect(got.equals(expectedImage(stale, image, t, targetSize))).toBe(true)
    expect(got.subarray(targetSize).equals(stale.subarray(targetSize))).toBe(true)
  })

  it("'zero' and 'dont-care' torrents on image files: gaps zeroed (punched) up to the file's end, or left alone", async () => {
    const dir = await tempDir('bsw-store-')
    const size = 12 * MiB
    const image = pseudoRandom(size, 21)
    const extents = [...randomExtents(3, 3 * MiB, 30), { offset: 9 * MiB + 5, length: 40000 }]
    for (const gaps of ['zero', 'dont-care'] as const) {
      const file = join(dir, `${gaps}.img`)
      const stale = pseudoRandom(size, 22)
      await writeFile(file, stale)
      const t = torrentFor(image, extents, { gaps })
      await deploy(await openStore(t, file, { mode: 'write' }), t, image)
      expect((await readFile(file)).equals(expectedImage(stale, image, t, gaps === 'zero' ? size : 0))).toBe(true)
      expect((await stat(file)).size).toBe(size)
    }
  })

  it('zeroRanges hands large aligned ranges to blkdiscard -z / fallocate -p and writes the unaligned edges', async () => {
    const dir = await tempDir('bsw-store-')
    const size = 16 * MiB
    const ranges = [
      { offset: 100, length: 5000 }, // small: written
      { offset: MiB + 123, length: 2 * OFFLOAD_MIN }, // large, unaligned edges
    ]
    const { dev, stale } = await staleLoop(dir, size, 31)
    const file = join(dir, 'plain.img')
    await writeFile(file, stale)
    for (const [path, kind] of [
      [dev, 'block'],
      [file, 'file'],
    ] as const) {
      const fh = await open(path, 'r+')
      const report = await zeroRanges({ fh, path, kind }, ranges)
      await fh.datasync()
      await fh.close()
      expect(report.offloadFailure).toBeUndefined()
      expect(report.offloaded).toBeGreaterThanOrEqual(2 * OFFLOAD_MIN - 8192)
      expect(report.offloaded + report.written).toBe(5000 + 2 * OFFLOAD_MIN)
      const want = Buffer.from(stale)
      for (const r of ranges) want.fill(0, r.offset, r.offset + r.length)
      expect((await readFile(path)).equals(want)).toBe(true)
    }
  })

  it('a read that runs past the end of the target is an error, not zeros', async () => {
    const dir = await tempDir('bsw-store-')
    const file = join(dir, 'shrinks.img')
    const image = pseudoRandom(MiB, 41)
    await writeFile(file, image)
    const t = torrentFor(image, [{ offset: 512 * KiB, length: 512 * KiB }], { gaps: 'dont-care' })
    const store = await openStore(t, file, { mode: 'read' })
    await truncate(file, 600 * KiB)
    // piece 5 covers 592..608 KiB: 8 KiB are there, then the file ends at 600 KiB
    const err = await store.read(5, 0, PIECE).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageError)
    expect((err as Error).message).toMatch(new RegExp(`${file} ends at offset 0x96000, before the 8192 bytes asked for there`))
    await store.close()
  })
})

describe('refusals before anything is written', () => {
  it('a missing target', async () => {
    const dir = await tempDir('bsw-store-')
    const t = torrentFor(pseudoRandom(64 * KiB, 1), [{ offset: 0, length: 64 * KiB }], { gaps: 'dont-care' })
    const err = await refusal(openStore(t, join(dir, 'nope.img'), { mode: 'write' }))
    expect(err.problem).toBe('missing')
    expect(err.message).toBe(`${join(dir, 'nope.img')} does not exist`)
  })

  it('a too-small loop device and image file: the message names the first extent that does not fit; the file is not grown', async () => {
    const dir = await tempDir('bsw-store-')
    const { dev } = await staleLoop(dir, 2 * MiB, 51)
    const image = pseudoRandom(4 * MiB, 52)
    const t = torrentFor(image, [{ offset: 0, length: 4096 }, { offset: 0x1f8000, length: 65536 }, { offset: 3 * MiB, length: 100 }], { gaps: 'dont-care' })
    const err = await refusal(openStore(t, dev, { mode: 'write' }))
    expect(err.problem).toBe('too-small')
    expect(err.message).toBe(`extent 0x1f8000+65536 ends past ${dev} (size 2097152)`)

    const file = join(dir, 'small.img')
    await writeFile(file, pseudoRandom(2 * MiB, 53))
    const ferr = await refusal(openStore(t, file, { mode: 'write' }))
    expect(ferr.message).toMatch(new RegExp(`^extent 0x1f8000\\+65536 ends past ${file} \\(size 2097152\\); an image file is never grown`))
    expect((await stat(file)).size).toBe(2 * MiB)
  })

  it('a read-only loop device (losetup -r) is refused for writing and can be seeded from', async () => {
    const dir = await tempDir('bsw-store-')
    const { dev, stale } = await staleLoop(dir, MiB, 61, { readOnly: true })
    const t = torrentFor(stale, [{ offset: 4096, length: 100000 }], { gaps: 'dont-care' })
    const err = await refusal(openStore(t, dev, { mode: 'write' }))
    expect(err.problem).toBe('read-only')
    expect(err.message).toMatch(new RegExp(`^${dev} is read-only`))
    const seed = await openStore(t, dev, { mode: 'read' })
    expect((await seed.read(0, 0, PIECE)).equals(stale.subarray(4096, 4096 + PIECE))).toBe(true)
    await seed.close()
  })

  it('a mounted device is refused naming the mount point; force overrides; seeding needs a read-only mount', async () => {
    const dir = await tempDir('bsw-store-')
    const file = join(dir, 'ext4.img')
    await sh('truncate', ['-s', '32M', file])
    await sh('mkfs.ext4', ['-q', '-F', file])
    const dev = await loopAttach(file)
    const mnt = join(dir, 'mnt point')
    await mkdir(mnt)
    await mountOn(dev, mnt)
    const t = torrentFor(Buffer.alloc(MiB), [{ offset: 0, length: MiB }], { gaps: 'dont-care' })

    const err = await refusal(openStore(t, dev, { mode: 'write' }))
    expect(err.problem).toBe('in-use')
    expect(err.message).toContain(`${dev} is mounted read-write on ${mnt}`)
    expect(await refusal(openStore(t, dev, { mode: 'read' })).then((e) => e.message)).toContain(`mounted read-write on ${mnt}`)

    const forced = await openStore(t, dev, { mode: 'write', force: true })
    await forced.close() // nothing written to the mounted filesystem

    await sh('mount', ['-o', 'remount,ro', mnt])
    const seed = await openStore(t, dev, { mode: 'read' })
    expect((await seed.read(0, 0, PIECE)).equals((await readFile(file)).subarray(0, PIECE))).toBe(true)
    await seed.close()
    expect(await refusal(openStore(t, dev, { mode: 'write' })).then((e) => e.message)).toContain(`mounted read-only on ${mnt}`)
  })

  it('a disk whose partition is mounted is refused naming the partition and the mount point', async () => {
    const dir = await tempDir('bsw-store-')
    const file = join(dir, 'disk.img')
    await sh('truncate', ['-s', '40M', file])
    await sh('sfdisk', ['-q', file], { input: 'label: gpt\nstart=2048, size=32768\n' })
    const dev = await loopAttach(file, { partscan: true })
    const part = `${dev}p1`
    // here the kernel does not always scan at attach time: ask for the partitions explicitly
    if (!(await stat(part).catch(() => undefined))) await sh('partx', ['-a', dev])
    await sh('mkfs.ext4', ['-q', '-F', part])
    const mnt = join(dir, 'p1')
    await mkdir(mnt)
    await mountOn(part, mnt)
    expect((await deviceUsers((await sh('cat', [`/sys/class/block/${dev.slice(5)}/dev`])).trim())).map((u) => [u.device, u.relation])).toEqual([[part, 'partition']])
    const t = torrentFor(Buffer.alloc(MiB), [{ offset: 0, length: MiB }], { gaps: 'dont-care' })
    const err = await refusal(openStore(t, dev, { mode: 'write' }))
    expect(err.message).toContain(`${part} (a partition) is mounted read-write on ${mnt}`)
  })

  it('the device holding the running root filesystem is refused even for seeding', async () => {
    const root = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8')).find((m) => m.mountPoint === '/')
    const rootDev = root && (await readFile(`/sys/dev/block/${root.devno}/uevent`, 'utf8').catch(() => ''))
    const name = rootDev ? /DEVNAME=(\S+)/.exec(rootDev)?.[1] : undefined
    if (!name || !(await stat(`/dev/${name}`).catch(() => undefined))) {
      console.warn('"/" is not on a block device here: nothing to check')
      return
    }
    const t = torrentFor(Buffer.alloc(PIECE), [{ offset: 0, length: PIECE }], { gaps: 'dont-care' })
    const err = await refusal(openStore(t, `/dev/${name}`, { mode: 'read' }))
    expect(err.message).toContain('(the running root filesystem)')
  })

  it('mountinfo parsing: escapes, optional fields, read-only options', () => {
    const text = [
      '36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
      '37 35 0:40 / /srv ro,relatime shared:2 - btrfs /dev/sdc2 rw',
      '38 35 8:17 / /data rw - xfs /dev/sdb1 ro',
    ].join('\n')
    expect(parseMountInfo(text)).toEqual([
      { devno: '98:0', mountPoint: '/mnt/with space', fstype: 'ext3', source: '/dev/root', readOnly: false },
      { devno: '0:40', mountPoint: '/srv', fstype: 'btrfs', source: '/dev/sdc2', readOnly: true },
      { devno: '8:17', mountPoint: '/data', fstype: 'xfs', source: '/dev/sdb1', readOnly: true },
    ])
  })
})

describe('write errors', () => {
  async function tinyTmpfs(): Promise<string> {
    const dir = await tempDir('bsw-store-')
    const mnt = join(dir, 'tmpfs')
    await mkdir(mnt)
    await sh('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt])
    onCleanup(async () => {
      await run('umount', [mnt])
    })
    return mnt
  }

  it('ENOSPC on an image file is reported with the target, the offset and the errno', async () => {
    const mnt = await tinyTmpfs()
    const file = join(mnt, 'sparse.img')
    await createImageFile(file, 4 * MiB)
    const image = pseudoRandom(4 * MiB, 71)
    const t = torrentFor(image, randomExtents(4, 4 * MiB, 200), { gaps: 'dont-care' })
    expect(t.totalLength).toBeGreaterThan(2 * MiB)
    const store = await openStore(t, file, { mode: 'write' })
    let failed: { index: number; err: unknown } | undefined
    for (let i = 0; i < t.pieceCount && !failed; i++) await store.writePiece(i, pieceData(t, image, i)).catch((err: unknown) => (failed = { index: i, err }))
    await store.close()
    expect(failed).toBeDefined()
    const err = failed!.err as StorageError
    expect(err).toBeInstanceOf(StorageError)
    expect(err.errno).toBe('ENOSPC')
    expect(err.target).toBe(file)
    expect(err.message).toContain(`at offset 0x${err.offset!.toString(16)} on ${file} failed: ENOSPC (no space left on device)`)
    // the offset is inside the piece that failed
    const slices = mapPieceRange(t.layout, failed!.index, 0, pieceSize(t.layout, failed!.index))
    expect(slices.some((s) => err.offset! >= s.diskOffset && err.offset! < s.diskOffset + s.length)).toBe(true)
  })

  it('writeback failure on a loop device (over a full tmpfs) surfaces at flush, naming the pieces and offsets; finish keeps failing', async () => {
    const mnt = await tinyTmpfs()
    const file = join(mnt, 'backing.img')
    await createImageFile(file, 4 * MiB)
    const dev = await loopAttach(file)
    const image = pseudoRandom(4 * MiB, 81)
    const t = torrentFor(image, [{ offset: 0, length: 3 * MiB }], { gaps: 'dont-care' })
    const store = await openStore(t, dev, { mode: 'write' })
    // buffered writes land in the page cache: the error comes from fdatasync
    for (let i = 0; i < t.pieceCount; i++) await store.writePiece(i, pieceData(t, image, i))
    const err = (await store.flush().catch((e: unknown) => e)) as StorageError
    expect(err).toBeInstanceOf(StorageError)
    expect(err.errno).toBe('EIO')
    expect(err.offset).toBe(0)
    expect(err.pieces).toHaveLength(t.pieceCount)
    expect(err.message).toMatch(new RegExp(`^writeback to ${dev} failed: EIO \\(i/o error\\); data written since the last flush may be lost: ${t.pieceCount} piece\\(s\\) \\(0, 1, 2, 3, 4 … ${t.pieceCount - 1}\\) between offsets 0x0 and 0x300000$`))
    await expect(store.finish()).rejects.toBe(err)
    await store.close()
  })
})

describe('directory targets', () => {
  it('seeds from real partclone -T output (flat layout, files named by offset)', async () => {
    const dir = await tempDir('bsw-store-')
    const data = join(dir, 'data')
    await mkdir(data)
    await writeFile(join(data, 'a.bin'), pseudoRandom(3 * MiB, 91))
    const img = join(dir, 'ext4.img')
    await sh('truncate', ['-s', '16M', img])
    await sh('mkfs.ext4', ['-q', '-F', '-b', '1024', '-d', data, img])
    const out = join(dir, 'out')
    await sh('partclone.extfs', ['-c', '-T', '-q', '-s', img, '-o', out, '-L', join(dir, 'pc.log')])
    const names = (await readdir(out)).filter((f) => f !== 'torrent.info').sort()
    const extents = await Promise.all(names.map(async (n) => ({ offset: parseInt(n, 16), length: (await stat(join(out, n))).size, name: n })))
    const image = await readFile(img)
    const t = torrentFor(image, extents, { gaps: 'dont-care' }, 'sda1')
    expect(t.extents.map((e) => e.name)).toEqual(names)

    const store = await openStore(t, out, { mode: 'read' })
    for (let i = 0; i < t.pieceCount; i++) expect((await store.read(i, 0, pieceSize(t.layout, i))).equals(pieceData(t, image, i))).toBe(true)
    await store.close()
  })

  it('seeds from DIR/<name>/ (standard-client layout); a missing or short file is named', async () => {
    const dir = await tempDir('bsw-store-')
    const image = pseudoRandom(2 * MiB, 101)
    const t = torrentFor(image, randomExtents(5, 2 * MiB, 30), { gaps: 'zero' }, 'nvme0n1p2')
    await mkdir(join(dir, 'nvme0n1p2'))
    for (const e of t.extents) await writeFile(join(dir, 'nvme0n1p2', e.name), image.subarray(e.offset, e.offset + e.length))
    const store = await openStore(t, dir, { mode: 'read' })
    for (let i = 0; i < t.pieceCount; i++) expect((await store.read(i, 0, pieceSize(t.layout, i))).equals(pieceData(t, image, i))).toBe(true)
    await store.close()

    const [e3, e5] = [t.extents[3], t.extents[5]]
    await truncate(join(dir, 'nvme0n1p2', e3.name), e3.length - 1)
    await unlink(join(dir, 'nvme0n1p2', e5.name))
    const err = await refusal(openStore(t, dir, { mode: 'read' }))
    expect(err.message).toBe(`extent file ${join(dir, 'nvme0n1p2', e3.name)} is ${e3.length - 1} bytes, the torrent says ${e3.length} (and 1 more file(s) missing or of the wrong size)`)

    const empty = await tempDir('bsw-store-')
    expect((await refusal(openStore(t, empty, { mode: 'read' }))).message).toContain(`${empty} holds neither ${join(empty, 'nvme0n1p2')}/`)
  })

  it('writes into a directory: creates DIR/<name>/<offset> files of the extent lengths, readable by a later seed', async () => {
    const dir = await tempDir('bsw-store-')
    const image = pseudoRandom(12 * MiB, 111)
    const t = torrentFor(image, randomExtents(6, 12 * MiB, 400), { gaps: 'zero' }, 'sdb')
    expect(t.extents.length).toBeGreaterThan(300) // more files than the store keeps open at once
    await deploy(await openStore(t, dir, { mode: 'write' }), t, image)
    expect((await readdir(join(dir, 'sdb'))).sort()).toEqual(t.extents.map((e) => e.name))
    for (const e of t.extents) expect((await readFile(join(dir, 'sdb', e.name))).equals(image.subarray(e.offset, e.offset + e.length))).toBe(true)
    const seed = await openStore(t, dir, { mode: 'read' })
    expect((await seed.read(2, 10, 3000)).equals(pieceData(t, image, 2).subarray(10, 3010))).toBe(true)
    await seed.close()
  })

  it('an extent file path can never leave the directory', () => {
    expect(extentFilePath('/srv/x', '000000000000000000000000000a0000')).toBe('/srv/x/000000000000000000000000000a0000')
    for (const bad of ['..', '../etc', '/etc/passwd', 'a/b', '.', '']) expect(() => extentFilePath('/srv/x', bad)).toThrow(/would leave/)
  })
})

describe('createImageFile', () => {
  it('makes a sparse file of the given size and never touches an existing path', async () => {
    const dir = await tempDir('bsw-store-')
    const file = join(dir, 'new.img')
    await createImageFile(file, 64 * MiB)
    const st = await stat(file)
    expect(st.size).toBe(64 * MiB)
    expect(st.blocks * 512).toBeLessThan(MiB)
    await writeFile(file, 'keep')
    await expect(createImageFile(file, MiB)).rejects.toThrow(`${file} already exists`)
    expect(await readFile(file, 'utf8')).toBe('keep')
  })

  it('an image file made for the torrent takes a deploy', async () => {
    const dir = await tempDir('bsw-store-')
    const image = pseudoRandom(2 * MiB, 121)
    const t = torrentFor(image, randomExtents(7, 2 * MiB, 20), { gaps: 'zero', targetSize: 2 * MiB })
    const file = join(dir, 'target.img')
    await createImageFile(file, t.meta.targetSize ?? extentsEnd(t.extents))
    await deploy(await openStore(t, file, { mode: 'write' }), t, image)
    expect((await readFile(file)).equals(expectedImage(Buffer.alloc(2 * MiB), image, t, 2 * MiB))).toBe(true)
  })
})
