/**
 * The zero-block scan on raw images: the ranges it finds plus zeroed gaps
 * rebuild the image byte for byte on a target full of stale data.
 */
import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { type ByteRange, gapsOf, rangesToExtents } from '../src/torrent/extents.js'
import { Source } from '../src/create/source.js'
import { usedBlocks } from '../src/create/used-blocks.js'
import { zeroScan } from '../src/create/zero-scan.js'
import { cleanupAll, loopAttach, onCleanup, pseudoRandom, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024
const BS = 4096

/** The expected answer, computed the slow, obvious way: every block of [base, base+length) with a non-zero byte. */
function nonZeroBlocks(img: Buffer, base: number, length: number, blockSize: number): ByteRange[] {
  const out: ByteRange[] = []
  for (let b = 0; b < length; b += blockSize) {
    const len = Math.min(blockSize, length - b)
    if (!img.subarray(base + b, base + b + len).some((x) => x !== 0)) continue
    const last = out[out.length - 1]
    if (last && last.offset + last.length === base + b) last.length += len
    else out.push({ offset: base + b, length: len })
  }
  return out
}

/**
 * A random image with zero holes: aligned, unaligned, one spanning the
 * scanner's 8 MiB read boundary with lone non-zero bytes inside, and a short
 * last block whose only non-zero byte is the image's last byte.
 */
function holeyImage(): Buffer {
  const size = 20 * MiB + 1234
  const img = pseudoRandom(size, 7)
  const zero = (offset: number, length: number) => img.fill(0, offset, offset + length)
  zero(3 * BS, 2 * BS)
  zero(40000, 30000)
  zero(1 * MiB + 5, 11 * MiB + 72)
  img[5 * MiB + 2049] = 0x01 // mid-block
  img[9 * MiB + BS - 1] = 0x80 // last byte of a block
  img[10 * MiB] = 0xff // first byte of a block
  img[8 * MiB - 1] = 0x02 // last byte before the read boundary
  zero(size - 3 * BS, 3 * BS)
  img[size - 1] = 0x10
  return img
}

async function sourceFile(img: Buffer): Promise<{ path: string; source: Source; dir: string }> {
  const dir = await tempDir()
  const path = join(dir, 'source.img')
  await writeFile(path, img)
  const source = await Source.open(path)
  onCleanup(() => source.close())
  return { path, source, dir }
}

/** Deploy like a "gaps must be zero" torrent would: copy the ranges, zero the rest, on a target of stale data. */
async function deploy(img: Buffer, ranges: ByteRange[], targetPath: string): Promise<Buffer> {
  await writeFile(targetPath, pseudoRandom(img.length, 99))
  const fh = await open(targetPath, 'r+')
  try {
    for (const r of ranges) await fh.write(img, r.offset, r.length, r.offset)
    for (const g of gapsOf(rangesToExtents(ranges), img.length)) await fh.write(Buffer.alloc(g.length), 0, g.length, g.offset)
  } finally {
    await fh.close()
  }
  return readFile(targetPath)
}

describe('zeroScan', () => {
  it('finds exactly the blocks with a non-zero byte, and ranges plus zeroed gaps rebuild the image', async () => {
    const img = holeyImage()
    const { source, dir } = await sourceFile(img)
    const ranges = await zeroScan({ source, base: 0, length: img.length })

    expect(ranges).toEqual(nonZeroBlocks(img, 0, img.length, BS))
    // The lone bytes inside the big hole are each caught in their own block.
    for (const at of [5 * MiB + 2049, 9 * MiB + BS - 1, 10 * MiB, 8 * MiB - 1, img.length - 1]) {
      expect(ranges.some((r) => r.offset <= at && at < r.offset + r.length), `byte ${at}`).toBe(true)
    }
    // No range holds an all-zero block.
    for (const r of ranges) {
      for (let b = r.offset; b < r.offset + r.length; b += BS) {
        expect(img.subarray(b, Math.min(b + BS, r.offset + r.length)).some((x) => x !== 0), `block at ${b}`).toBe(true)
      }
    }
    // The big hole is mostly left out: at most 4 blocks of it are used.
    const inHole = ranges.filter((r) => r.offset >= 1 * MiB + BS && r.offset < 12 * MiB)
    expect(inHole.reduce((n, r) => n + r.length, 0)).toBe(4 * BS)

    const target = await deploy(img, ranges, join(dir, 'target.img'))
    expect(target.equals(img)).toBe(true)
  })

  it('counts blocks from the volume start and reports absolute offsets', async () => {
    const img = holeyImage()
    const { source } = await sourceFile(img)
    const base = 3 * BS + 100
    const length = 9 * MiB + 333
    const ranges = await zeroScan({ source, base, length }, 1024)
    expect(ranges).toEqual(nonZeroBlocks(img, base, length, 1024))
    expect(ranges[0].offset).toBe(base + 7 * 1024) // seven whole 1 KiB blocks from `base` lie in the zeroed 3*BS..5*BS
  })

  it('reads a block device source the same as the file', async () => {
    const img = holeyImage().subarray(0, 12 * MiB)
    const { path, source } = await sourceFile(img)
    const dev = await Source.open(await loopAttach(path, { readOnly: true }))
    onCleanup(() => dev.close())
    expect(dev.kind).toBe('block')
    expect(await zeroScan({ source: dev, base: 0, length: dev.size })).toEqual(await zeroScan({ source, base: 0, length: source.size }))
  })

  it('finds nothing in an all-zero volume and everything in a volume without zero blocks', async () => {
    const { source: zeros } = await sourceFile(Buffer.alloc(9 * MiB))
    expect(await zeroScan({ source: zeros, base: 0, length: zeros.size })).toEqual([])
    const { source: random } = await sourceFile(pseudoRandom(9 * MiB + 1, 3))
    expect(await zeroScan({ source: random, base: 0, length: random.size })).toEqual([{ offset: 0, length: 9 * MiB + 1 }])
  })
})

describe('usedBlocks on a raw image', () => {
  it('auto falls back to the zero scan, with gaps that must be zero', async () => {
    const img = holeyImage()
    const { source } = await sourceFile(img)
    const used = await usedBlocks(source, 'auto')
    expect(used.fs).toBe('zero')
    expect(used.gaps).toBe('zero')
    expect(used.targetSize).toBe(img.length)
    expect(used.ranges).toEqual(nonZeroBlocks(img, 0, img.length, BS))
    expect(used.notes.join('\n')).toMatch(/zero-scanned/)
    expect(await usedBlocks(source, 'zero')).toMatchObject({ fs: 'zero', gaps: 'zero', ranges: used.ranges })
  })

  it('all is the whole source as one range', async () => {
    const { source } = await sourceFile(holeyImage())
    expect(await usedBlocks(source, 'all')).toMatchObject({ fs: 'all', gaps: 'dont-care', ranges: [{ offset: 0, length: source.size }] })
  })

  it('a filesystem mode on a raw image says the filesystem is not there', async () => {
    const { source, path } = await sourceFile(holeyImage())
    for (const mode of ['ext', 'fat', 'ntfs'] as const) {
      await expect(usedBlocks(source, mode)).rejects.toThrow(`--mode ${mode}: ${path} holds no ${mode} filesystem at offset 0`)
    }
  })
})
