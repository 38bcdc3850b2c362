/**
 * The contract every filesystem reader fulfils. A reader looks at a volume
 * (a partition or a whole image) that starts at byte `base` of a Source and is
 * `length` bytes long, reads the filesystem's own allocation data (no mount),
 * and returns the used byte ranges with ABSOLUTE offsets (base already added),
 * sorted and merged (use RangeBuilder).
 */
import type { ByteRange } from '../../torrent/extents.js'
import type { Source } from '../source.js'

export interface Volume {
  readonly source: Source
  /** Byte offset of the volume within the source. */
  readonly base: number
  /** Length of the volume in bytes. */
  readonly length: number
}

export interface FsScan {
  /** Filesystem found, e.g. 'ext4', 'ext2', 'fat12', 'fat16', 'fat32', 'ntfs'. */
  readonly fs: string
  /** The filesystem's allocation unit in bytes (block / cluster). */
  readonly blockSize: number
  /** Used byte ranges, absolute offsets in the source, sorted and merged. */
  readonly ranges: ByteRange[]
}

export interface FsReader {
  /** Short name used by --mode: 'ext' | 'fat' | 'ntfs'. */
  readonly mode: string
  /** True when the first 64 KiB of the volume look like this filesystem. */
  detect(head: Buffer): boolean
  /** Read the allocation data. Throws an Error naming the problem if the filesystem is damaged. */
  scan(volume: Volume): Promise<FsScan>
}
