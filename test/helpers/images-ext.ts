/**
 * Real ext2/3/4 images for tests: a deterministic directory tree (a few
 * files of several MiB, many small ones, nested directories) put into an
 * image by `mkfs.ext* -d`, partclone.extfs as the reference used-block set,
 * and the round trip: copy only the used bytes over stale data and read the
 * files back with debugfs.
 */
import { open, mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import type { ByteRange } from '../../src/torrent/extents.js'
import { pseudoRandom, run, sh } from './sys.js'

/** pseudoRandom() writes out of bounds for lengths below 4: take a prefix of a longer run. */
function content(length: number, seed: number): Buffer {
  return pseudoRandom(Math.max(length, 4), seed).subarray(0, length)
}

/** Relative path → content of the test tree. */
export type Tree = ReadonlyMap<string, Buffer>

/**
 * The test tree: three files of several MiB (odd sizes), 240 small files from
 * 0 bytes to ~24 KiB spread over a three-level directory tree, and files of
 * exactly one 1 KiB / 4 KiB block and one byte more.
 */
export function extTestTree(seed = 11): Tree {
  const files = new Map<string, Buffer>()
  let n = seed
  const add = (path: string, length: number): void => void files.set(path, content(length, n++))
  add('big/video.bin', 5 * 1024 * 1024 + 123)
  add('big/archive.bin', 3 * 1024 * 1024)
  add('big/nested/disk.raw', 7 * 1024 * 1024 + 4095)
  add('blocks/1k.bin', 1024)
  add('blocks/1k-plus.bin', 1025)
  add('blocks/4k.bin', 4096)
  add('blocks/4k-plus.bin', 4097)
  add('blocks/empty', 0)
  for (let i = 0; i < 240; i++) {
    add(`small/d${i % 6}/s${i % 4}/file-${i}.dat`, (i * 1031) % 24_577)
  }
  return files
}

/** Write a tree into `dir`. */
export async function writeTree(dir: string, tree: Tree): Promise<void> {
  for (const [path, data] of tree) {
    await mkdir(dirname(join(dir, path)), { recursive: true })
    await writeFile(join(dir, path), data)
  }
}

/** Every regular file under `dir` (relative paths), skipping lost+found. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .filter((p) => !p.startsWith('lost+found'))
    .sort()
}

/** `mkfs` (e.g. 'mkfs.ext4') with `args` on a sparse file of `size` bytes, populated from `treeDir` if given. */
export async function makeExtImage(path: string, size: number, mkfs: string, args: readonly string[], treeDir?: string): Promise<void> {
  await sh('truncate', ['-s', String(size), path])
  await sh(mkfs, ['-q', '-F', ...args, ...(treeDir ? ['-d', treeDir] : []), path])
}

/**
 * partclone.extfs's used-byte set: `partclone.extfs -c -t` writes only
 * torrent.info, whose `offset:`/`length:` pairs (32 hex digits, bytes) are
 * the used blocks cut into ≤ 1 MiB pieces; merged here into ranges.
 * (`-T` would also write every used block as a file: same torrent.info.)
 */
export async function partcloneExtRanges(image: string, workDir: string): Promise<ByteRange[]> {
  const outDir = join(workDir, 'partclone-out')
  const log = join(workDir, 'partclone.log')
  // -f 0: no progress refresh interval; with the default, partclone waits ~2 s in total for its progress thread.
  const r = await run('partclone.extfs', ['-c', '-t', '-q', '-f', '0', '-s', image, '-o', outDir, '-L', log])
  if (r.code !== 0) throw new Error(`partclone.extfs on ${image} exited ${r.code}: ${r.stderr.trim().slice(-2000)}`)
  const info = await readFile(join(outDir, 'torrent.info'), 'utf8')
  const ranges: ByteRange[] = []
  for (const m of info.matchAll(/^offset: ([0-9a-f]{32})\nlength: ([0-9a-f]{32})$/gm)) {
    const offset = Number(BigInt('0x' + m[1]))
    const length = Number(BigInt('0x' + m[2]))
    const last = ranges[ranges.length - 1]
    if (last && last.offset + last.length === offset) last.length += length
    else ranges.push({ offset, length })
  }
  if (!ranges.length) throw new Error(`torrent.info from partclone on ${image} has no offset/length pairs:\n${info.slice(0, 500)}`)
  return ranges
}

const CHUNK = 4 * 1024 * 1024

/** A file of `size` bytes full of stale, non-zero data (a repeating pseudo-random pattern). */
export async function makeStaleTarget(path: string, size: number): Promise<void> {
  const pattern = pseudoRandom(CHUNK, 0xa5a5)
  const fh = await open(path, 'w')
  try {
    for (let at = 0; at < size; at += CHUNK) await fh.write(pattern, 0, Math.min(CHUNK, size - at), at)
  } finally {
    await fh.close()
  }
}

/** Copy the bytes of `ranges` (absolute offsets, shifted by `-shift` on the target) from `source` to `target`. */
export async function copyRanges(source: string, target: string, ranges: readonly ByteRange[], shift = 0): Promise<void> {
  const src = await open(source, 'r')
  const dst = await open(target, 'r+')
  const buf = Buffer.alloc(CHUNK)
  try {
    for (const r of ranges) {
      for (let at = r.offset; at < r.offset + r.length; at += CHUNK) {
        const n = Math.min(CHUNK, r.offset + r.length - at)
        const { bytesRead } = await src.read(buf, 0, n, at)
        if (bytesRead !== n) throw new Error(`short read of ${source} at ${at}: ${bytesRead} of ${n} bytes`)
        await dst.write(buf, 0, n, at - shift)
      }
    }
  } finally {
    await src.close()
    await dst.close()
  }
}

/**
 * Dump every file of an ext image with `debugfs -R 'rdump / DIR'` and return
 * the relative paths whose content differs from `tree`, that are missing, or
 * that should not be there.
 */
export async function treeDifferences(image: string, dumpDir: string, tree: Tree): Promise<string[]> {
  await mkdir(dumpDir, { recursive: true })
  await sh('debugfs', ['-R', `rdump / ${dumpDir}`, image])
  const found = await listFiles(dumpDir)
  const problems: string[] = []
  for (const path of found) if (!tree.has(path)) problems.push(`${path}: not in the tree`)
  for (const [path, data] of tree) {
    if (!found.includes(path)) problems.push(`${path}: missing`)
    else if (!data.equals(await readFile(join(dumpDir, path)))) problems.push(`${path}: content differs`)
  }
  return problems
}

/** A test's working directory with a golden ext4 image (1 KiB blocks) of the test tree and a stale target of the same size. */
export interface GoldenWork {
  /** The directory (the test removes it in its afterAll). */
  readonly work: string
  /** work/golden.img: mkfs.ext4 of extTestTree(treeSeed). */
  readonly image: string
  /** work/stale.img: stale non-zero bytes, `size` long. */
  readonly stale: string
}

/** mkdtemp(prefix), the test tree of `treeSeed` put in an ext4 image of `size` bytes, and a stale target beside it. */
export async function makeGoldenWork(prefix: string, treeSeed: number, size: number): Promise<GoldenWork> {
  const work = await mkdtemp(join(tmpdir(), prefix))
  const tree = join(work, 'content')
  await writeTree(tree, extTestTree(treeSeed))
  const image = join(work, 'golden.img')
  await makeExtImage(image, size, 'mkfs.ext4', ['-b', '1024'], tree)
  const stale = join(work, 'stale.img')
  await makeStaleTarget(stale, size)
  return { work, image, stale }
}
