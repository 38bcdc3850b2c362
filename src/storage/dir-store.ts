/**
 * The store backend of a directory of extent files, the layout standard clients
 * and partclone use: one file per extent, named exactly as the torrent's file
 * entry (its hex offset). Two layouts are recognised:
 * - nested: DIR/<torrent name>/<offset>, what a standard client makes of the torrent;
 * - flat: DIR/<offset>, what `partclone.<fs> -c -T -o DIR` writes.
 * Gaps do not exist in this form, so finish() only syncs.
 */
import { constants, type Stats } from 'node:fs'
import { type FileHandle, mkdir, open, readdir, stat } from 'node:fs/promises'
import { join, relative, resolve, sep } from 'node:path'
import type { Extent } from '../torrent/extents.js'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { mapPieceRange, pieceSize, type PieceLayout } from '../torrent/piece-map.js'
import { HandlePool } from './handle-pool.js'
import { describeErrno, readFully, writeFully } from './positioned-io.js'
import type { StoreBackend } from './guarded-store.js'
import { StorageError, TargetRefused } from './types.js'

export type DirLayout = 'nested' | 'flat'

/** Open extent files at most this many at a time. */
const OPEN_FILES = 128
/** Files checked or created concurrently while opening. */
const PREPARE_BATCH = 16

/** `base/name`, asserting that it cannot leave `base` (names are validated upstream; this is the backstop). */
export function extentFilePath(base: string, name: string): string {
  const full = resolve(base, name)
  const rel = relative(resolve(base), full)
  if (rel !== name || rel.includes(sep) || rel === '..' || rel === '.' || rel === '') {
    throw new Error(`extent file name ${JSON.stringify(name)} would leave ${base}`)
  }
  return full
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path)
  } catch {
    return undefined
  }
}

/** Which layout `dir` holds for this torrent; for writing, a directory holding neither becomes nested. */
export async function detectLayout(torrent: ExtentTorrent, dir: string, mode: 'read' | 'write'): Promise<DirLayout> {
  const nested = extentFilePath(dir, torrent.name)
  if ((await statOrUndefined(nested))?.isDirectory()) return 'nested'
  const names = new Set(await readdir(dir))
  if (torrent.extents.some((e) => names.has(e.name))) return 'flat'
  if (mode === 'write') return 'nested'
  throw new TargetRefused(
    `${dir} holds neither ${nested}${sep} (a standard client's layout) nor extent files such as ${torrent.extents[0].name} (partclone -T layout)`,
    dir,
    'missing',
  )
}

async function inBatches<T>(items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += PREPARE_BATCH) await Promise.all(items.slice(i, i + PREPARE_BATCH).map(fn))
}

/** Every extent file exists, is a regular file and has the extent's length; else name the first that is not. */
async function checkFiles(dir: string, paths: readonly string[], extents: readonly Extent[]): Promise<void> {
  const problems: string[] = []
  await inBatches([...extents.keys()], async (i) => {
    const st = await statOrUndefined(paths[i])
    const e = extents[i]
    if (!st) problems[i] = `extent file ${paths[i]} is missing`
    else if (!st.isFile()) problems[i] = `extent file ${paths[i]} is not a regular file`
    else if (st.size !== e.length) problems[i] = `extent file ${paths[i]} is ${st.size} bytes, the torrent says ${e.length}`
  })
  const found = problems.filter((p) => p !== undefined)
  if (found.length > 0) {
    const more = found.length > 1 ? ` (and ${found.length - 1} more file(s) missing or of the wrong size)` : ''
    throw new TargetRefused(`${found[0]}${more}`, dir, 'missing')
  }
}

const WRITE_FLAGS = constants.O_RDWR | constants.O_NOFOLLOW

/** Create missing extent files and give every one its extent's length (sparse). */
async function prepareFiles(dir: string, paths: readonly string[], extents: readonly Extent[]): Promise<void> {
  await inBatches([...extents.keys()], async (i) => {
    let fh: FileHandle
    try {
      fh = await open(paths[i], WRITE_FLAGS | constants.O_CREAT, 0o644)
    } catch (err) {
      const { code, text } = describeErrno(err)
      const problem = code === 'EROFS' || code === 'EACCES' || code === 'EPERM' ? 'read-only' : 'unusable'
      throw new TargetRefused(`cannot create extent file ${paths[i]}: ${text}`, dir, problem, code)
    }
    try {
      const st = await fh.stat()
      if (!st.isFile()) throw new TargetRefused(`extent file ${paths[i]} is not a regular file`, dir, 'unusable')
      if (st.size !== extents[i].length) await fh.truncate(extents[i].length)
    } finally {
      await fh.close()
    }
  })
}

/** Open a directory of extent files as a store backend (store.ts puts the guard around it). */
export async function openDirStore(torrent: ExtentTorrent, dir: string, mode: 'read' | 'write'): Promise<StoreBackend> {
  const layout = await detectLayout(torrent, dir, mode)
  const base = layout === 'nested' ? extentFilePath(dir, torrent.name) : resolve(dir)
  const paths = torrent.extents.map((e) => extentFilePath(base, e.name))
  if (mode === 'read') {
    await checkFiles(dir, paths, torrent.extents)
  } else {
    if (layout === 'nested') await mkdir(base, { recursive: true })
    await prepareFiles(dir, paths, torrent.extents)
  }
  return new DirStore(torrent.layout, dir, paths, mode)
}

/** Its own I/O only: ranges, lengths, mode, use after close and the failure latch are the guard's (guarded-store.ts). */
class DirStore implements StoreBackend {
  private readonly pool: HandlePool
  /** Extents written since their file was last synced. */
  private readonly dirty = new Set<number>()
  /** The first failed sync, also one of a handle the pool retired during a read or write (the guard latches it from `failure`). */
  private syncFailure: StorageError | undefined
  private closing: Promise<void> | undefined

  constructor(
    readonly layout: PieceLayout,
    readonly target: string,
    private readonly paths: readonly string[],
    private readonly mode: 'read' | 'write',
  ) {
    const flags = mode === 'write' ? WRITE_FLAGS : constants.O_RDONLY
    this.pool = new HandlePool((i) => this.openFile(i, flags), OPEN_FILES, (i, fh) => this.retire(i, fh))
  }

  private async openFile(i: number, flags: number): Promise<FileHandle> {
    try {
      return await open(this.paths[i], flags)
    } catch (err) {
      const { code, text } = describeErrno(err)
      throw new StorageError(`cannot open extent file ${this.paths[i]}: ${text}`, this.paths[i], undefined, code)
    }
  }

  get failure(): StorageError | undefined {
    return this.syncFailure
  }

  async read(index: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length)
    for (const s of mapPieceRange(this.layout, index, offset, length)) {
      const at = s.diskOffset - this.layout.extents[s.extent].offset
      const part = out.subarray(s.bufferOffset, s.bufferOffset + s.length)
      await this.pool.use(s.extent, (fh) => readFully(fh, part, at, this.paths[s.extent]))
    }
    return out
  }

  async writePiece(index: number, data: Buffer): Promise<void> {
    const size = pieceSize(this.layout, index)
    for (const s of mapPieceRange(this.layout, index, 0, size)) {
      const at = s.diskOffset - this.layout.extents[s.extent].offset
      this.dirty.add(s.extent)
      await this.pool.use(s.extent, (fh) => writeFully(fh, data.subarray(s.bufferOffset, s.bufferOffset + s.length), at, this.paths[s.extent]))
    }
  }

  async flush(): Promise<void> {
    for (const i of [...this.dirty]) {
      this.dirty.delete(i)
      await this.pool.use(i, (fh) => this.sync(i, fh))
    }
    if (this.syncFailure) throw this.syncFailure
  }

  finish(): Promise<void> {
    return this.flush()
  }

  close(): Promise<void> {
    this.closing ??= this.pool.closeAll()
    return this.closing
  }

  /** A handle about to be closed by the pool: sync it first if written, so no writeback error goes unseen. */
  private async retire(i: number, fh: FileHandle): Promise<void> {
    if (this.mode === 'read' || !this.dirty.delete(i)) return
    await this.sync(i, fh)
  }

  private async sync(i: number, fh: FileHandle): Promise<void> {
    try {
      await fh.datasync()
    } catch (err) {
      const { code, text } = describeErrno(err)
      this.syncFailure ??= new StorageError(`writeback to ${this.paths[i]} failed: ${text}`, this.paths[i], undefined, code)
    }
  }
}
