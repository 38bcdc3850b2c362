/**
 * The ext2/3/4 reader on real images made by mkfs.ext2/3/4 -d (and one the
 * kernel wrote to): its used-byte set equals partclone.extfs's, and writing
 * only those bytes over stale data gives a filesystem that e2fsck accepts and
 * whose every file debugfs reads back byte for byte. Damaged superblocks and
 * descriptors are refused with an error naming the problem.
 *
 * partclone.extfs (libext2fs underneath) and this reader agree block for block
 * on every image here, BLOCK_UNINIT groups included; the one image partclone
 * cannot read (bigalloc) is checked by the round trip alone.
 */
import { copyFile, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ByteRange } from '../src/torrent/extents.js'
import { extReader } from '../src/create/fs/ext.js'
import type { FsScan } from '../src/create/fs/types.js'
import { rangesBytes } from '../src/create/ranges.js'
import { Source } from '../src/create/source.js'
import { copyRanges, extTestTree, makeExtImage, makeStaleTarget, partcloneExtRanges, treeDifferences, writeTree, type Tree } from './helpers/images-ext.js'
import { cleanupAll, loopAttach, onCleanup, pseudoRandom, run, sh, tempDir } from './helpers/sys.js'

const MiB = 1024 * 1024

async function scanImage(path: string, base = 0, length?: number): Promise<FsScan> {
  const source = await Source.open(path)
  try {
    return await extReader.scan({ source, base, length: length ?? source.size - base })
  } finally {
    await source.close()
  }
}

/** Number of groups dumpe2fs lists as BLOCK_UNINIT. */
async function blockUninitGroups(image: string): Promise<number> {
  const out = await sh('dumpe2fs', [image])
  return (out.match(/^Group \d+: .*BLOCK_UNINIT/gm) ?? []).length
}

/**
 * Write only `ranges` of `image` over a same-sized file of stale data, then
 * check the copy with e2fsck -fn and compare every file with `tree`.
 */
async function expectRoundTrip(image: string, size: number, ranges: readonly ByteRange[], tree: Tree, work: string): Promise<void> {
  await mkdir(work, { recursive: true })
  const target = join(work, 'target.img')
  await makeStaleTarget(target, size)
  await copyRanges(image, target, ranges)
  const fsck = await run('e2fsck', ['-fn', target])
  expect(fsck.code, `e2fsck -fn on the copy:\n${fsck.stdout}${fsck.stderr}`).toBe(0)
  expect(await treeDifferences(target, join(work, 'dump'), tree)).toEqual([])
  await rm(target)
}

interface ImageCase {
  readonly name: string
  readonly mkfs: string
  readonly size: number
  readonly args: readonly string[]
  readonly fs: string
  readonly blockSize: number
  /** The geometry leaves groups BLOCK_UNINIT (checked with dumpe2fs, so the case tests what it claims). */
  readonly uninit: boolean
  /** partclone.extfs 0.3.23 reads this filesystem (it stops with "bitmap error at 0 group" on bigalloc). */
  readonly partclone: boolean
}

const CASES: readonly ImageCase[] = [
  { name: 'ext4, 4 KiB blocks, 8 MiB groups, flex_bg', mkfs: 'mkfs.ext4', size: 64 * MiB, args: ['-b', '4096', '-g', '2048'], fs: 'ext4', blockSize: 4096, uninit: true, partclone: true },
  { name: 'ext4, 1 KiB blocks (block 0 outside every group)', mkfs: 'mkfs.ext4', size: 64 * MiB, args: ['-b', '1024'], fs: 'ext4', blockSize: 1024, uninit: true, partclone: true },
  { name: 'ext4 without flex_bg (uninit groups hold their own bitmaps)', mkfs: 'mkfs.ext4', size: 64 * MiB, args: ['-b', '4096', '-g', '2048', '-O', '^flex_bg'], fs: 'ext4', blockSize: 4096, uninit: true, partclone: true },
  { name: 'ext4 without 64bit (32-byte descriptors)', mkfs: 'mkfs.ext4', size: 64 * MiB, args: ['-b', '4096', '-g', '2048', '-O', '^64bit'], fs: 'ext4', blockSize: 4096, uninit: true, partclone: true },
  { name: 'ext4 with uninit_bg instead of metadata_csum (crc16 descriptors)', mkfs: 'mkfs.ext4', size: 64 * MiB, args: ['-b', '1024', '-O', '^metadata_csum,uninit_bg,^flex_bg'], fs: 'ext4', blockSize: 1024, uninit: true, partclone: true },
  { name: 'ext4 with meta_bg (descriptors spread over 2 meta groups)', mkfs: 'mkfs.ext4', size: 64 * MiB, args: ['-b', '1024', '-g', '2048', '-O', 'meta_bg,^resize_inode'], fs: 'ext4', blockSize: 1024, uninit: true, partclone: true },
  { name: 'ext4 with sparse_super2', mkfs: 'mkfs.ext4', size: 64 * MiB, args: ['-b', '4096', '-g', '2048', '-O', 'sparse_super2,^flex_bg'], fs: 'ext4', blockSize: 4096, uninit: true, partclone: true },
  { name: 'ext4 with bigalloc (64 KiB clusters)', mkfs: 'mkfs.ext4', size: 256 * MiB, args: ['-b', '4096', '-O', 'bigalloc', '-C', '65536'], fs: 'ext4', blockSize: 65536, uninit: false, partclone: false },
  { name: 'ext3', mkfs: 'mkfs.ext3', size: 64 * MiB, args: [], fs: 'ext3', blockSize: 1024, uninit: false, partclone: true },
  { name: 'ext2', mkfs: 'mkfs.ext2', size: 64 * MiB, args: ['-b', '4096', '-g', '4096'], fs: 'ext2', blockSize: 4096, uninit: false, partclone: true },
  { name: 'ext4, 1 GiB sparse, default geometry (mostly BLOCK_UNINIT groups)', mkfs: 'mkfs.ext4', size: 1024 * MiB, args: [], fs: 'ext4', blockSize: 4096, uninit: true, partclone: true },
]

describe('ext reader on mkfs images', () => {
  let work: string
  let treeDir: string
  const tree = extTestTree()

  beforeAll(async () => {
    work = await tempDir('bsw-ext-')
    treeDir = join(work, 'tree')
    await writeTree(treeDir, tree)
  })
  afterAll(cleanupAll)

  for (const c of CASES) {
    it(`${c.name}: partclone's used set, and a copy of only those bytes is the same filesystem`, { timeout: 120_000 }, async () => {
      const caseDir = join(work, c.name.replace(/[^a-z0-9]+/gi, '-'))
      const image = caseDir + '.img'
      await makeExtImage(image, c.size, c.mkfs, c.args, treeDir)
      if (c.uninit) expect(await blockUninitGroups(image)).toBeGreaterThan(0)

      const head = Buffer.alloc(64 * 1024)
      const fh = await open(image, 'r')
      await fh.read(head, 0, head.length, 0)
      await fh.close()
      expect(extReader.detect(head)).toBe(true)

      const started = performance.now()
      const scan = await scanImage(image)
      const ms = performance.now() - started
      console.info(`${c.name}: ${scan.ranges.length} ranges, ${rangesBytes(scan.ranges)} of ${c.size} bytes used, scanned in ${ms.toFixed(1)} ms`)
      expect(scan.fs).toBe(c.fs)
      expect(scan.blockSize).toBe(c.blockSize)
      // The files alone are ~15.5 MiB: an empty or truncated set cannot pass.
      expect(rangesBytes(scan.ranges)).toBeGreaterThan(15 * MiB)

      if (c.partclone) {
        await mkdir(caseDir, { recursive: true })
        expect(scan.ranges).toEqual(await partcloneExtRanges(image, caseDir))
      }
      await expectRoundTrip(image, c.size, scan.ranges, tree, caseDir)
      await rm(image)
    })
  }

  it('an image written by the kernel (files added and deleted while mounted) matches partclone and copies back intact', { timeout: 120_000 }, async () => {
    const image = join(work, 'kernel.img')
    await makeExtImage(image, 64 * MiB, 'mkfs.ext4', ['-b', '4096', '-g', '2048'], treeDir)
    const expected = new Map(tree)
    const mnt = join(work, 'mnt')
    await mkdir(mnt)
    const dev = await loopAttach(image)
    await sh('mount', ['-t', 'ext4', dev, mnt])
    onCleanup(async () => {
      await run('umount', [mnt])
    })
    // Deleting frees blocks that still hold the old bytes; the later file lands in freed and in fresh groups.
    await rm(join(mnt, 'big/archive.bin'))
    expected.delete('big/archive.bin')
    await rm(join(mnt, 'small/d1'), { recursive: true })
    for (const path of [...expected.keys()]) if (path.startsWith('small/d1/')) expected.delete(path)
    const late = pseudoRandom(20 * MiB + 512, 99)
    await mkdir(join(mnt, 'late'))
    await copyFile(join(treeDir, 'big/video.bin'), join(mnt, 'late/video-copy.bin'))
    await writeFile(join(mnt, 'late/after-delete.bin'), late)
    expected.set('late/video-copy.bin', tree.get('big/video.bin')!)
    expected.set('late/after-delete.bin', late)
    await sh('umount', [mnt])

    const scan = await scanImage(image)
    expect(scan.ranges).toEqual(await partcloneExtRanges(image, work))
    await expectRoundTrip(image, 64 * MiB, scan.ranges, expected, join(work, 'kernel'))
  })
})

describe('ext reader on a volume inside a larger source', () => {
  afterAll(cleanupAll)

  it('reports absolute offsets (base added) and nothing outside the volume', async () => {
    const work = await tempDir('bsw-ext-base-')
    const treeDir = join(work, 'tree')
    await writeTree(treeDir, new Map([...extTestTree()].slice(0, 40)))
    const image = join(work, 'fs.img')
    await makeExtImage(image, 32 * MiB, 'mkfs.ext4', ['-b', '1024'], treeDir)
    const alone = await scanImage(image)

    // A "disk": 3 MiB of other data, the filesystem, then 1 MiB more.
    const disk = join(work, 'disk.img')
    const base = 3 * MiB
    const fh = await open(disk, 'w')
    await fh.write(pseudoRandom(base, 5), 0, base, 0)
    await fh.write(await readFile(image), 0, 32 * MiB, base)
    await fh.write(pseudoRandom(MiB, 6), 0, MiB, base + 32 * MiB)
    await fh.close()

    const inside = await scanImage(disk, base, 32 * MiB)
    expect(inside.ranges).toEqual(alone.ranges.map((r) => ({ offset: r.offset + base, length: r.length })))
    expect(inside.ranges[0].offset).toBe(base)
    const last = inside.ranges[inside.ranges.length - 1]
    expect(last.offset + last.length).toBeLessThanOrEqual(base + 32 * MiB)
  })
})

describe('ext reader: detect() and damaged filesystems', () => {
  let work: string
  let ext2: string
  let ext4: string

  beforeAll(async () => {
    work = await tempDir('bsw-ext-bad-')
    ext2 = join(work, 'ext2.img')
    ext4 = join(work, 'ext4.img')
    await makeExtImage(ext2, 16 * MiB, 'mkfs.ext2', ['-b', '1024'])
    await makeExtImage(ext4, 16 * MiB, 'mkfs.ext4', ['-b', '1024'])
  })
  afterAll(cleanupAll)

  /** A copy of `image` with `bytes` written at `offset`. */
  async function patched(image: string, name: string, offset: number, bytes: Buffer): Promise<string> {
    const copy = join(work, name)
    await copyFile(image, copy)
    const fh = await open(copy, 'r+')
    await fh.write(bytes, 0, bytes.length, offset)
    await fh.close()
    return copy
  }
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4)
    b.writeUInt32LE(v >>> 0)
    return b
  }
  const u16 = (v: number): Buffer => {
    const b = Buffer.alloc(2)
    b.writeUInt16LE(v)
    return b
  }
  // 1 KiB blocks: superblock at byte 1024, descriptor table at block 2.
  const SB = 1024
  const GDT = 2048

  it('detect() is true for ext images and false for FAT and zeros', async () => {
    const head = async (path: string): Promise<Buffer> => (await readFile(path)).subarray(0, 64 * 1024)
    expect(extReader.detect(await head(ext2))).toBe(true)
    expect(extReader.detect(await head(ext4))).toBe(true)
    const fat = join(work, 'fat.img')
    await sh('truncate', ['-s', String(16 * MiB), fat])
    await sh('mkfs.vfat', [fat])
    expect(extReader.detect(await head(fat))).toBe(false)
    expect(extReader.detect(Buffer.alloc(64 * 1024))).toBe(false)
    expect(extReader.detect(Buffer.alloc(100))).toBe(false)
  })

  it('refuses a block bitmap beyond the filesystem', async () => {
    const bad = await patched(ext2, 'bitmap-far.img', GDT + 32, u32(0x7fffffff))
    await expect(scanImage(bad)).rejects.toThrow(/group descriptor 1: block bitmap at block 2147483647 is outside the filesystem \(blocks 1\.\.16383\)/)
  })

  it('refuses a filesystem larger than its volume', async () => {
    await expect(scanImage(ext4, 0, 8 * MiB)).rejects.toThrow(/16384 blocks of 1024 bytes \(16777216 bytes\), past the end of the volume \(8388608 bytes\)/)
  })

  it('refuses a superblock whose metadata_csum checksum does not match', async () => {
    const bad = await patched(ext4, 'sb-csum.img', SB + 0x78, Buffer.from('renamed'))
    await expect(scanImage(bad)).rejects.toThrow(/damaged ext superblock: checksum 0x[0-9a-f]+ does not match/)
  })

  it('refuses a group descriptor whose checksum does not match', async () => {
    const desc1 = GDT + 64 // 64-byte descriptors (64bit)
    const flags = (await readFile(ext4)).readUInt16LE(desc1 + 0x12)
    const bad = await patched(ext4, 'gd-csum.img', desc1 + 0x12, u16(flags ^ 0x2))
    await expect(scanImage(bad)).rejects.toThrow(/damaged ext group descriptor 1: checksum 0x[0-9a-f]+ does not match/)
  })

  it('refuses a block bitmap whose checksum does not match', async () => {
    const img = await readFile(ext4)
    const bitmapBlock = img.readUInt32LE(GDT)
    const lastByte = bitmapBlock * 1024 + 1023
    const bad = await patched(ext4, 'bitmap-csum.img', lastByte, Buffer.from([img[lastByte] ^ 0x80]))
    await expect(scanImage(bad)).rejects.toThrow(new RegExp(`damaged ext block bitmap of group 0 \\(block ${bitmapBlock}\\)`))
  })

  it('refuses a filesystem that is not clean or has journal transactions to replay', async () => {
    const dirty = await patched(ext2, 'dirty.img', SB + 0x3a, u16(0))
    await expect(scanImage(dirty)).rejects.toThrow(/not marked clean .* run e2fsck -f/)
    const features = (await readFile(ext2)).readUInt32LE(SB + 0x60)
    const recover = await patched(ext2, 'recover.img', SB + 0x60, u32(features | 0x4))
    await expect(scanImage(recover)).rejects.toThrow(/journal holds transactions not yet written/)
    const unknown = await patched(ext2, 'unknown.img', SB + 0x60, u32(features | 0x80000000))
    await expect(scanImage(unknown)).rejects.toThrow(/unknown incompatible features 0x80000000/)
  })

  it('refuses a volume without an ext superblock', async () => {
    const zeros = join(work, 'zeros.img')
    await sh('truncate', ['-s', String(MiB), zeros])
    await expect(scanImage(zeros)).rejects.toThrow(/no ext superblock \(magic at byte 1080 is 0x0, expected 0xef53\)/)
  })
})
