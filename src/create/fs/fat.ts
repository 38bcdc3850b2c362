/**
 * FAT12/16/32 reader: the boot sector's BPB gives the layout, the FAT gives
 * the allocated clusters. Used = the reserved sectors (boot sector, FSInfo,
 * backup boot sector), every FAT copy, the fixed root directory (FAT12/16)
 * and every cluster whose FAT entry is neither free nor a bad-cluster mark.
 *
 * Bad clusters are left out: they belong to no file or directory, reading
 * them may fail on the source disk, and the FAT written to the target keeps
 * their mark, so nothing on the target ever reads them (partclone does the same).
 */
import type { FsReader, FsScan, Volume } from './types.js'
import { RangeBuilder } from '../ranges.js'

export type FatType = 'fat12' | 'fat16' | 'fat32'

/** The volume layout a BPB describes, in bytes relative to the volume start. */
export interface FatLayout {
  readonly type: FatType
  readonly bytesPerSector: number
  readonly clusterBytes: number
  /** Start of the first FAT copy. */
  readonly fatOffset: number
  /** Size of one FAT copy. */
  readonly fatBytes: number
  readonly fatCount: number
  /** The FAT copy that holds the allocation (FAT32 may disable mirroring). */
  readonly activeFat: number
  /** Start of cluster 2 (everything before it is reserved sectors, FATs and the fixed root directory). */
  readonly dataOffset: number
  /** Number of data clusters: valid cluster numbers are 2 .. clusterCount+1. */
  readonly clusterCount: number
  /** Bytes the filesystem covers (total sectors × sector size). */
  readonly totalBytes: number
}

/** Cluster-count limits from the FAT specification: fewer than 4085 is FAT12, fewer than 65525 FAT16. */
const FAT12_MAX_CLUSTERS = 4084
const FAT16_MAX_CLUSTERS = 65524
/** FAT32 entries are 28 bits; 0x0FFFFFF6 is the highest possible cluster number. */
const FAT32_MAX_CLUSTERS = 0x0ffffff5
const BAD_MARK: Record<FatType, number> = { fat12: 0xff7, fat16: 0xfff7, fat32: 0x0ffffff7 }
/** FAT32 tables are read this many bytes at a time (a multiple of 4). */
const FAT32_CHUNK = 4 * 1024 * 1024

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0

/** Bytes of FAT that hold `entries` entries. */
function fatEntriesBytes(type: FatType, entries: number): number {
  return type === 'fat12' ? Math.ceil((entries * 3) / 2) : entries * (type === 'fat16' ? 2 : 4)
}

/**
 * Parse and check a FAT boot sector (at least its first 512 bytes). Throws an
 * Error saying which field is wrong; `where` names the volume in messages.
 */
export function parseFatBootSector(boot: Buffer, where: string): FatLayout {
  const bad = (what: string): Error => new Error(`${where}: not a usable FAT boot sector: ${what}`)
  if (boot.length < 512) throw bad(`only ${boot.length} bytes, a boot sector has 512`)
  const oem = boot.toString('latin1', 3, 11)
  if (oem === 'NTFS    ') throw bad('OEM name "NTFS    ": this is an NTFS volume')
  if (oem === 'EXFAT   ') throw bad('OEM name "EXFAT   ": this is an exFAT volume')
  if (boot[510] !== 0x55 || boot[511] !== 0xaa) {
    throw bad(`signature at byte 510 is 0x${boot.readUInt16BE(510).toString(16).padStart(4, '0')}, expected 0x55aa`)
  }
  const bytesPerSector = boot.readUInt16LE(11)
  const sectorsPerCluster = boot[13]
  const reservedSectors = boot.readUInt16LE(14)
  const fatCount = boot[16]
  const rootEntries = boot.readUInt16LE(17)
  const totalSectors16 = boot.readUInt16LE(19)
  const media = boot[21]
  const fatSectors16 = boot.readUInt16LE(22)
  const totalSectors32 = boot.readUInt32LE(32)
  const fatSectors32 = boot.readUInt32LE(36)

  if (!isPowerOfTwo(bytesPerSector) || bytesPerSector < 512 || bytesPerSector > 4096) {
    throw bad(`bytes per sector is ${bytesPerSector} (must be 512, 1024, 2048 or 4096)`)
  }
  if (!isPowerOfTwo(sectorsPerCluster)) throw bad(`sectors per cluster is ${sectorsPerCluster} (must be a power of two, 1..128)`)
  if (reservedSectors === 0) throw bad('reserved sector count is 0 (the boot sector itself is reserved)')
  if (fatCount === 0) throw bad('number of FATs is 0')
  if (media !== 0xf0 && media < 0xf8) throw bad(`media byte is 0x${media.toString(16)} (must be 0xf0 or 0xf8..0xff)`)

  const totalSectors = totalSectors16 !== 0 ? totalSectors16 : totalSectors32
  if (totalSectors === 0) throw bad('total sector count is 0')
  const fatSectors = fatSectors16 !== 0 ? fatSectors16 : fatSectors32
  if (fatSectors === 0) throw bad('sectors per FAT is 0')
  const rootDirSectors = Math.ceil((rootEntries * 32) / bytesPerSector)
  const dataSector = reservedSectors + fatCount * fatSectors + rootDirSectors
  if (dataSector >= totalSectors) {
    throw bad(`reserved sectors, FATs and root directory end at sector ${dataSector}, past the ${totalSectors} sectors of the filesystem`)
  }
  const clusterCount = Math.floor((totalSectors - dataSector) / sectorsPerCluster)
  if (clusterCount === 0) throw bad(`the data area (${totalSectors - dataSector} sectors) holds no whole cluster of ${sectorsPerCluster} sectors`)

  // The FAT type is the one the cluster count gives (FAT spec). mkfs.fat -F 32 also makes
  // FAT32 volumes with fewer than 65525 clusters: their BPB has the FAT32 form (16-bit FAT
  // size 0) and Linux and fsck.fat read them as FAT32, so that form wins over a low count.
  const fat32Form = fatSectors16 === 0
  let type: FatType = clusterCount <= FAT12_MAX_CLUSTERS ? 'fat12' : clusterCount <= FAT16_MAX_CLUSTERS ? 'fat16' : 'fat32'
  if (type === 'fat32' && !fat32Form) {
    throw bad(`${clusterCount} clusters make it FAT32, but the BPB has the FAT12/16 form (16-bit FAT size ${fatSectors16})`)
  }
  if (fat32Form) type = 'fat32'

  let activeFat = 0
  if (type === 'fat32') {
    if (rootEntries !== 0) throw bad(`FAT32 volume with ${rootEntries} fixed root directory entries (must be 0)`)
    if (clusterCount > FAT32_MAX_CLUSTERS) throw bad(`${clusterCount} clusters, more than FAT32's ${FAT32_MAX_CLUSTERS}`)
    const extFlags = boot.readUInt16LE(40)
    if (extFlags & 0x80) activeFat = extFlags & 0x0f
    if (activeFat >= fatCount) throw bad(`active FAT is ${activeFat} but there are only ${fatCount} FATs`)
    const rootCluster = boot.readUInt32LE(44)
    if (rootCluster < 2 || rootCluster > clusterCount + 1) {
      throw bad(`root directory cluster ${rootCluster} is outside clusters 2..${clusterCount + 1}`)
    }
  } else if (rootEntries === 0) {
    throw bad(`${type.toUpperCase()} volume with 0 root directory entries`)
  }

  const fatBytes = fatSectors * bytesPerSector
  const needed = fatEntriesBytes(type, clusterCount + 2)
  if (needed > fatBytes) {
    throw bad(`a FAT of ${fatSectors} sectors (${fatBytes} bytes) is too small for ${clusterCount} clusters (${type.toUpperCase()} needs ${needed} bytes)`)
  }
  return {
    type,
    bytesPerSector,
    clusterBytes: sectorsPerCluster * bytesPerSector,
    fatOffset: reservedSectors * bytesPerSector,
    fatBytes,
    fatCount,
    activeFat,
    dataOffset: dataSector * bytesPerSector,
    clusterCount,
    totalBytes: totalSectors * bytesPerSector,
  }
}

/**
 * Calls `emit(firstCluster, count)` for each run of clusters whose entry in the
 * active FAT is neither free (0) nor the bad-cluster mark.
 */
async function allocatedClusterRuns(volume: Volume, layout: FatLayout, emit: (first: number, count: number) => void): Promise<void> {
  const { type, clusterCount } = layout
  const fatStart = volume.base + layout.fatOffset + layout.activeFat * layout.fatBytes
  const end = clusterCount + 2 // one past the last cluster number
  const badMark = BAD_MARK[type]
  let runStart = -1
  const visit = (cluster: number, entry: number): void => {
    const used = entry !== 0 && entry !== badMark
    if (used && runStart < 0) runStart = cluster
    else if (!used && runStart >= 0) {
      emit(runStart, cluster - runStart)
      runStart = -1
    }
  }

  if (type === 'fat32') {
    // Large tables (up to 1 GiB): read in chunks, 28-bit entries (the top 4 bits are reserved).
    const chunk = Buffer.allocUnsafeSlow(Math.min(FAT32_CHUNK, end * 4))
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.length)
    for (let first = 0; first < end; first += chunk.length / 4) {
      const count = Math.min(chunk.length / 4, end - first)
      await volume.source.read(fatStart + first * 4, count * 4, chunk)
      for (let i = first === 0 ? 2 : 0; i < count; i++) visit(first + i, view.getUint32(i * 4, true) & 0x0fffffff)
    }
  } else {
    // FAT12/16 tables are at most 128 KiB: one read.
    const fat = await volume.source.read(fatStart, fatEntriesBytes(type, end))
    if (type === 'fat16') {
      for (let c = 2; c < end; c++) visit(c, fat.readUInt16LE(c * 2))
    } else {
      // 12-bit entries: cluster c is in the 16 bits at byte c*1.5, low 12 bits for even c, high 12 for odd.
      for (let c = 2; c < end; c++) {
        const at = c + (c >> 1)
        const pair = fat[at] | (fat[at + 1] << 8)
        visit(c, c & 1 ? pair >> 4 : pair & 0xfff)
      }
    }
  }
  if (runStart >= 0) emit(runStart, end - runStart)
}

export const fatReader: FsReader = {
  mode: 'fat',

  detect(head: Buffer): boolean {
    try {
      parseFatBootSector(head, 'volume')
      return true
    } catch {
      return false
    }
  },

  async scan(volume: Volume): Promise<FsScan> {
    const where = `FAT volume at byte ${volume.base} of ${volume.source.path}`
    const layout = parseFatBootSector(await volume.source.read(volume.base, 512), where)
    if (layout.totalBytes > volume.length) {
      throw new Error(
        `${where}: the boot sector says the filesystem is ${layout.totalBytes} bytes, past the end of the volume (${volume.length} bytes)`,
      )
    }
    const ranges = new RangeBuilder()
    // Reserved sectors, all FAT copies and the fixed root directory are contiguous and end where cluster 2 starts.
    ranges.add(volume.base, layout.dataOffset)
    const clusterStart = volume.base + layout.dataOffset
    await allocatedClusterRuns(volume, layout, (first, count) => {
      ranges.add(clusterStart + (first - 2) * layout.clusterBytes, count * layout.clusterBytes)
    })
    return { fs: layout.type, blockSize: layout.clusterBytes, ranges: ranges.ranges() }
  },
}
