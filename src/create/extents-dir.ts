/**
 * An extents directory: one plain file per extent, `DIR/NAME/<hex offset>`,
 * the layout a standard BitTorrent client (transmission, aria2, qBittorrent,
 * libtorrent) expects for a multi-file torrent named NAME saved in DIR.
 * partclone's `-T` output directory is the same layout with DIR/NAME being
 * its output directory.
 *
 * The writer fills the files from the creator's read pipeline; the reader
 * presents such a directory as a sparse disk (extent bytes at their offsets,
 * zeros between), so the hasher can read it like a Source.
 */
import { type FileHandle, mkdir, open, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { ReadAt } from './hasher.js'

export interface NamedExtent {
  readonly offset: number
  readonly length: number
  /** File name in the directory (the hex offset). */
  readonly name: string
}

/** Index of the extent holding disk byte `offset`, or -1. Extents sorted by offset. */
function extentHolding(extents: readonly NamedExtent[], offset: number): number {
  let lo = 0
  let hi = extents.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const e = extents[mid]
    if (offset < e.offset) hi = mid - 1
    else if (offset >= e.offset + e.length) lo = mid + 1
    else return mid
  }
  return -1
}

/** Writes extent bytes, as they stream by in offset order, into DIR/NAME/<name>. */
export class ExtentFilesWriter {
  private current = -1
  private fh: FileHandle | undefined

  private constructor(
    /** DIR/NAME: the directory holding the extent files. */
    readonly path: string,
    private readonly extents: readonly NamedExtent[],
  ) {}

  /** Make DIR/NAME; it must not exist yet or be empty, so no stale extent file is left in it. */
  static async create(dir: string, name: string, extents: readonly NamedExtent[]): Promise<ExtentFilesWriter> {
    const path = join(dir, name)
    await mkdir(path, { recursive: true })
    const present = await readdir(path)
    if (present.length > 0) {
      throw new Error(`extents directory ${path} is not empty (${present.length} entries); remove it or give another --extents-dir`)
    }
    return new ExtentFilesWriter(path, extents)
  }

  /** Write `data`, which lies within one extent, found at disk byte `offset`. */
  async write(offset: number, data: Buffer): Promise<void> {
    const i = extentHolding(this.extents, offset)
    if (i < 0 || offset + data.length > this.extents[i].offset + this.extents[i].length) {
      throw new Error(`extents directory: bytes 0x${offset.toString(16)}+${data.length} are not within one extent`)
    }
    if (i !== this.current) {
      await this.fh?.close()
      this.fh = undefined
      // 'wx': never overwrite a file that appeared meanwhile
      this.fh = await open(join(this.path, this.extents[i].name), 'wx')
      this.current = i
    }
    const e = this.extents[i]
    let done = 0
    while (done < data.length) {
      const { bytesWritten } = await this.fh!.write(data, done, data.length - done, offset - e.offset + done)
      done += bytesWritten
    }
  }

  async close(): Promise<void> {
    await this.fh?.close()
    this.fh = undefined
  }

  /** After a failure: remove DIR/NAME (it was empty when created), so no partial extent files look seedable. */
  async abort(): Promise<void> {
    await this.close().catch(() => {})
    await rm(this.path, { recursive: true, force: true })
  }
}

/**
 * A directory of extent files read as a sparse disk: `read(offset, length)`
 * returns the extents' bytes where they lie and zeros elsewhere.
 */
export class ExtentFilesReader implements ReadAt {
  private constructor(
    readonly path: string,
    private readonly extents: readonly NamedExtent[],
  ) {}

  /** Check that every extent file is there with its length before any byte is read. */
  static async open(path: string, extents: readonly NamedExtent[]): Promise<ExtentFilesReader> {
    for (const e of extents) {
      const file = join(path, e.name)
      let size: number
      try {
        const st = await stat(file)
        if (!st.isFile()) throw new Error(`${file} is not a regular file`)
        size = st.size
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOENT') throw new Error(`extent file ${file} is missing (partclone -t writes no data files: give the source device instead)`)
        throw err
      }
      if (size !== e.length) throw new Error(`extent file ${file} is ${size} bytes; the extent list says ${e.length}`)
    }
    return new ExtentFilesReader(path, extents)
  }

  async read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    const end = offset + length
    let pos = offset
    let i = extentHolding(this.extents, pos)
    if (i < 0) i = this.extents.findIndex((e) => e.offset > pos)
    while (pos < end) {
      const e = i >= 0 ? this.extents[i] : undefined
      if (!e || e.offset >= end) {
        into.fill(0, pos - offset, length)
        break
      }
      if (e.offset > pos) {
        into.fill(0, pos - offset, e.offset - offset)
        pos = e.offset
      }
      const n = Math.min(end, e.offset + e.length) - pos
      // a handle per slice: the hasher has several reads in flight at once
      const fh = await open(join(this.path, e.name), 'r')
      try {
        let done = 0
        while (done < n) {
          const { bytesRead } = await fh.read(into, pos - offset + done, n - done, pos - e.offset + done)
          if (bytesRead === 0) throw new Error(`extent file ${join(this.path, e.name)} ended early (at ${pos - e.offset + done} of ${e.length} bytes)`)
          done += bytesRead
        }
      } finally {
        await fh.close()
      }
      pos += n
      i = i + 1 < this.extents.length ? i + 1 : -1
    }
    return into
  }
}
