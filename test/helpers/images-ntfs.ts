/**
 * Real NTFS images for tests, made and read without mounting: mkntfs formats
 * an image file, ntfscp copies files into its root, ntfstruncate frees some of
 * them again (holes in the cluster bitmap), ntfscat reads files back, and
 * partclone.ntfs gives a reference used-block set. Also byte-level patching of
 * MFT records for damaged-structure tests.
 */
import { execFile } from 'node:child_process'
import { open, readFile, rm, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ByteRange } from '../../src/torrent/extents.js'
import { applyFixups } from '../../src/create/fs/ntfs.js'
import { readPartcloneInfo } from '../../src/create/partclone-info.js'
import { mergeRanges } from '../../src/create/ranges.js'
import { pseudoRandom, run, sh } from './sys.js'

export interface NtfsFileSpec {
  readonly name: string
  readonly size: number
  readonly seed: number
  /** Truncated to 0 after all files are copied, so its clusters become free again. */
  readonly freed?: boolean
}

export interface NtfsImage {
  readonly path: string
  readonly size: number
  /** Every file's content as it stands in the image (freed files are empty). */
  readonly files: ReadonlyMap<string, Buffer>
}

export interface NtfsImageOptions {
  readonly sizeMiB: number
  readonly clusterSize?: number
  readonly sectorSize?: number
  readonly files: readonly NtfsFileSpec[]
}

/** Format `dir/name` with `mkntfs -F -f -q` and fill its root directory with ntfscp. */
export async function makeNtfsImage(dir: string, name: string, opts: NtfsImageOptions): Promise<NtfsImage> {
  const path = join(dir, name)
  const size = opts.sizeMiB * 1024 * 1024
  await writeFile(path, '')
  await truncate(path, size)
  const args = ['-F', '-f', '-q']
  if (opts.clusterSize) args.push('-c', String(opts.clusterSize))
  if (opts.sectorSize) args.push('-s', String(opts.sectorSize))
  await sh('mkntfs', [...args, path])
  const files = new Map<string, Buffer>()
  for (const f of opts.files) {
    const data = pseudoRandom(f.size, f.seed)
    const local = join(dir, `${name}.${f.name}`)
    await writeFile(local, data)
    await sh('ntfscp', ['-q', path, local, `/${f.name}`])
    await rm(local)
    files.set(f.name, data)
  }
  const freed = opts.files.filter((f) => f.freed)
  if (freed.length) {
    const inodes = await rootInodes(path)
    for (const f of freed) {
      const inode = inodes.get(f.name)
      if (inode === undefined) throw new Error(`ntfsls ${path} does not list /${f.name}`)
      await sh('ntfstruncate', ['-q', path, String(inode), '0x80', '0'])
      files.set(f.name, Buffer.alloc(0))
    }
  }
  return { path, size, files }
}

/** Inode numbers of the root directory's entries, from `ntfsls -i`. */
async function rootInodes(image: string): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (const line of (await sh('ntfsls', ['-i', image])).split('\n')) {
    const m = /^\s*(\d+)\s+(\S+)\s*$/.exec(line)
    if (m) out.set(m[2], Number(m[1]))
  }
  return out
}

/** A file's bytes from the image via ntfscat (binary stdout, so not through run()). */
export function ntfsCat(image: string, path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile('ntfscat', [image, path], { encoding: 'buffer', maxBuffer: 1024 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ntfscat ${image} ${path} failed: ${err.message} ${stderr.toString()}`))
      else resolve(stdout)
    })
  })
}

/**
 * partclone.ntfs's used-byte set: `partclone.ntfs -c -t` writes only torrent.info
 * (`-T` would also write the data files), with `offset:`/`length:` pairs of 32 hex
 * digits in bytes. `-o` fails when the output directory already exists.
 */
export async function partcloneRanges(image: string, workDir: string): Promise<{ blockSize: number; ranges: ByteRange[] }> {
  const outDir = join(workDir, 'partclone-out')
  const log = join(workDir, 'partclone.log')
  await rm(outDir, { recursive: true, force: true })
  const r = await run('partclone.ntfs', ['-c', '-t', '-q', '-s', image, '-o', outDir, '-L', log])
  if (r.code !== 0) {
    const logText = await readFile(log, 'utf8').catch(() => '')
    throw new Error(`partclone.ntfs on ${image} exited ${r.code}: ${r.stderr.trim()}\n${logText.slice(-2000)}`)
  }
  const info = await readPartcloneInfo(join(outDir, 'torrent.info'))
  await rm(outDir, { recursive: true, force: true })
  if (info.blockSize === null) throw new Error(`torrent.info from partclone on ${image} has no block_size line`)
  return { blockSize: info.blockSize, ranges: mergeRanges([info.extents.map((e) => ({ offset: e.offset, length: e.length }))]) }
}

/** A target file of `size` bytes full of stale, non-zero data (a repeated pseudo-random MiB). */
export async function makeStaleTarget(path: string, size: number, seed: number): Promise<void> {
  const block = pseudoRandom(1024 * 1024, seed)
  const fh = await open(path, 'w')
  try {
    for (let pos = 0; pos < size; pos += block.length) await fh.write(block, 0, Math.min(block.length, size - pos), pos)
  } finally {
    await fh.close()
  }
}

/** Copy exactly the bytes of `ranges` from `source` to the same offsets of `target`. */
export async function copyRanges(source: string, target: string, ranges: readonly ByteRange[]): Promise<void> {
  const src = await open(source, 'r')
  const dst = await open(target, 'r+')
  try {
    const buf = Buffer.alloc(4 * 1024 * 1024)
    for (const r of ranges) {
      for (let done = 0; done < r.length; ) {
        const n = Math.min(buf.length, r.length - done)
        const { bytesRead } = await src.read(buf, 0, n, r.offset + done)
        if (bytesRead !== n) throw new Error(`short read at ${r.offset + done} of ${source}`)
        await dst.write(buf, 0, n, r.offset + done)
        done += n
      }
    }
  } finally {
    await src.close()
    await dst.close()
  }
}

/** Geometry of a fresh mkntfs image, whose $MFT starts contiguous at the boot sector's $MFT cluster. */
async function mftGeometry(image: string): Promise<{ mftOffset: number; recordSize: number }> {
  const fh = await open(image, 'r')
  const boot = Buffer.alloc(512)
  try {
    await fh.read(boot, 0, 512, 0)
  } finally {
    await fh.close()
  }
  const bytesPerSector = boot.readUInt16LE(11)
  const code = boot[13]
  const clusterSize = bytesPerSector * (code > 0x80 ? 2 ** (256 - code) : code)
  const recordCode = boot.readInt8(0x40)
  const recordSize = recordCode > 0 ? recordCode * clusterSize : 2 ** -recordCode
  return { mftOffset: Number(boot.readBigUInt64LE(0x30)) * clusterSize, recordSize }
}

/** Byte offset of MFT record `index` in a fresh mkntfs image (checked by its "FILE" magic). */
export async function mftRecordOffset(image: string, index: number): Promise<{ offset: number; size: number }> {
  const { mftOffset, recordSize } = await mftGeometry(image)
  const offset = mftOffset + index * recordSize
  const fh = await open(image, 'r')
  try {
    const magic = Buffer.alloc(4)
    await fh.read(magic, 0, 4, offset)
    if (magic.toString('latin1') !== 'FILE') throw new Error(`no FILE record at byte ${offset} of ${image}`)
  } finally {
    await fh.close()
  }
  return { offset, size: recordSize }
}

/**
 * Edit MFT record `index` of an image as NTFS would: undo its fixups, let
 * `edit` change the record, then protect it again with a fresh update sequence.
 */
export async function patchMftRecord(image: string, index: number, edit: (record: Buffer) => void): Promise<void> {
  const { offset, size } = await mftRecordOffset(image, index)
  const fh = await open(image, 'r+')
  try {
    const record = Buffer.alloc(size)
    await fh.read(record, 0, size, offset)
    applyFixups(record, `test patch of MFT record ${index}`)
    edit(record)
    const usaOffset = record.readUInt16LE(4)
    const usn = (record.readUInt16LE(usaOffset) % 0xfffe) + 1
    record.writeUInt16LE(usn, usaOffset)
    for (let i = 0; i < size / 512; i++) {
      const end = (i + 1) * 512 - 2
      record.writeUInt16LE(record.readUInt16LE(end), usaOffset + 2 + i * 2)
      record.writeUInt16LE(usn, end)
    }
    await fh.write(record, 0, size, offset)
  } finally {
    await fh.close()
  }
}

/** Byte position of the first attribute of `type` (and, for $DATA, no name) in a fixed-up record. */
export function findAttribute(record: Buffer, type: number): number {
  let pos = record.readUInt16LE(0x14)
  while (pos + 8 <= record.length) {
    const t = record.readUInt32LE(pos)
    if (t === 0xffffffff) break
    if (t === type && record[pos + 9] === 0) return pos
    pos += record.readUInt32LE(pos + 4)
  }
  throw new Error(`no unnamed attribute 0x${type.toString(16)} in the record`)
}
