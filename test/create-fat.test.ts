/**
 * The FAT reader against real images (mkfs.vfat + mtools, never mounted): its
 * used-byte set is compared with partclone's, writing only those bytes over
 * stale data gives a volume fsck.vfat accepts with every file byte-identical,
 * and a damaged boot sector gives an error that names the field.
 *
 * The layout the tests check against comes from `fsck.vfat -v`, not from the
 * reader under test.
 */
import { open, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import type { ByteRange } from '../src/torrent/extents.js'
import { fatReader } from '../src/create/fs/fat.js'
import { RangeBuilder, mergeRanges } from '../src/create/ranges.js'
import { Source } from '../src/create/source.js'
import { MTOOLS_ENV, makeEmptyFatImage, makeFatImage, type FatImage } from './helpers/images-fat.js'
import { cleanupAll, run, sh, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)
afterAll(cleanupAll)

const MiB = 1024 * 1024
const KiB = 1024

async function scanImage(path: string, length?: number) {
  const source = await Source.open(path)
  try {
    return await fatReader.scan({ source, base: 0, length: length ?? source.size })
  } finally {
    await source.close()
  }
}

/** The layout as fsck.vfat -v prints it: an oracle independent of the reader under test. */
interface FsckLayout {
  readonly bits: number
  readonly fatStart: number
  readonly dataStart: number
  readonly clusterBytes: number
  readonly clusters: number
  readonly totalBytes: number
}

async function fsckLayout(path: string): Promise<FsckLayout> {
  const r = await run('fsck.vfat', ['-n', '-v', path])
  const text = r.stdout + r.stderr
  const num = (re: RegExp): number => {
    const m = re.exec(text)
    if (!m) throw new Error(`fsck.vfat -v output has no ${re}: ${text}`)
    return Number(m[1])
  }
  const sector = num(/(\d+) bytes per logical sector/)
  return {
    bits: num(/\d+ FATs, (\d+) bit entries/),
    fatStart: num(/First FAT starts at byte (\d+)/),
    dataStart: num(/Data area starts at byte (\d+)/),
    clusterBytes: num(/(\d+) bytes per cluster/),
    clusters: num(/(\d+) data clusters/),
    totalBytes: num(/(\d+) sectors total/) * sector,
  }
}

/** Sectors after the last whole cluster: inside the filesystem, in no cluster. */
function tailOf(l: FsckLayout): ByteRange[] {
  const end = l.dataStart + l.clusters * l.clusterBytes
  return end < l.totalBytes ? [{ offset: end, length: l.totalBytes - end }] : []
}

/** partclone's used set: `-c -t` writes only torrent.info, whose offset:/length: pairs are 32-hex-digit byte values. */
async function partcloneRanges(binary: string, image: string): Promise<ByteRange[]> {
  const dir = await tempDir('bsw-pc-')
  const out = join(dir, 'out') // partclone 0.3.23 fails when the output directory already exists
  await sh(binary, ['-c', '-t', '-q', '-s', image, '-o', out, '-L', join(dir, 'partclone.log')])
  const info = await readFile(join(out, 'torrent.info'), 'utf8')
  const offsets = [...info.matchAll(/^offset: ([0-9a-f]{32})$/gm)].map((m) => Number(BigInt('0x' + m[1])))
  const lengths = [...info.matchAll(/^length: ([0-9a-f]{32})$/gm)].map((m) => Number(BigInt('0x' + m[1])))
  expect(offsets.length).toBe(lengths.length)
  expect(offsets.length).toBeGreaterThan(0)
  const b = new RangeBuilder()
  offsets.forEach((o, i) => b.add(o, lengths[i]))
  return b.ranges()
}

/**
 * What partclone 0.3.23 computes for FAT12: it reads the 12-bit FAT as if it
 * held 16-bit entries (cluster c at byte 2c instead of 1.5c, shifted right by
 * 4), and marks the sectors past the last cluster used.
 */
async function partcloneFat12Model(path: string, l: FsckLayout): Promise<ByteRange[]> {
  const img = await readFile(path)
  const b = new RangeBuilder().add(0, l.dataStart)
  for (let c = 2; c < l.clusters + 2; c++) {
    if (img.readUInt16LE(l.fatStart + 2 * c) >> 4 !== 0) b.add(l.dataStart + (c - 2) * l.clusterBytes, l.clusterBytes)
  }
  for (const t of tailOf(l)) b.add(t.offset, t.length)
  return b.ranges()
}

/** A target file of the image's size full of stale 0xA5 bytes, with only `ranges` copied from the image. */
async function copyRangesOverStale(image: { path: string; size: number }, ranges: readonly ByteRange[]): Promise<string> {
  const target = join(await tempDir('bsw-target-'), 'target.img')
  await writeFile(target, Buffer.alloc(image.size, 0xa5))
  const src = await open(image.path, 'r')
  const dst = await open(target, 'r+')
  try {
    for (const r of ranges) {
      const buf = Buffer.alloc(r.length)
      const { bytesRead } = await src.read(buf, 0, r.length, r.offset)
      expect(bytesRead).toBe(r.length)
      await dst.write(buf, 0, r.length, r.offset)
    }
  } finally {
    await src.close()
    await dst.close()
  }
  return target
}

/** Every regular file under `dir`, as '/a/b' paths. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length))
    .sort()
}

/**
 * Copy only `ranges` of the image over stale data, then list what is wrong:
 * fsck.vfat -n complaints, files mtools cannot read back or reads back different.
 */
async function roundTripProblems(image: FatImage, ranges: readonly ByteRange[]): Promise<string[]> {
  const target = await copyRangesOverStale(image, ranges)
  const problems: string[] = []
  const fsck = await run('fsck.vfat', ['-n', target])
  if (fsck.code !== 0) problems.push(`fsck.vfat -n exited ${fsck.code}: ${(fsck.stdout + fsck.stderr).slice(0, 2000)}`)
  const out = await tempDir('bsw-fat-out-')
  const copy = await run('mcopy', ['-s', '-n', '-i', target, '::/*', out], { env: MTOOLS_ENV, timeoutMs: 60_000 })
  if (copy.code !== 0) problems.push(`mcopy exited ${copy.code}: ${copy.stderr.slice(0, 2000)}`)
  const got = await listFiles(out)
  const want = [...image.files.keys()].sort()
  for (const name of want.filter((f) => !got.includes(f))) problems.push(`${name} is missing`)
  for (const name of got.filter((f) => !image.files.has(f))) problems.push(`${name} appeared`)
  for (const name of want.filter((f) => got.includes(f))) {
    if (!(await readFile(join(out, name))).equals(image.files.get(name)!)) problems.push(`${name} differs`)
  }
  return problems
}

const PARTCLONE = { 12: '/usr/sbin/partclone.fat12', 16: '/usr/sbin/partclone.fat16', 32: '/usr/sbin/partclone.fat32' } as const

// `-g 1/1` keeps mkfs.fat from rounding the size to whole tracks, so that odd sizes leave
// sectors after the last whole cluster (a "tail") inside the filesystem.
const CASES = [
  { name: 'FAT12', size: 32 * MiB, mkfs: ['-F', '12'], fs: 'fat12', bits: 12 },
  { name: 'FAT16, 4 KiB clusters, 2-sector tail', size: 65541 * KiB, mkfs: ['-F', '16', '-s', '8', '-g', '1/1'], fs: 'fat16', bits: 16 },
  { name: 'FAT16, 4096-byte sectors', size: 64 * MiB, mkfs: ['-F', '16', '-S', '4096'], fs: 'fat16', bits: 16 },
  { name: 'FAT32, 512-byte clusters', size: 64 * MiB, mkfs: ['-F', '32'], fs: 'fat32', bits: 32 },
  { name: 'FAT32, 4 KiB clusters, 2-sector tail', size: 276485 * KiB, mkfs: ['-F', '32', '-s', '8', '-g', '1/1'], fs: 'fat32', bits: 32 },
] as const

describe.each(CASES)('$name image', (c) => {
  it('is detected, scanned like partclone (differences explained), and round-trips over stale data', async () => {
    const image = await makeFatImage(c.size, c.mkfs)
    const layout = await fsckLayout(image.path)
    expect(layout.bits).toBe(c.bits)

    const head = (await readFile(image.path)).subarray(0, 64 * KiB)
    expect(fatReader.detect(head)).toBe(true)
    const scan = await scanImage(image.path)
    expect(scan.fs).toBe(c.fs)
    expect(scan.blockSize).toBe(layout.clusterBytes)
    expect(scan.ranges[0]).toMatchObject({ offset: 0 })
    expect(scan.ranges[0].length).toBeGreaterThanOrEqual(layout.dataStart)

    const partclone = await partcloneRanges(PARTCLONE[c.bits], image.path)
    if (c.bits === 12) {
      // partclone misreads 12-bit FATs; its set is exactly what that misreading gives,
      // and it loses file data: the round trip with it fails where ours passes (below).
      expect(partclone).toEqual(await partcloneFat12Model(image.path, layout))
      expect(partclone).not.toEqual(scan.ranges)
      expect(await roundTripProblems(image, partclone)).not.toEqual([])
    } else {
      // partclone also marks the sectors after the last whole cluster; they belong to no
      // cluster, so blockswarm leaves them out (the round trip below leaves them stale).
      expect(partclone).toEqual(mergeRanges([scan.ranges, tailOf(layout)]))
    }
    if (c.name.includes('tail')) expect(tailOf(layout)).not.toEqual([])

    expect(await roundTripProblems(image, scan.ranges)).toEqual([])
  })
})

describe('FAT32 with fewer than 65525 clusters (mkfs.fat -F 32 -s 8 on 64 MiB)', () => {
  it('is read as FAT32, the way Linux and fsck.fat read it, and round-trips', async () => {
    const path = await makeEmptyFatImage(64 * MiB, ['-F', '32', '-s', '8'])
    const layout = await fsckLayout(path)
    expect(layout.bits).toBe(32)
    expect(layout.clusters).toBeLessThan(65525)

    const scan = await scanImage(path)
    expect(scan.fs).toBe('fat32')
    expect(scan.ranges).toEqual(await partcloneRanges(PARTCLONE[32], path))
    // The root directory cluster (2) is the only allocated one.
    expect(scan.ranges).toEqual([{ offset: 0, length: layout.dataStart + layout.clusterBytes }])
    const target = await copyRangesOverStale({ path, size: 64 * MiB }, scan.ranges)
    const fsck = await run('fsck.vfat', ['-n', target])
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)
  })
})

/** Read-modify-write of `length` bytes at `offset` of a file. */
async function patch(path: string, offset: number, length: number, edit: (b: Buffer) => void): Promise<void> {
  const fh = await open(path, 'r+')
  try {
    const b = Buffer.alloc(length)
    await fh.read(b, 0, length, offset)
    edit(b)
    await fh.write(b, 0, length, offset)
  } finally {
    await fh.close()
  }
}

describe('FAT entries the reader must interpret', () => {
  it('leaves out clusters marked bad, as partclone does, and the round trip still passes', async () => {
    const image = await makeFatImage(65541 * KiB, ['-F', '16', '-s', '8', '-g', '1/1'])
    const l = await fsckLayout(image.path)
    const before = await scanImage(image.path)
    // Mark the first free cluster that follows a used one (freed by the deletions) bad in both FATs.
    const fat = (await readFile(image.path)).subarray(l.fatStart, l.fatStart + 2 * (l.clusters + 2))
    let bad = 0
    for (let c = 3; c < l.clusters + 2 && !bad; c++) if (fat.readUInt16LE(2 * c) === 0 && fat.readUInt16LE(2 * c - 2) !== 0) bad = c
    expect(bad).toBeGreaterThan(2)
    const fatBytes = (l.dataStart - l.fatStart - 512 * 32) / 2 // two FATs, then a 512-entry root directory
    for (const copy of [0, 1]) await patch(image.path, l.fatStart + copy * fatBytes + 2 * bad, 2, (b) => b.writeUInt16LE(0xfff7))
    const fsck = await run('fsck.vfat', ['-n', image.path])
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)

    const after = await scanImage(image.path)
    expect(after.ranges).toEqual(before.ranges)
    const badOffset = l.dataStart + (bad - 2) * l.clusterBytes
    expect(after.ranges.some((r) => r.offset <= badOffset && badOffset < r.offset + r.length)).toBe(false)
    expect(await partcloneRanges(PARTCLONE[16], image.path)).toEqual(mergeRanges([after.ranges, tailOf(l)]))
    expect(await roundTripProblems(image, after.ranges)).toEqual([])
  })

  it('reads the active FAT when FAT32 mirroring is off, and rejects an active FAT that does not exist', async () => {
    const image = await makeFatImage(64 * MiB, ['-F', '32'])
    const l = await fsckLayout(image.path)
    const before = await scanImage(image.path)
    const fatBytes = (l.dataStart - l.fatStart) / 2
    // ExtFlags 0x81: mirroring off, FAT 1 active. Then empty FAT 0 (all but its two reserved entries).
    await patch(image.path, 40, 2, (b) => b.writeUInt16LE(0x0081))
    await patch(image.path, l.fatStart + 8, fatBytes - 8, (b) => b.fill(0))
    expect((await scanImage(image.path)).ranges).toEqual(before.ranges)

    await patch(image.path, 40, 2, (b) => b.writeUInt16LE(0x0082))
    await expect(scanImage(image.path)).rejects.toThrow(/active FAT is 2 but there are only 2 FATs/)
  })
})

describe('damaged boot sectors', () => {
  const DAMAGE: readonly { what: string; at: number; value: (b: Buffer) => void; error: RegExp }[] = [
    { what: 'zero sectors per cluster', at: 13, value: (b) => (b[0] = 0), error: /sectors per cluster is 0 \(must be a power of two/ },
    { what: '3 sectors per cluster', at: 13, value: (b) => (b[0] = 3), error: /sectors per cluster is 3/ },
    { what: '1000 bytes per sector', at: 11, value: (b) => b.writeUInt16LE(1000), error: /bytes per sector is 1000/ },
    { what: 'no reserved sectors', at: 14, value: (b) => b.writeUInt16LE(0), error: /reserved sector count is 0/ },
    { what: 'no FATs', at: 16, value: (b) => (b[0] = 0), error: /number of FATs is 0/ },
    { what: 'no signature', at: 510, value: (b) => b.writeUInt16BE(0), error: /signature at byte 510 is 0x0000, expected 0x55aa/ },
    { what: 'FATs past the filesystem', at: 22, value: (b) => b.writeUInt16LE(40000), error: /end at sector \d+, past the 16384 sectors of the filesystem/ },
    { what: 'a FAT too small for its clusters', at: 22, value: (b) => b.writeUInt16LE(1), error: /a FAT of 1 sectors \(512 bytes\) is too small for \d+ clusters/ },
  ]

  it.each(DAMAGE)('$what: scan names the problem and detect says no', async (d) => {
    const path = await makeEmptyFatImage(8 * MiB, ['-F', '16', '-s', '2'])
    expect((await fsckLayout(path)).totalBytes).toBe(8 * MiB)
    await patch(path, d.at, 2, d.value)
    await expect(scanImage(path)).rejects.toThrow(d.error)
    await expect(scanImage(path)).rejects.toThrow(/FAT volume at byte 0 of .*fat\.img/)
    expect(fatReader.detect((await readFile(path)).subarray(0, 64 * KiB))).toBe(false)
  })

  it('a volume shorter than the filesystem is refused', async () => {
    const path = await makeEmptyFatImage(8 * MiB, ['-F', '16', '-s', '2'])
    await expect(scanImage(path, 4 * MiB)).rejects.toThrow(/says the filesystem is 8388608 bytes, past the end of the volume \(4194304 bytes\)/)
  })
})

describe('detect()', () => {
  it('says no to a zeroed buffer, a short buffer, ext4, NTFS and exFAT, yes to each FAT type', async () => {
    expect(fatReader.detect(Buffer.alloc(64 * KiB))).toBe(false)
    const dir = await tempDir('bsw-detect-')

    const fat12 = await makeEmptyFatImage(8 * MiB, ['-F', '12'])
    const fat12Head = (await readFile(fat12)).subarray(0, 64 * KiB)
    expect(fatReader.detect(fat12Head)).toBe(true)
    expect(fatReader.detect(fat12Head.subarray(0, 511))).toBe(false)
    for (const bits of ['16', '32']) {
      const img = await makeEmptyFatImage(bits === '32' ? 40 * MiB : 16 * MiB, ['-F', bits])
      expect(fatReader.detect((await readFile(img)).subarray(0, 64 * KiB))).toBe(true)
    }

    const ext4 = join(dir, 'ext4.img')
    await sh('truncate', ['-s', String(16 * MiB), ext4])
    await sh('mkfs.ext4', ['-q', '-F', ext4])
    expect(fatReader.detect((await readFile(ext4)).subarray(0, 64 * KiB))).toBe(false)

    const ntfs = join(dir, 'ntfs.img')
    await sh('truncate', ['-s', String(16 * MiB), ntfs])
    await sh('mkntfs', ['-q', '-F', '-f', ntfs])
    const ntfsHead = (await readFile(ntfs)).subarray(0, 64 * KiB)
    expect(ntfsHead.toString('latin1', 3, 11)).toBe('NTFS    ')
    expect(fatReader.detect(ntfsHead)).toBe(false)
    await expect(scanImage(ntfs)).rejects.toThrow(/this is an NTFS volume/)

    // exFAT boot sector: jump, "EXFAT   ", bytes 11..63 zero (the BPB area must be zero), signature.
    // Also a FAT boot sector relabelled "EXFAT   ": the OEM name alone is enough to say no.
    const exfat = Buffer.alloc(4096)
    exfat.set([0xeb, 0x76, 0x90], 0)
    exfat.write('EXFAT   ', 3, 'latin1')
    exfat.writeUInt16BE(0x55aa, 510)
    expect(fatReader.detect(exfat)).toBe(false)
    const relabelled = Buffer.from(fat12Head)
    relabelled.write('EXFAT   ', 3, 'latin1')
    expect(fatReader.detect(relabelled)).toBe(false)
  })
})
