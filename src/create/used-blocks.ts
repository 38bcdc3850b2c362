/**
 * Which bytes of a source go into the torrent: picks how to find them (a
 * filesystem reader, a partition table with a reader per partition, a
 * zero-block scan, or everything) and returns the used ranges with the gap
 * policy the torrent must carry.
 */
import type { ByteRange } from '../torrent/extents.js'
import type { GapPolicy } from '../torrent/metainfo.js'
import { readers } from './fs/index.js'
import type { FsReader, Volume } from './fs/types.js'
import { type Partition, type PartitionTable, readPartitionTable } from './partition-table.js'
import { mergeRanges } from './ranges.js'
import type { Source } from './source.js'
import { zeroScan } from './zero-scan.js'

export type UsedMode = 'auto' | 'ext' | 'fat' | 'ntfs' | 'zero' | 'all'
export const USED_MODES: readonly UsedMode[] = ['auto', 'ext', 'fat', 'ntfs', 'zero', 'all']

export interface UsedPart {
  /** First byte of the part (a partition, or the whole source) on the source. */
  readonly start: number
  readonly length: number
  /** What was found there: 'ext4', 'fat32', 'ntfs', 'swap', 'raw' (small, copied whole), 'zero' (zero-scanned), 'extended' (MBR container), 'all'. */
  readonly fs: string
}

export interface UsedBlocks {
  /** Used byte ranges, absolute on the source, sorted and merged. */
  readonly ranges: ByteRange[]
  /** 'zero' as soon as any region was zero-scanned: its gaps must read as zeros on the target. */
  readonly gaps: GapPolicy
  /** How the ranges were found, e.g. 'ext4', 'zero', 'all', 'gpt[ext4,fat32]'. */
  readonly fs: string
  readonly parts: UsedPart[]
  /** Size of the source: the smallest target the torrent deploys to. */
  readonly targetSize: number
  /** Lines for the user: what was zero-scanned (and so why gaps are zeroed), partition table warnings. */
  readonly notes: string[]
}

/** The region before the first partition (boot loaders, e.g. GRUB's core.img) is copied whole up to this size, else zero-scanned. */
export const BOOT_AREA_WHOLE_LIMIT = 16 * 1024 * 1024
/** A partition no reader knows is copied whole up to this size, else zero-scanned. */
export const SMALL_PARTITION_WHOLE_LIMIT = 16 * 1024 * 1024
/** How much of a volume the readers' detect() sees. */
const HEAD_BYTES = 64 * 1024

/** Find the used byte ranges of `source` by `mode` (see USED_MODES). */
export async function usedBlocks(source: Source, mode: UsedMode): Promise<UsedBlocks> {
  const whole: Volume = { source, base: 0, length: source.size }
  switch (mode) {
    case 'all':
      return {
        ranges: source.size > 0 ? [{ offset: 0, length: source.size }] : [],
        gaps: 'dont-care',
        fs: 'all',
        parts: [{ start: 0, length: source.size, fs: 'all' }],
        targetSize: source.size,
        notes: [],
      }
    case 'zero':
      return zeroScanned(whole, [])
    case 'auto': {
      const table = await readPartitionTable(source)
      if (table) return wholeDisk(source, table)
      const reader = detect(await head(whole))
      if (reader) return single(whole, reader)
      return zeroScanned(whole, [`${source.path}: no partition table and no ext, FAT or NTFS filesystem at offset 0: zero-scanned, so the gaps must be zeroed on deploy`])
    }
    default: {
      const reader = readers.find((r) => r.mode === mode)
      if (!reader) throw new Error(`unknown mode ${JSON.stringify(mode)} (one of ${USED_MODES.join(', ')})`)
      if (!reader.detect(await head(whole))) {
        throw new Error(`--mode ${mode}: ${source.path} holds no ${mode} filesystem at offset 0 (try --mode auto, or --mode zero for a raw image)`)
      }
      return single(whole, reader)
    }
  }
}

/** The first 64 KiB of a volume, zero-padded when the volume is shorter. */
async function head(volume: Volume): Promise<Buffer> {
  const buf = Buffer.alloc(HEAD_BYTES)
  await volume.source.read(volume.base, Math.min(HEAD_BYTES, volume.length), buf.subarray(0, Math.min(HEAD_BYTES, volume.length)))
  return buf
}

function detect(headBytes: Buffer): FsReader | undefined {
  return readers.find((r) => r.detect(headBytes))
}

/** Scan a volume with a reader; errors name the volume, and ranges outside it are refused. */
async function scanWith(volume: Volume, reader: FsReader, what: string): Promise<{ fs: string; ranges: ByteRange[] }> {
  let scan
  try {
    scan = await reader.scan(volume)
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message} (--mode zero or --mode all images it without reading the filesystem)`)
  }
  const end = volume.base + volume.length
  for (const r of scan.ranges) {
    if (r.offset < volume.base || r.offset + r.length > end) {
      throw new Error(`${what}: the ${scan.fs} reader reported bytes ${r.offset}+${r.length}, outside the volume (bytes ${volume.base}+${volume.length})`)
    }
  }
  return { fs: scan.fs, ranges: scan.ranges }
}

async function single(volume: Volume, reader: FsReader): Promise<UsedBlocks> {
  const { fs, ranges } = await scanWith(volume, reader, `${volume.source.path}`)
  return { ranges, gaps: 'dont-care', fs, parts: [{ start: 0, length: volume.length, fs }], targetSize: volume.source.size, notes: [] }
}

async function zeroScanned(volume: Volume, notes: string[]): Promise<UsedBlocks> {
  return {
    ranges: await zeroScan(volume),
    gaps: 'zero',
    fs: 'zero',
    parts: [{ start: 0, length: volume.length, fs: 'zero' }],
    targetSize: volume.source.size,
    notes,
  }
}

function describe(p: Partition): string {
  return `partition ${p.number} (bytes ${p.start}+${p.length}, type ${p.type}${p.name ? `, "${p.name}"` : ''})`
}

/**
 * A partitioned disk: the table areas, the region before the first partition,
 * and each partition scanned by its own reader (zero-scanned when none detects it).
 */
async function wholeDisk(source: Source, table: PartitionTable): Promise<UsedBlocks> {
  const lists: ByteRange[][] = [table.areas]
  const parts: UsedPart[] = []
  const notes = [...table.warnings]
  let zeroed = false

  const firstStart = Math.min(...table.partitions.map((p) => p.start))
  if (table.partitions.length > 0 && firstStart > 0) {
    if (firstStart <= BOOT_AREA_WHOLE_LIMIT) {
      lists.push([{ offset: 0, length: firstStart }])
    } else {
      lists.push(await zeroScan({ source, base: 0, length: firstStart }))
      notes.push(`the ${firstStart} bytes before the first partition (boot loader area) were zero-scanned`)
      zeroed = true
    }
  }

  const ordered = [...table.partitions].sort((a, b) => a.start - b.start)
  for (const p of ordered) {
    if (p.container) {
      // Its EBRs are among the table areas; the logical partitions are listed on their own.
      parts.push({ start: p.start, length: p.length, fs: 'extended' })
      continue
    }
    const volume: Volume = { source, base: p.start, length: p.length }
    const reader = detect(await head(volume))
    if (reader) {
      const { fs, ranges } = await scanWith(volume, reader, `${source.path} ${describe(p)}`)
      lists.push(ranges)
      parts.push({ start: p.start, length: p.length, fs })
    } else if (p.length <= SMALL_PARTITION_WHOLE_LIMIT) {
      // Small partitions of unknown content (BIOS boot, PReP, firmware blobs) are copied whole,
      // so the torrent keeps "don't care" gaps and the deploy need not zero the whole disk.
      lists.push([{ offset: p.start, length: p.length }])
      parts.push({ start: p.start, length: p.length, fs: 'raw' })
    } else {
      lists.push(await zeroScan(volume))
      parts.push({ start: p.start, length: p.length, fs: 'zero' })
      notes.push(`${describe(p)} holds no ext, FAT, NTFS or swap filesystem: zero-scanned`)
      zeroed = true
    }
  }
  if (zeroed) notes.push('some regions were zero-scanned, so the torrent says gaps must be zeroed: deploy zeroes every byte outside the used ranges')

  const fsList = parts.filter((p) => p.fs !== 'extended').map((p) => p.fs)
  return {
    ranges: mergeRanges(lists),
    gaps: zeroed ? 'zero' : 'dont-care',
    fs: `${table.kind}[${fsList.join(',')}]`,
    parts,
    targetSize: source.size,
    notes,
  }
}
