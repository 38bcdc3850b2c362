/**
 * NTFS reader: the used clusters of an NTFS volume, from its $Bitmap file
 * (MFT record 6), without mounting.
 *
 * Path: boot sector (geometry) → MFT record 0 ($MFT, whose $DATA run list
 * says where every MFT record lies) → MFT record 6 ($Bitmap) → its unnamed
 * $DATA (one bit per cluster, LSB first) → used byte ranges.
 *
 * Two regions the bitmap cannot speak for are added: the $Boot area at the
 * start, and the backup boot sector. mkntfs (and Windows) make the boot
 * sector's total-sectors count one less than the volume's sectors and write
 * the backup into that last sector, i.e. at byte totalSectors × bytesPerSector,
 * outside every cluster. ntfsfix checks the last sector of the device it is
 * given instead, so when the volume is longer than the filesystem that sector
 * is sent too.
 */
import type { ByteRange } from '../../torrent/extents.js'
import { RangeBuilder, setBitRuns } from '../ranges.js'
import type { FsReader, FsScan, Volume } from './types.js'

const OEM_ID = 'NTFS    '
/** mkntfs's $Boot file: the boot sector plus bootstrap code. */
const BOOT_AREA_BYTES = 8192
/** Update-sequence stride: the fixup protects the last two bytes of every 512 bytes, whatever the sector size. */
const FIXUP_STRIDE = 512
/** Windows's largest cluster. */
const MAX_CLUSTER_BYTES = 2 * 1024 * 1024
/** Bitmap bytes read per step (8 Mi clusters), so a huge volume's bitmap is never held whole. */
const BITMAP_CHUNK_BYTES = 1024 * 1024

const MFT_RECORD_MFT = 0
const MFT_RECORD_BITMAP = 6

const ATTR_ATTRIBUTE_LIST = 0x20
const ATTR_DATA = 0x80
const ATTR_END = 0xffffffff
const ATTR_FLAG_COMPRESSED = 0x0001
const ATTR_FLAG_ENCRYPTED = 0x4000

/** Volume geometry from the boot sector (BPB). */
export interface NtfsGeometry {
  readonly bytesPerSector: number
  readonly clusterSize: number
  /** Sectors of the filesystem; the backup boot sector is the sector just past them. */
  readonly totalSectors: number
  readonly clusterCount: number
  readonly mftLcn: number
  readonly mftRecordSize: number
}

/** One run of a non-resident attribute: `length` clusters from `vcn`, at `lcn` (null: sparse, reads as zeros). */
interface Run {
  readonly vcn: number
  readonly lcn: number | null
  readonly length: number
}

/** An attribute header as found in an MFT record (only what this reader needs). */
interface Attribute {
  readonly type: number
  readonly nameLength: number
  readonly flags: number
  /** Resident value, or null for a non-resident attribute. */
  readonly value: Buffer | null
  /** Non-resident only: first and last VCN this record's run list covers, the run list, and the value's size. */
  readonly lowestVcn: number
  readonly highestVcn: number
  readonly runs: readonly Run[]
  readonly dataSize: number
}

/** Decode the BPB, or return a reason it is not a sane NTFS boot sector. */
export function parseNtfsBoot(boot: Buffer): NtfsGeometry | string {
  if (boot.length < 512) return `boot sector is ${boot.length} bytes, 512 expected`
  if (boot.toString('latin1', 3, 11) !== OEM_ID) return `OEM id is ${JSON.stringify(boot.toString('latin1', 3, 11))}, not "NTFS    "`
  if (boot.readUInt16LE(510) !== 0xaa55) return 'boot sector signature 0x55AA missing at byte 510'
  const bytesPerSector = boot.readUInt16LE(11)
  if (!isPowerOfTwo(bytesPerSector) || bytesPerSector < 256 || bytesPerSector > 4096) {
    return `bytes per sector ${bytesPerSector} is not a power of two in 256..4096`
  }
  const spcCode = boot[13]
  // Above 0x80 the byte is a negative exponent: 2^(256 - code) sectors (clusters of 128 KiB and more).
  const sectorsPerCluster = spcCode > 0x80 ? 2 ** (256 - spcCode) : spcCode
  if (!isPowerOfTwo(sectorsPerCluster)) return `sectors per cluster code 0x${spcCode.toString(16)} is not a power of two`
  const clusterSize = sectorsPerCluster * bytesPerSector
  if (clusterSize > MAX_CLUSTER_BYTES) return `cluster size ${clusterSize} exceeds ${MAX_CLUSTER_BYTES}`
  const totalSectors = readU64(boot, 0x28)
  const clusterCount = Math.floor(totalSectors / sectorsPerCluster)
  if (clusterCount === 0) return `total sectors ${totalSectors} makes no whole cluster`
  const mftLcn = readU64(boot, 0x30)
  if (mftLcn >= clusterCount) return `$MFT cluster ${mftLcn} is past the last cluster ${clusterCount - 1}`
  // Positive: clusters per record; negative: the record is 2^(-code) bytes.
  const recordCode = boot.readInt8(0x40)
  const mftRecordSize = recordCode > 0 ? recordCode * clusterSize : recordCode < 0 ? 2 ** -recordCode : 0
  if (!isPowerOfTwo(mftRecordSize) || mftRecordSize < FIXUP_STRIDE || mftRecordSize > 65536) {
    return `MFT record size code ${recordCode} gives ${mftRecordSize} bytes, not a power of two in 512..65536`
  }
  return { bytesPerSector, clusterSize, totalSectors, clusterCount, mftLcn, mftRecordSize }
}

/** Apply an MFT record's update-sequence (fixup) array in place; throws naming the record and sector on a mismatch. */
export function applyFixups(record: Buffer, where: string): void {
  const usaOffset = record.readUInt16LE(4)
  const usaCount = record.readUInt16LE(6)
  const strides = record.length / FIXUP_STRIDE
  if (usaCount !== strides + 1 || usaOffset < 0x28 || usaOffset + usaCount * 2 > record.length) {
    throw new Error(`${where}: update sequence array (offset ${usaOffset}, ${usaCount} entries) does not fit a ${record.length}-byte record`)
  }
  const usn = record.readUInt16LE(usaOffset)
  for (let i = 0; i < strides; i++) {
    const end = (i + 1) * FIXUP_STRIDE - 2
    const found = record.readUInt16LE(end)
    if (found !== usn) {
      throw new Error(
        `${where}: update sequence mismatch at byte ${end} (0x${found.toString(16)}, expected 0x${usn.toString(16)}): torn write or damaged record`,
      )
    }
    record.writeUInt16LE(record.readUInt16LE(usaOffset + 2 + i * 2), end)
  }
}

/** Decode a mapping-pairs array (run list) starting at `pos`; LCNs are checked against the volume's clusters. */
export function decodeRunList(buf: Buffer, pos: number, end: number, firstVcn: number, clusterCount: number, where: string): Run[] {
  const runs: Run[] = []
  let vcn = firstVcn
  let lcn = 0
  while (true) {
    if (pos >= end) throw new Error(`${where}: run list runs past its attribute without a terminator`)
    const header = buf[pos++]
    if (header === 0) break
    const lengthBytes = header & 0x0f
    const offsetBytes = header >> 4
    if (lengthBytes === 0 || lengthBytes > 8 || offsetBytes > 8 || pos + lengthBytes + offsetBytes > end) {
      throw new Error(`${where}: malformed run header 0x${header.toString(16)} at byte ${pos - 1}`)
    }
    const length = readVarInt(buf, pos, lengthBytes, false)
    pos += lengthBytes
    if (length <= 0) throw new Error(`${where}: run at VCN ${vcn} has length ${length}`)
    if (offsetBytes === 0) {
      runs.push({ vcn, lcn: null, length })
    } else {
      lcn += readVarInt(buf, pos, offsetBytes, true)
      pos += offsetBytes
      if (lcn < 0 || lcn + length > clusterCount) {
        throw new Error(`${where}: run of ${length} clusters at LCN ${lcn} lies past the volume's ${clusterCount} clusters`)
      }
      runs.push({ vcn, lcn, length })
    }
    vcn += length
  }
  return runs
}

export const ntfsReader: FsReader = {
  mode: 'ntfs',

  detect(head: Buffer): boolean {
    return typeof parseNtfsBoot(head.subarray(0, 512)) !== 'string'
  },

  async scan(volume: Volume): Promise<FsScan> {
    const where = `NTFS at byte ${volume.base} of ${volume.source.path}`
    const geo = parseNtfsBoot(await volume.source.read(volume.base, 512))
    if (typeof geo === 'string') throw new Error(`${where}: not a usable NTFS boot sector: ${geo}`)
    const fsBytes = geo.totalSectors * geo.bytesPerSector
    if (fsBytes > volume.length) {
      throw new Error(`${where}: boot sector claims ${geo.totalSectors} sectors (${fsBytes} bytes) but the volume is ${volume.length} bytes`)
    }

    const mft = await readMftRecord(volume, geo, mftRunsFromBoot(geo), MFT_RECORD_MFT, where)
    const mftWhere = `${where}: MFT record 0 ($MFT)`
    const mftData = unnamedData(mft, geo, (MFT_RECORD_BITMAP + 1) * geo.mftRecordSize, mftWhere)
    if (mftData.value) throw new Error(`${mftWhere}: $DATA is resident, which $MFT's never is: the record is damaged`)
    const bitmapRecord = await readMftRecord(volume, geo, mftData.runs, MFT_RECORD_BITMAP, where)
    const bitmapBytes = Math.ceil(geo.clusterCount / 8)
    const bitmap = unnamedData(bitmapRecord, geo, bitmapBytes, `${where}: MFT record 6 ($Bitmap)`)

    const out = new RangeBuilder()
    out.add(volume.base, Math.min(BOOT_AREA_BYTES, volume.length))
    for (let byte = 0; byte < bitmapBytes; byte += BITMAP_CHUNK_BYTES) {
      const chunkBytes = Math.min(BITMAP_CHUNK_BYTES, bitmapBytes - byte)
      const chunk = bitmap.value
        ? bitmap.value.subarray(byte, byte + chunkBytes)
        : await readRuns(volume, geo, bitmap.runs, byte, chunkBytes, `${where}: $Bitmap`)
      const firstCluster = byte * 8
      setBitRuns(chunk, Math.min(chunkBytes * 8, geo.clusterCount - firstCluster), (first, count) => {
        out.add(volume.base + (firstCluster + first) * geo.clusterSize, count * geo.clusterSize)
      })
    }
    for (const r of backupBootSectors(geo, volume.length)) out.add(volume.base + r.offset, r.length)
    return { fs: 'ntfs', blockSize: geo.clusterSize, ranges: out.ranges() }
  },
}

/**
 * The backup boot sector, relative to the volume: at totalSectors × bytesPerSector
 * where mkntfs and Windows write it, and the volume's last sector where ntfsfix looks
 * (the same sector unless the volume is longer than the filesystem).
 */
function backupBootSectors(geo: NtfsGeometry, volumeLength: number): ByteRange[] {
  const out: ByteRange[] = []
  const backup = geo.totalSectors * geo.bytesPerSector
  if (backup + geo.bytesPerSector <= volumeLength) out.push({ offset: backup, length: geo.bytesPerSector })
  const last = (Math.floor(volumeLength / geo.bytesPerSector) - 1) * geo.bytesPerSector
  if (last > backup) out.push({ offset: last, length: geo.bytesPerSector })
  return out
}

/** Until $MFT's own run list is known, record 0 is found where the boot sector says $MFT starts. */
function mftRunsFromBoot(geo: NtfsGeometry): Run[] {
  const clusters = Math.ceil(geo.mftRecordSize / geo.clusterSize)
  if (geo.mftLcn + clusters > geo.clusterCount) return [{ vcn: 0, lcn: geo.mftLcn, length: geo.clusterCount - geo.mftLcn }]
  return [{ vcn: 0, lcn: geo.mftLcn, length: clusters }]
}

/** Read MFT record `index` through $MFT's run list, check its header, and apply its fixups. */
async function readMftRecord(volume: Volume, geo: NtfsGeometry, mftRuns: readonly Run[], index: number, where: string): Promise<Buffer> {
  const at = `${where}: MFT record ${index}`
  const record = await readRuns(volume, geo, mftRuns, index * geo.mftRecordSize, geo.mftRecordSize, at)
  const magic = record.toString('latin1', 0, 4)
  if (magic === 'BAAD') throw new Error(`${at} is marked BAAD (damaged by a failed multi-sector write); run chkdsk`)
  if (magic !== 'FILE') throw new Error(`${at} has magic ${JSON.stringify(magic)}, not "FILE": $MFT location or record size is wrong`)
  applyFixups(record, at)
  if ((record.readUInt16LE(0x16) & 0x0001) === 0) throw new Error(`${at} is not in use`)
  // NTFS 3.1 records (update sequence at 0x30 or later) carry their own number at 0x2C.
  if (record.readUInt16LE(4) >= 0x30 && record.readUInt32LE(0x2c) !== index) {
    throw new Error(`${at} says it is record ${record.readUInt32LE(0x2c)}`)
  }
  return record
}

/** Walk a record's attributes. */
function attributes(record: Buffer, clusterCount: number, where: string): Attribute[] {
  const out: Attribute[] = []
  const used = record.readUInt32LE(0x18)
  if (used > record.length) throw new Error(`${where}: bytes in use ${used} exceed the ${record.length}-byte record`)
  let pos = record.readUInt16LE(0x14)
  while (true) {
    if (pos + 4 > used) throw new Error(`${where}: attribute list runs past bytes in use (${used}) without an end marker`)
    const type = record.readUInt32LE(pos)
    if (type === ATTR_END) break
    const length = record.readUInt32LE(pos + 4)
    if (length < 0x18 || pos + length > used) throw new Error(`${where}: attribute 0x${type.toString(16)} at byte ${pos} has bad length ${length}`)
    const nonResident = record[pos + 8] !== 0
    const nameLength = record[pos + 9]
    const flags = record.readUInt16LE(pos + 0x0c)
    const attrWhere = `${where}: attribute 0x${type.toString(16)} at byte ${pos}`
    if (!nonResident) {
      const valueLength = record.readUInt32LE(pos + 0x10)
      const valueOffset = record.readUInt16LE(pos + 0x14)
      if (valueOffset + valueLength > length) throw new Error(`${attrWhere}: resident value runs past the attribute`)
      const value = record.subarray(pos + valueOffset, pos + valueOffset + valueLength)
      out.push({ type, nameLength, flags, value, lowestVcn: 0, highestVcn: 0, runs: [], dataSize: valueLength })
    } else {
      if (length < 0x40) throw new Error(`${attrWhere}: non-resident header is only ${length} bytes`)
      const lowestVcn = readU64(record, pos + 0x10)
      const highestVcn = readU64(record, pos + 0x18)
      const runsOffset = record.readUInt16LE(pos + 0x20)
      if (runsOffset >= length) throw new Error(`${attrWhere}: run list offset ${runsOffset} is past the attribute`)
      const runs = decodeRunList(record, pos + runsOffset, pos + length, lowestVcn, clusterCount, attrWhere)
      out.push({ type, nameLength, flags, value: null, lowestVcn, highestVcn, runs, dataSize: readU64(record, pos + 0x30) })
    }
    pos += length
  }
  return out
}

/**
 * The record's unnamed $DATA attribute, uncompressed and unencrypted, whose
 * value (resident) or run list (this record's part of it) covers the first
 * `neededBytes` bytes.
 */
function unnamedData(record: Buffer, geo: NtfsGeometry, neededBytes: number, where: string): Attribute {
  const attrs = attributes(record, geo.clusterCount, where)
  const viaList = attrs.some((a) => a.type === ATTR_ATTRIBUTE_LIST)
    ? ' (the rest lives in other MFT records through an $ATTRIBUTE_LIST, which this reader does not follow)'
    : ''
  const data = attrs.find((a) => a.type === ATTR_DATA && a.nameLength === 0)
  if (!data) throw new Error(`${where}: no unnamed $DATA attribute in the record${viaList}`)
  if (data.flags & (ATTR_FLAG_COMPRESSED | ATTR_FLAG_ENCRYPTED)) {
    throw new Error(`${where}: $DATA is compressed or encrypted (flags 0x${data.flags.toString(16)})`)
  }
  if (data.dataSize < neededBytes) throw new Error(`${where}: $DATA holds ${data.dataSize} bytes, ${neededBytes} needed`)
  if (!data.value && (data.lowestVcn !== 0 || (data.highestVcn + 1) * geo.clusterSize < neededBytes)) {
    throw new Error(`${where}: $DATA run list covers VCN ${data.lowestVcn}..${data.highestVcn}, not the first ${neededBytes} bytes${viaList}`)
  }
  return data
}

/**
 * Read `length` bytes at byte `from` of a non-resident attribute's value; sparse
 * runs read as zeros. The runs' LCNs were checked against the volume when decoded.
 */
async function readRuns(volume: Volume, geo: NtfsGeometry, runs: readonly Run[], from: number, length: number, where: string): Promise<Buffer> {
  const out = Buffer.alloc(length)
  let done = 0
  for (const run of runs) {
    if (done === length) break
    const runStart = run.vcn * geo.clusterSize
    const runEnd = runStart + run.length * geo.clusterSize
    const pos = from + done
    if (pos >= runEnd || pos < runStart) continue
    const n = Math.min(runEnd - pos, length - done)
    if (run.lcn !== null) {
      await volume.source.read(volume.base + run.lcn * geo.clusterSize + (pos - runStart), n, out.subarray(done, done + n))
    }
    done += n
  }
  if (done < length) throw new Error(`${where}: bytes ${from + done}..${from + length} are not covered by the run list`)
  return out
}

function readU64(buf: Buffer, pos: number): number {
  const v = buf.readBigUInt64LE(pos)
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`64-bit field at byte ${pos} is ${v}, beyond 2^53`)
  return Number(v)
}

/** Little-endian integer of 1..8 bytes, sign-extended when `signed`. */
function readVarInt(buf: Buffer, pos: number, bytes: number, signed: boolean): number {
  let v = 0n
  for (let i = bytes - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[pos + i])
  if (signed && buf[pos + bytes - 1] & 0x80) v -= 1n << BigInt(bytes * 8)
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new Error(`run list value ${v} at byte ${pos} is beyond 2^53`)
  return Number(v)
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isInteger(Math.log2(n))
}
