/**
 * A PieceStore over bytes in memory: the Buffer plays the target (a disk of
 * bytes.length bytes), piece i's bytes live at the torrent's extents in it
 * through the same piece map as on a device, and the same guard checks every
 * call. finish() zeroes the gaps of a "zero" torrent like the other stores.
 * For engine tests without loop devices (SessionOptions.openStore), and for
 * library users who want a deploy's bytes in hand.
 *
 *   const disk = Buffer.alloc(64 * 1024 * 1024)
 *   const session = await Session.start({ openStore: async (t, _target, o) => new MemoryStore(t, disk, o) })
 */
import { extentsEnd, gapsOf } from '../torrent/extents.js'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { mapPieceRange, type PieceLayout } from '../torrent/piece-map.js'
import { GuardedStore, type StoreBackend } from './guarded-store.js'
import { TargetRefused } from './types.js'

export interface MemoryStoreOptions {
  /** 'write' (the default) to deploy into the bytes, 'read' to seed from them. */
  readonly mode?: 'read' | 'write'
  /** What messages call the target (default "memory"). */
  readonly target?: string
}

export class MemoryStore extends GuardedStore {
  /**
   * @param bytes the target: written in place, never copied or grown
   * @throws TargetRefused ('too-small') when an extent ends past `bytes`
   */
  constructor(
    torrent: ExtentTorrent,
    readonly bytes: Buffer,
    opts: MemoryStoreOptions = {},
  ) {
    super(new MemoryBackend(torrent, bytes, opts.target ?? 'memory'), { mode: opts.mode ?? 'write' })
  }
}

/** Its own I/O only, copies (the guard checks the rest). */
class MemoryBackend implements StoreBackend {
  readonly layout: PieceLayout

  constructor(
    private readonly torrent: ExtentTorrent,
    private readonly bytes: Buffer,
    readonly target: string,
  ) {
    this.layout = torrent.layout
    const end = extentsEnd(torrent.extents)
    if (end > bytes.length) {
      const e = torrent.extents.find((x) => x.offset + x.length > bytes.length)!
      throw new TargetRefused(`extent 0x${e.offset.toString(16)}+${e.length} ends past ${target} (size ${bytes.length})`, target, 'too-small')
    }
  }

  async read(index: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length)
    for (const s of mapPieceRange(this.layout, index, offset, length)) this.bytes.copy(out, s.bufferOffset, s.diskOffset, s.diskOffset + s.length)
    return out
  }

  async writePiece(index: number, data: Buffer): Promise<void> {
    for (const s of mapPieceRange(this.layout, index, 0, data.length)) data.copy(this.bytes, s.diskOffset, s.bufferOffset, s.bufferOffset + s.length)
  }

  async flush(): Promise<void> {}

  async finish(): Promise<void> {
    if (this.torrent.meta.gaps !== 'zero') return
    const limit = Math.min(this.bytes.length, this.torrent.meta.targetSize ?? this.bytes.length)
    for (const g of gapsOf(this.torrent.extents, limit)) this.bytes.fill(0, g.offset, g.offset + g.length)
  }

  async close(): Promise<void> {}
}
