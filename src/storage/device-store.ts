/**
 * The store backend of one target: a block device or an image file. Piece i's bytes
 * go to the disk offsets the piece map gives, by positioned writes through the
 * page cache; flush() is fdatasync and is where writeback errors surface.
 *
 * Why buffered (measured with storage-write-bench: 16 MiB pieces in random
 * order, fdatasync included, loop device and file on the same disk): for 1 MiB
 * and larger writes O_DIRECT was level with buffered or up to ~1.3x (on a
 * loop device up to ~4x, where buffered writes are cached twice), O_DSYNC was
 * slower or erratic; for 4 KiB slices (fragmented extents) buffered was 1.7-5x
 * faster than O_DIRECT and 10x faster than O_DSYNC. O_DIRECT would also need
 * sector-aligned extents and aligned bounce buffers, which Node cannot ask for;
 * seeding reads profit from the page cache. The price: a writeback error shows
 * at flush(), which names the pieces written since the previous flush.
 *
 * Write-behind: after every WRITE_BEHIND bytes written, a flush starts in the
 * background (one at a time), so the device writes while the network
 * delivers rather than all at the final flush (measured: a 1 GiB deploy to a
 * loop device 10-15% faster), and a writeback error stops a deploy early.
 */
import { constants } from 'node:fs'
import { type FileHandle, open, readFile } from 'node:fs/promises'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { extentsEnd, gapsOf } from '../torrent/extents.js'
import { mapPieceRange, pieceSize, type PieceLayout } from '../torrent/piece-map.js'
import type { TargetInfo } from './device-size.js'
import { type DeviceUser, deviceUsers } from './device-usage.js'
import { describeErrno, readFully, writeFully } from './positioned-io.js'
import { stableSourceFixes } from './source-users.js'
import { otherOpeners } from './target-lock.js'
import type { StoreBackend } from './guarded-store.js'
import { StorageError, TargetRefused } from './types.js'
import { zeroRanges } from './zero-gaps.js'

export interface DeviceStoreOptions {
  readonly mode: 'read' | 'write'
  /** Open a mounted device (or the one holding "/") anyway. */
  readonly force?: boolean
}

const hex = (n: number): string => `0x${n.toString(16)}`
/** Bytes written between two background flushes. */
const WRITE_BEHIND = 64 * 1024 * 1024

/** Refuse a target that cannot hold every extent, naming the first that does not fit. */
function checkExtentsFit(torrent: ExtentTorrent, path: string, size: number, kind: 'block' | 'file'): void {
  const e = torrent.extents.find((x) => x.offset + x.length > size)
  if (!e) return
  const needed = torrent.meta.targetSize ?? extentsEnd(torrent.extents)
  const hint = kind === 'file' ? `; an image file is never grown: make it ${needed} bytes (truncate -s ${needed} ${path}), or with deploy give a path that does not exist yet and --create-image` : ''
  throw new TargetRefused(`extent ${hex(e.offset)}+${e.length} ends past ${path} (size ${size})${hint}`, path, 'too-small')
}

export function describeUser(u: DeviceUser): string {
  const what = u.relation === 'itself' ? u.device : `${u.device} (${u.relation === 'partition' ? 'a partition' : 'a device stacked on it'})`
  if (u.kind === 'swap') return `${what} is in use as swap`
  return `${what} is mounted ${u.readOnly ? 'read-only' : 'read-write'} on ${u.where}${u.root ? ' (the running root filesystem)' : ''}`
}

/**
 * Refuse a block device in use: for writing, any mount or swap; for reading
 * (seeding), a read-write mount (its content may change under the seed); in
 * both modes the device holding "/". `force` overrides all of these.
 */
async function checkUsers(info: TargetInfo, opts: DeviceStoreOptions): Promise<void> {
  if (opts.force || info.devno === undefined) return
  const users = await deviceUsers(info.devno)
  const blocking = users.filter((u) => opts.mode === 'write' || u.root || !u.readOnly)
  if (blocking.length === 0) return
  const fixes = stableSourceFixes(blocking.filter((u) => !u.readOnly))
  const why = opts.mode === 'write' ? 'writing to it would corrupt what is mounted (unmount it, or use --force)' : `its content may change while it is seeded (${fixes ? `${fixes}; ` : ''}or use --force)`
  throw new TargetRefused(`${info.path} is in use: ${blocking.map(describeUser).join('; ')}; ${why}`, info.path, 'in-use')
}

async function readOnlyFlag(devno: string): Promise<boolean> {
  try {
    return (await readFile(`/sys/dev/block/${devno}/ro`, 'utf8')).trim() === '1'
  } catch {
    return false
  }
}

async function openTarget(info: TargetInfo, opts: DeviceStoreOptions): Promise<FileHandle> {
  // O_EXCL on a block device: the kernel refuses while anything holds it (mount in any namespace, dm, md, swap).
  const exclusive = info.kind === 'block' && !opts.force ? constants.O_EXCL : 0
  const flags = opts.mode === 'write' ? constants.O_RDWR | exclusive : constants.O_RDONLY
  try {
    return await open(info.path, flags)
  } catch (err) {
    const { code, text } = describeErrno(err)
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
      throw new TargetRefused(`${info.path} is read-only: opening it for ${opts.mode === 'write' ? 'writing' : 'reading'} failed with ${text}`, info.path, 'read-only', code)
    }
    if (code === 'EBUSY') {
      // Another blockswarm store on this device was already refused by the target lock (store.ts): this is the kernel's refusal.
      const openers = await otherOpeners(info.path)
      const seen = openers ? `; these processes have it open: ${openers}` : ''
      throw new TargetRefused(
        `${info.path} is in use by the kernel (${text}): mounted (perhaps in another mount namespace), part of a device-mapper/RAID/LVM set, swap, or opened exclusively by another program${seen}; use --force to override`,
        info.path,
        'in-use',
        code,
      )
    }
    throw new TargetRefused(`cannot open ${info.path}: ${text}`, info.path, 'unusable', code)
  }
}

/** Open a block device or image file as a store backend (store.ts puts the guard around it), after every check that can refuse it. */
export async function openDeviceStore(torrent: ExtentTorrent, info: TargetInfo, opts: DeviceStoreOptions): Promise<StoreBackend> {
  if (info.kind === 'directory') throw new Error('openDeviceStore: a directory is not a device target')
  checkExtentsFit(torrent, info.path, info.size, info.kind)
  if (info.kind === 'block' && info.devno !== undefined && opts.mode === 'write' && (await readOnlyFlag(info.devno))) {
    throw new TargetRefused(`${info.path} is read-only (/sys/dev/block/${info.devno}/ro is 1)`, info.path, 'read-only')
  }
  if (info.kind === 'block') await checkUsers(info, opts)
  const fh = await openTarget(info, opts)
  return new DeviceStore(torrent, info.path, info.kind, info.size, fh)
}

/** Its own I/O only: ranges, lengths, mode, use after close and the failure latch are the guard's (guarded-store.ts). */
class DeviceStore implements StoreBackend {
  readonly layout: PieceLayout
  /** Pieces written since the last successful flush, and the disk range they cover. */
  private pending = new Set<number>()
  private pendingLow = Infinity
  private pendingHigh = 0
  /** The first failed writeback, also one of a background flush that no caller saw (the guard latches it from `failure`). */
  private flushFailure: StorageError | undefined
  private closing: Promise<void> | undefined
  /** Bytes written since the last background flush started, and that flush while it runs. */
  private unflushed = 0
  private behind: Promise<void> | undefined

  constructor(
    private readonly torrent: ExtentTorrent,
    readonly target: string,
    private readonly kind: 'block' | 'file',
    private readonly size: number,
    private readonly fh: FileHandle,
  ) {
    this.layout = torrent.layout
  }

  get failure(): StorageError | undefined {
    return this.flushFailure
  }

  async read(index: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length)
    for (const s of mapPieceRange(this.layout, index, offset, length)) {
      await readFully(this.fh, out.subarray(s.bufferOffset, s.bufferOffset + s.length), s.diskOffset, this.target)
    }
    return out
  }

  async writePiece(index: number, data: Buffer): Promise<void> {
    const size = pieceSize(this.layout, index)
    for (const s of mapPieceRange(this.layout, index, 0, size)) {
      try {
        await writeFully(this.fh, data.subarray(s.bufferOffset, s.bufferOffset + s.length), s.diskOffset, this.target)
      } finally {
        // after the write: a flush that started during it may have missed it
        this.pending.add(index)
        this.pendingLow = Math.min(this.pendingLow, s.diskOffset)
        this.pendingHigh = Math.max(this.pendingHigh, s.diskOffset + s.length)
      }
    }
    this.unflushed += size
    if (this.unflushed >= WRITE_BEHIND && !this.behind) {
      this.unflushed = 0
      // a failure is kept (flushFailure): the guard fails the next call with it
      this.behind = this.flush()
        .catch(() => undefined)
        .finally(() => (this.behind = undefined))
    }
  }

  async flush(): Promise<void> {
    const pieces = [...this.pending].sort((a, b) => a - b)
    const [low, high] = [this.pendingLow, this.pendingHigh]
    this.pending = new Set()
    this.pendingLow = Infinity
    this.pendingHigh = 0
    try {
      await this.fh.datasync()
    } catch (err) {
      const { code, text } = describeErrno(err)
      const range = pieces.length > 0 ? `; data written since the last flush may be lost: ${pieces.length} piece(s) (${pieceList(pieces)}) between offsets ${hex(low)} and ${hex(high)}` : ''
      const failure = new StorageError(`writeback to ${this.target} failed: ${text}${range}`, this.target, pieces.length > 0 ? low : undefined, code, pieces)
      this.flushFailure ??= failure
      throw failure
    }
  }

  async finish(): Promise<void> {
    await this.flush()
    if (this.torrent.meta.gaps === 'zero') {
      const limit = Math.min(this.size, this.torrent.meta.targetSize ?? this.size)
      await zeroRanges({ fh: this.fh, path: this.target, kind: this.kind }, gapsOf(this.torrent.extents, limit))
      await this.flush()
    }
  }

  close(): Promise<void> {
    this.closing ??= (this.behind ?? Promise.resolve()).then(() => this.fh.close())
    return this.closing
  }
}

/** "3, 7, 9 … 41" — at most a handful of piece numbers for a message. */
function pieceList(pieces: readonly number[]): string {
  return pieces.length <= 6 ? pieces.join(', ') : `${pieces.slice(0, 5).join(', ')} … ${pieces[pieces.length - 1]}`
}
