/**
 * Real FAT images for tests: mkfs.vfat on a sparse file, filled without
 * mounting by mtools (a directory tree of files with pseudo-random content),
 * then some files and a directory deleted so that freed clusters exist.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { pseudoRandom, sh, tempDir } from './sys.js'

export interface FatImage {
  readonly path: string
  readonly size: number
  /** Files that remain on the image after the deletions: '/dir/name' → content. */
  readonly files: ReadonlyMap<string, Buffer>
}

/** mtools refuses images whose size is not a whole number of "tracks" unless told not to check. */
export const MTOOLS_ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1' }

const TREE: readonly (readonly [string, number])[] = [
  ['/empty.txt', 0],
  ['/one.bin', 1],
  ['/sector-less.bin', 511],
  ['/sector.bin', 512],
  ['/sector-more.bin', 513],
  ['/page.bin', 4096],
  ['/page-more.bin', 4097],
  ['/docs/report.bin', 70_000],
  ['/docs/old/draft.bin', 300_000],
  ['/docs/old/notes.bin', 12_345],
  ['/media/video.bin', 3 * 1024 * 1024 + 3],
  ['/media/photo.bin', 1024 * 1024],
  ['/deep/a/b/c/d/leaf.bin', 9_999],
  ['/trash/gone1.bin', 200_000],
  ['/trash/gone2.bin', 40_000],
  // Enough entries that the directory needs more than one cluster on small-cluster images.
  ...Array.from({ length: 40 }, (_, i) => [`/many/file-with-a-long-name-${i}.dat`, 100 + i * 37] as const),
]
const DELETED_FILES = ['/page.bin', '/docs/old/draft.bin', '/media/photo.bin']
const DELETED_DIR = '/trash'
/** Written after the deletions, so that it lands in (and beyond) the freed clusters. */
const LATE_FILE: readonly [string, number] = ['/late/after-delete.bin', 2 * 1024 * 1024 + 17]

/** pseudoRandom() writes out of bounds for lengths below 4: take a prefix of a longer run. */
function content(length: number, seed: number): Buffer {
  return pseudoRandom(Math.max(length, 4), seed).subarray(0, length)
}

/** mkfs.vfat `mkfsArgs` on a sparse file of `size` bytes in a new temporary directory; returns its path. */
export async function makeEmptyFatImage(size: number, mkfsArgs: readonly string[]): Promise<string> {
  const dir = await tempDir('bsw-fat-')
  const path = join(dir, 'fat.img')
  await sh('truncate', ['-s', String(size), path])
  await sh('mkfs.vfat', [...mkfsArgs, path])
  return path
}

/** mkfs.vfat `mkfsArgs` on a sparse file of `size` bytes, filled and partly emptied as described above. */
export async function makeFatImage(size: number, mkfsArgs: readonly string[], seed = 7): Promise<FatImage> {
  const path = await makeEmptyFatImage(size, mkfsArgs)
  const dir = dirname(path)

  const files = new Map<string, Buffer>()
  const tree = join(dir, 'tree')
  let n = seed
  for (const [name, length] of TREE) {
    const data = content(length, n++)
    await mkdir(dirname(join(tree, name)), { recursive: true })
    await writeFile(join(tree, name), data)
    files.set(name, data)
  }
  const tops = [...new Set(TREE.map(([name]) => name.split('/')[1]))]
  await sh('mcopy', ['-i', path, '-s', ...tops.map((t) => join(tree, t)), '::/'], { env: MTOOLS_ENV })

  const deleted = [...DELETED_FILES, ...[...files.keys()].filter((f) => f.startsWith(DELETED_DIR + '/'))]
  await sh('mdel', ['-i', path, ...DELETED_FILES.map((f) => '::' + f)], { env: MTOOLS_ENV })
  await sh('mdeltree', ['-i', path, '::' + DELETED_DIR], { env: MTOOLS_ENV })
  for (const f of deleted) files.delete(f)

  const [lateName, lateLength] = LATE_FILE
  const late = content(lateLength, n++)
  await writeFile(join(dir, 'late.bin'), late)
  await sh('mmd', ['-i', path, '::' + dirname(lateName)], { env: MTOOLS_ENV })
  await sh('mcopy', ['-i', path, join(dir, 'late.bin'), '::' + lateName], { env: MTOOLS_ENV })
  files.set(lateName, late)
  return { path, size, files }
}
