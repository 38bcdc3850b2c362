/**
 * Partition tables of a whole disk: GPT (behind its protective MBR) and the
 * classic MBR with its chain of extended boot records. Reads only; reports
 * where the partitions are and which bytes the table itself occupies, so the
 * image creator can copy the table and scan each partition on its own.
 *
 * Format facts (UEFI spec §5; the MBR/EBR layout as Linux and fdisk use it):
 * - MBR: 4 entries of 16 bytes at 446, signature 0x55 0xAA at 510; an entry is
 *   status (0x00/0x80), CHS, type byte at +4, first LBA (u32) at +8, sector count (u32) at +12.
 * - Extended types 0x05/0x0F/0x85: the first EBR sits at the container's start;
 *   in each EBR entry 0 is the logical partition (start relative to this EBR),
 *   entry 1 links the next EBR (start relative to the container's start).
 * - GPT: a protective MBR entry of type 0xEE; the header ("EFI PART") at LBA 1,
 *   its CRC32 over HeaderSize bytes with the CRC field zeroed; the entries array
 *   at PartitionEntryLBA with its own CRC32; a backup entries array and backup
 *   header (at the header's AlternateLBA, normally the last LBA) at the end.
 */
import { crc32 } from 'node:zlib'
import type { ByteRange } from '../torrent/extents.js'
import { mergeRanges } from './ranges.js'
import type { Source } from './source.js'

export interface Partition {
  /** Partition number as Linux numbers it: GPT entry index + 1; MBR primaries 1–4, logicals 5 on. */
  readonly number: number
  /** First byte of the partition on the disk. */
  readonly start: number
  readonly length: number
  /** GPT: the type GUID (lowercase); MBR: the type byte as '0x83'. */
  readonly type: string
  /** GPT partition name; '' for MBR. */
  readonly name: string
  /** An MBR extended partition: a container for logical partitions, not a volume. */
  readonly container: boolean
}

export interface PartitionTable {
  readonly kind: 'gpt' | 'mbr'
  /** Logical sector size the table is written in (512, or 4096 for a 4Kn GPT). */
  readonly sectorSize: number
  /** Bytes the table occupies (MBR, GPT headers and entry arrays, EBRs): sorted, merged. */
  readonly areas: ByteRange[]
  /** Partitions in table order (GPT entry order; MBR primaries then logicals). */
  readonly partitions: Partition[]
  /** Problems that did not stop the read, e.g. a damaged backup GPT. */
  readonly warnings: string[]
}

const MBR_SIZE = 512
const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85])
const GPT_PROTECTIVE = 0xee
/** Bound on a GPT entries array (the usual one is 16 KiB) and on an EBR chain. */
const MAX_GPT_ENTRIES_BYTES = 4 * 1024 * 1024
const MAX_LOGICAL_PARTITIONS = 256

interface MbrEntry {
  readonly slot: number
  readonly status: number
  readonly type: number
  readonly firstLba: number
  readonly sectors: number
}

function mbrEntries(sector: Buffer): MbrEntry[] {
  const out: MbrEntry[] = []
  for (let slot = 0; slot < 4; slot++) {
    const o = 446 + slot * 16
    out.push({
      slot,
      status: sector[o],
      type: sector[o + 4],
      firstLba: sector.readUInt32LE(o + 8),
      sectors: sector.readUInt32LE(o + 12),
    })
  }
  return out
}

function hasBootSignature(sector: Buffer): boolean {
  return sector[510] === 0x55 && sector[511] === 0xaa
}

/**
 * True when sector 0 is a filesystem boot sector (NTFS, exFAT, or a FAT BPB):
 * a "superfloppy" — a filesystem on the whole disk, whose 0x55AA is not a partition table.
 */
function isFilesystemBootSector(sector: Buffer): boolean {
  const oem = sector.toString('latin1', 3, 11)
  if (oem === 'NTFS    ' || oem === 'EXFAT   ') return true
  const jump = (sector[0] === 0xeb && sector[2] === 0x90) || sector[0] === 0xe9
  const bytesPerSector = sector.readUInt16LE(11)
  const sectorsPerCluster = sector[13]
  const reserved = sector.readUInt16LE(14)
  const fats = sector[16]
  const media = sector[21]
  return (
    jump &&
    [512, 1024, 2048, 4096].includes(bytesPerSector) &&
    sectorsPerCluster > 0 &&
    (sectorsPerCluster & (sectorsPerCluster - 1)) === 0 &&
    reserved >= 1 &&
    fats >= 1 &&
    fats <= 4 &&
    (media === 0xf0 || media >= 0xf8)
  )
}

/** An MBR type byte as text, e.g. '0x83'. */
function hex(n: number): string {
  return '0x' + n.toString(16).padStart(2, '0')
}

/**
 * Read the partition table of a whole disk (or disk image). Returns null when
 * the source holds no partition table (no 0x55AA, a filesystem boot sector at
 * sector 0, or MBR entries that cannot be a table); throws, naming the place,
 * when a table is there but damaged beyond use.
 */
export async function readPartitionTable(source: Source): Promise<PartitionTable | null> {
  if (source.size < MBR_SIZE * 2) return null
  const mbr = await source.read(0, MBR_SIZE)
  if (!hasBootSignature(mbr) || isFilesystemBootSector(mbr)) return null
  const entries = mbrEntries(mbr)
  if (entries.some((e) => e.type === GPT_PROTECTIVE)) return readGpt(source)
  return readMbr(source, entries)
}

/** A classic MBR table, or null when its entries do not look like one. */
async function readMbr(source: Source, entries: MbrEntry[]): Promise<PartitionTable | null> {
  const where = `MBR of ${source.path}`
  const used = entries.filter((e) => e.type !== 0)
  if (used.length === 0) return null
  for (const e of entries) {
    if (e.status !== 0x00 && e.status !== 0x80) return null
    if (e.type === 0) continue
    // An entry starting at sector 0 overlaps the MBR itself (isohybrid images): not a table we can split.
    if (e.firstLba === 0 || e.sectors === 0) return null
  }
  const partitions: Partition[] = []
  const areas: ByteRange[] = [{ offset: 0, length: MBR_SIZE }]
  const warnings: string[] = []
  for (const e of used) {
    const p: Partition = {
      number: e.slot + 1,
      start: e.firstLba * MBR_SIZE,
      length: e.sectors * MBR_SIZE,
      type: hex(e.type),
      name: '',
      container: EXTENDED_TYPES.has(e.type),
    }
    checkInside(source, p, where)
    partitions.push(p)
  }
  const containers = partitions.filter((p) => p.container)
  if (containers.length > 1) throw new Error(`${where}: ${containers.length} extended partitions (at most one is allowed)`)
  if (containers[0]) await readEbrChain(source, containers[0], partitions, areas, warnings)
  return { kind: 'mbr', sectorSize: MBR_SIZE, areas: mergeRanges([areas]), partitions, warnings }
}

/** Follow the EBR chain of an extended partition, adding logical partitions and EBR areas. */
async function readEbrChain(source: Source, container: Partition, partitions: Partition[], areas: ByteRange[], warnings: string[]): Promise<void> {
  const base = container.start / MBR_SIZE
  const seen = new Set<number>()
  let ebrLba = base
  let number = 5
  for (;;) {
    const where = `EBR at byte ${ebrLba * MBR_SIZE} of ${source.path}`
    if (seen.has(ebrLba)) throw new Error(`${where}: the EBR chain loops back to an EBR already read`)
    if (seen.size >= MAX_LOGICAL_PARTITIONS) throw new Error(`${where}: more than ${MAX_LOGICAL_PARTITIONS} logical partitions`)
    if (ebrLba * MBR_SIZE + MBR_SIZE > container.start + container.length) {
      throw new Error(`${where}: lies outside extended partition ${container.number} (bytes ${container.start}+${container.length})`)
    }
    seen.add(ebrLba)
    const ebr = await source.read(ebrLba * MBR_SIZE, MBR_SIZE)
    if (!hasBootSignature(ebr)) {
      // An empty extended partition may hold a blank first EBR.
      if (ebrLba === base && ebr.every((b) => b === 0)) {
        warnings.push(`extended partition ${container.number} holds no logical partitions`)
        return
      }
      throw new Error(`${where}: no 0x55AA signature (the logical partition chain is broken)`)
    }
    areas.push({ offset: ebrLba * MBR_SIZE, length: MBR_SIZE })
    const [logical, link] = mbrEntries(ebr)
    if (logical.type !== 0 && logical.sectors > 0) {
      const p: Partition = {
        number: number++,
        start: (ebrLba + logical.firstLba) * MBR_SIZE,
        length: logical.sectors * MBR_SIZE,
        type: hex(logical.type),
        name: '',
        container: false,
      }
      if (p.start < container.start || p.start + p.length > container.start + container.length) {
        throw new Error(`${where}: logical partition ${p.number} (bytes ${p.start}+${p.length}) lies outside extended partition ${container.number}`)
      }
      checkInside(source, p, where)
      partitions.push(p)
    }
    if (link.type === 0 || link.sectors === 0) return
    if (!EXTENDED_TYPES.has(link.type)) throw new Error(`${where}: the link to the next EBR has type ${hex(link.type)}, not an extended type`)
    ebrLba = base + link.firstLba
  }
}

function checkInside(source: Source, p: Partition, where: string): void {
  if (p.start + p.length > source.size) {
    throw new Error(`${where}: partition ${p.number} (bytes ${p.start}+${p.length}) ends at ${p.start + p.length}, past the end of ${source.path} (size ${source.size})`)
  }
}

interface GptHeader {
  readonly myLba: number
  readonly alternateLba: number
  readonly entriesLba: number
  readonly entryCount: number
  readonly entrySize: number
  readonly entriesCrc: number
}

/** Parse and check a GPT header sector; returns the header or the reason it is unusable. */
function parseGptHeader(sector: Buffer, lba: number, sectorSize: number): GptHeader | string {
  if (sector.toString('latin1', 0, 8) !== 'EFI PART') return 'no "EFI PART" signature'
  const headerSize = sector.readUInt32LE(12)
  if (headerSize < 92 || headerSize > sectorSize) return `header size ${headerSize} is out of range`
  const copy = Buffer.from(sector.subarray(0, headerSize))
  const stored = copy.readUInt32LE(16)
  copy.writeUInt32LE(0, 16)
  if (crc32(copy) !== stored) return 'header CRC32 mismatch'
  const myLba = Number(sector.readBigUInt64LE(24))
  if (myLba !== lba) return `header says it is at LBA ${myLba}`
  const entrySize = sector.readUInt32LE(84)
  const entryCount = sector.readUInt32LE(80)
  if (entrySize < 128 || entrySize % 128 !== 0 || (entrySize & (entrySize - 1)) !== 0) return `partition entry size ${entrySize} is not 128·2^n`
  if (entryCount * entrySize > MAX_GPT_ENTRIES_BYTES) return `${entryCount} partition entries of ${entrySize} bytes is implausibly many`
  return {
    myLba,
    alternateLba: Number(sector.readBigUInt64LE(32)),
    entriesLba: Number(sector.readBigUInt64LE(72)),
    entryCount,
    entrySize,
    entriesCrc: sector.readUInt32LE(88),
  }
}

/** A GUID as text: the first three fields are little-endian, the last two big-endian. */
function guidText(b: Buffer): string {
  const h = (s: number, e: number) => b.subarray(s, e).toString('hex')
  const le = (s: number, e: number) => Buffer.from(b.subarray(s, e)).reverse().toString('hex')
  return `${le(0, 4)}-${le(4, 6)}-${le(6, 8)}-${h(8, 10)}-${h(10, 16)}`
}

interface GptCopy {
  readonly header: GptHeader
  readonly entries: Buffer
}

/** Read one GPT copy (header at `lba`) and check both CRCs; returns the copy or the reason it is unusable. */
async function readGptCopy(source: Source, lba: number, sectorSize: number, lastLba: number): Promise<GptCopy | string> {
  if (lba < 1 || lba > lastLba) return `LBA ${lba} is outside the disk (last LBA ${lastLba})`
  const parsed = parseGptHeader(await source.read(lba * sectorSize, sectorSize), lba, sectorSize)
  if (typeof parsed === 'string') return parsed
  const bytes = parsed.entryCount * parsed.entrySize
  const sectors = Math.ceil(bytes / sectorSize)
  if (parsed.entriesLba < 1 || parsed.entriesLba + sectors - 1 > lastLba) return `entries array at LBA ${parsed.entriesLba} is outside the disk`
  const entries = await source.read(parsed.entriesLba * sectorSize, bytes)
  if (crc32(entries) !== parsed.entriesCrc) return 'partition entries CRC32 mismatch'
  return { header: parsed, entries }
}

/** The byte ranges one GPT copy occupies: its header sector and its entries array. */
function gptCopyAreas(h: Pick<GptHeader, 'myLba' | 'entriesLba' | 'entryCount' | 'entrySize'>, sectorSize: number): ByteRange[] {
  const entriesLength = Math.ceil((h.entryCount * h.entrySize) / sectorSize) * sectorSize
  return [
    { offset: h.myLba * sectorSize, length: sectorSize },
    { offset: h.entriesLba * sectorSize, length: entriesLength },
  ]
}

async function readGpt(source: Source): Promise<PartitionTable> {
  // The header is at LBA 1: byte 512 on 512-byte-sector disks, byte 4096 on 4Kn disks.
  let sectorSize = 512
  for (const size of [512, 4096]) {
    const sig = await source.read(size, 8)
    if (sig.toString('latin1') === 'EFI PART') {
      sectorSize = size
      break
    }
  }
  const lastLba = Math.floor(source.size / sectorSize) - 1
  const warnings: string[] = []
  const primary = await readGptCopy(source, 1, sectorSize, lastLba)
  const backupLba = typeof primary === 'string' ? lastLba : primary.header.alternateLba
  const backup = await readGptCopy(source, backupLba, sectorSize, lastLba)
  let table: GptCopy
  if (typeof primary !== 'string') {
    table = primary
    if (typeof backup === 'string') warnings.push(`backup GPT at LBA ${backupLba} of ${source.path} is unusable (${backup}); the primary GPT is used`)
  } else if (typeof backup !== 'string') {
    table = backup
    warnings.push(`primary GPT at LBA 1 of ${source.path} is unusable (${primary}); the backup GPT at LBA ${backupLba} is used`)
  } else {
    throw new Error(
      `${source.path} has a protective MBR but no usable GPT: primary at LBA 1 (${sectorSize}-byte sectors): ${primary}; backup at LBA ${backupLba}: ${backup}`,
    )
  }

  // The table occupies LBA 0 (protective MBR), the primary header and entries, and the backup entries and header.
  const h = table.header
  const primaryHeader = h.myLba === 1 ? h : { ...h, myLba: 1, entriesLba: 2 }
  const areas: ByteRange[] = [{ offset: 0, length: sectorSize }, ...gptCopyAreas(primaryHeader, sectorSize)]
  if (typeof backup !== 'string') {
    areas.push(...gptCopyAreas(backup.header, sectorSize))
  } else if (backupLba >= 1 && backupLba <= lastLba) {
    // Where the backup should be (entries just before the header): copied as-is, damaged or not.
    const entrySectors = Math.ceil((h.entryCount * h.entrySize) / sectorSize)
    areas.push(...gptCopyAreas({ ...h, myLba: backupLba, entriesLba: Math.max(1, backupLba - entrySectors) }, sectorSize))
  }

  const partitions: Partition[] = []
  for (let i = 0; i < h.entryCount; i++) {
    const e = table.entries.subarray(i * h.entrySize, (i + 1) * h.entrySize)
    const type = guidText(e.subarray(0, 16))
    if (type === '00000000-0000-0000-0000-000000000000') continue
    const first = Number(e.readBigUInt64LE(32))
    const last = Number(e.readBigUInt64LE(40))
    if (last < first) throw new Error(`GPT of ${source.path}: partition ${i + 1} ends (LBA ${last}) before it starts (LBA ${first})`)
    const p: Partition = {
      number: i + 1,
      start: first * sectorSize,
      length: (last - first + 1) * sectorSize,
      type,
      name: e.toString('utf16le', 56, 128).replace(/\0.*$/s, ''),
      container: false,
    }
    checkInside(source, p, `GPT of ${source.path}`)
    partitions.push(p)
  }
  return { kind: 'gpt', sectorSize, areas: mergeRanges([areas]), partitions, warnings }
}
