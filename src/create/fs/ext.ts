/**
 * ext2/ext3/ext4 reader. The superblock (1024 bytes into the volume) gives the
 * layout, the group descriptors say where each block group's block bitmap
 * lives, and the bitmaps say which blocks (clusters, with bigalloc) are
 * allocated.
 *
 * Used = the boot area before the first group (block 0 when blocks are
 * 1 KiB) plus every block whose bitmap bit is set. All metadata lives in
 * allocated blocks: superblock and descriptor copies, reserved GDT blocks,
 * bitmaps, inode tables, the journal, the resize inode, the MMP block.
 *
 * A group flagged BLOCK_UNINIT (honoured only with uninit_bg/metadata_csum)
 * has no valid bitmap on disk; its used blocks are the ones the filesystem
 * defines for it: the superblock backup and descriptor blocks it carries,
 * plus every bitmap and inode table (of any group) stored inside it. Those
 * blocks are added to every group, a no-op on a healthy filesystem.
 */
import { RangeBuilder, setBitRuns } from '../ranges.js'
import type { FsReader, FsScan, Volume } from './types.js'

const SUPERBLOCK_OFFSET = 1024
const SUPERBLOCK_SIZE = 1024
const MAGIC_OFFSET = 0x38
const EXT_MAGIC = 0xef53

const STATE_VALID = 0x1
const STATE_ERROR = 0x2

const COMPAT_HAS_JOURNAL = 0x4
const COMPAT_SPARSE_SUPER2 = 0x200

const INCOMPAT_FILETYPE = 0x2
const INCOMPAT_RECOVER = 0x4
const INCOMPAT_JOURNAL_DEV = 0x8
const INCOMPAT_META_BG = 0x10
const INCOMPAT_64BIT = 0x80
const INCOMPAT_CSUM_SEED = 0x2000
/** filetype, recover, journal_dev, meta_bg, extents, 64bit, mmp, flex_bg, ea_inode, dirdata, csum_seed, largedir, inline_data, encrypt, casefold. */
const INCOMPAT_KNOWN = 0x2 | 0x4 | 0x8 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000

const RO_COMPAT_SPARSE_SUPER = 0x1
const RO_COMPAT_LARGE_FILE = 0x2
const RO_COMPAT_BTREE_DIR = 0x4
const RO_COMPAT_GDT_CSUM = 0x10
const RO_COMPAT_BIGALLOC = 0x200
const RO_COMPAT_METADATA_CSUM = 0x400
/** sparse_super, large_file, btree_dir, huge_file, gdt_csum, dir_nlink, extra_isize, quota, bigalloc, metadata_csum, readonly, project, shared_blocks, verity, orphan_present. */
const RO_COMPAT_KNOWN = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000

/** What ext3 understands; anything beyond (extents, flex_bg, 64bit, huge_file, ...) makes the filesystem ext4. */
const EXT3_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG
const EXT3_RO_COMPAT = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR

/** Group descriptor flag: the block bitmap on disk is not initialised (0x1 is INODE_UNINIT, 0x4 ITABLE_ZEROED). */
const BG_BLOCK_UNINIT = 0x2

/** Bitmap reads: adjacent bitmap blocks (up to this many apart) are read as one. */
const BITMAP_READ_GAP_BLOCKS = 8
const BITMAP_READ_MAX_BYTES = 4 * 1024 * 1024
/** Groups handled per batch are bounded by the bitmap bytes they hold in memory. */
const BATCH_BITMAP_BYTES = 16 * 1024 * 1024
const READS_IN_FLIGHT = 8

/** The superblock fields the reader needs, checked for consistency. */
interface ExtSuperblock {
  readonly fs: 'ext2' | 'ext3' | 'ext4'
  readonly blockSize: number
  /** Blocks per allocation unit (cluster); 1 without bigalloc. */
  readonly clusterRatio: number
  readonly blocksCount: number
  readonly firstDataBlock: number
  readonly blocksPerGroup: number
  readonly clustersPerGroup: number
  readonly groupCount: number
  /** Blocks of one group's inode table. */
  readonly inodeTableBlocks: number
  readonly descSize: number
  readonly descPerBlock: number
  /** Blocks of the whole descriptor table. */
  readonly gdtBlocks: number
  readonly reservedGdtBlocks: number
  readonly metaBg: boolean
  readonly firstMetaBg: number
  readonly sparseSuper: boolean
  /** The two backup groups of sparse_super2 (0 = none), or null without it. */
  readonly backupBgs: readonly [number, number] | null
  readonly is64bit: boolean
  /** Descriptor checksums make BLOCK_UNINIT meaningful (uninit_bg or metadata_csum). */
  readonly groupCsum: 'none' | 'crc16' | 'crc32c'
  readonly uuid: Buffer
  /** crc32c seed of metadata_csum checksums. */
  readonly csumSeed: number
}

/** One group's descriptor: where its metadata lives (block numbers) and its state. */
interface GroupDesc {
  readonly blockBitmap: number
  readonly inodeBitmap: number
  readonly inodeTable: number
  readonly flags: number
  readonly blockBitmapCsum: number
}

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0

/** Parse and check the 1024-byte superblock. Throws an Error saying which field is wrong. */
function parseSuperblock(sb: Buffer, where: string): ExtSuperblock {
  const magic = sb.readUInt16LE(MAGIC_OFFSET)
  if (magic !== EXT_MAGIC) {
    throw new Error(`${where}: no ext superblock (magic at byte ${SUPERBLOCK_OFFSET + MAGIC_OFFSET} is 0x${magic.toString(16)}, expected 0xef53)`)
  }
  const bad = (what: string): Error => new Error(`${where}: damaged ext superblock: ${what}`)
  const revLevel = sb.readUInt32LE(0x4c)
  // Revision 0 superblocks predate the feature fields: they hold no features.
  const compat = revLevel >= 1 ? sb.readUInt32LE(0x5c) : 0
  const incompat = revLevel >= 1 ? sb.readUInt32LE(0x60) : 0
  const roCompat = revLevel >= 1 ? sb.readUInt32LE(0x64) : 0

  if (incompat & INCOMPAT_JOURNAL_DEV) throw new Error(`${where}: this is an external ext journal device, not a filesystem`)
  const unknownIncompat = (incompat & ~INCOMPAT_KNOWN) >>> 0
  if (unknownIncompat) throw new Error(`${where}: ext filesystem uses unknown incompatible features 0x${unknownIncompat.toString(16)}`)
  const unknownRo = (roCompat & ~RO_COMPAT_KNOWN) >>> 0
  if (unknownRo) throw new Error(`${where}: ext filesystem uses unknown read-only-compatible features 0x${unknownRo.toString(16)}`)

  const metadataCsum = (roCompat & RO_COMPAT_METADATA_CSUM) !== 0
  if (metadataCsum) {
    const checksumType = sb.readUInt8(0x175)
    if (checksumType !== 1) throw bad(`s_checksum_type ${checksumType}, only 1 (crc32c) exists`)
    const stored = sb.readUInt32LE(0x3fc)
    const computed = crc32c(0xffffffff, sb.subarray(0, 0x3fc))
    if (stored !== computed) throw bad(`checksum 0x${stored.toString(16)} does not match its contents (0x${computed.toString(16)})`)
  }

  const state = sb.readUInt16LE(0x3a)
  if (incompat & INCOMPAT_RECOVER) {
    throw new Error(`${where}: the ext journal holds transactions not yet written to the filesystem (mounted, or not cleanly unmounted); unmount it or run e2fsck before imaging`)
  }
  if (!(state & STATE_VALID) || state & STATE_ERROR) {
    throw new Error(`${where}: the ext filesystem is ${state & STATE_ERROR ? 'marked as having errors' : 'not marked clean (mounted, or not cleanly unmounted)'}; run e2fsck -f on it before imaging`)
  }

  const logBlockSize = sb.readUInt32LE(0x18)
  if (logBlockSize > 6) throw bad(`s_log_block_size ${logBlockSize} (block size above 64 KiB)`)
  const blockSize = 1024 << logBlockSize
  const bitsPerBlock = blockSize * 8

  const bigalloc = (roCompat & RO_COMPAT_BIGALLOC) !== 0
  let clusterRatio = 1
  if (bigalloc) {
    const logClusterSize = sb.readUInt32LE(0x1c)
    if (logClusterSize < logBlockSize || logClusterSize - logBlockSize > 16) {
      throw bad(`s_log_cluster_size ${logClusterSize} with s_log_block_size ${logBlockSize}`)
    }
    clusterRatio = 2 ** (logClusterSize - logBlockSize)
  }
  const blocksPerGroup = sb.readUInt32LE(0x20)
  const clustersPerGroup = bigalloc ? sb.readUInt32LE(0x24) : blocksPerGroup
  if (clustersPerGroup === 0 || clustersPerGroup > bitsPerBlock || clustersPerGroup % 8 !== 0) {
    throw bad(`${clustersPerGroup} ${bigalloc ? 'clusters' : 'blocks'} per group (a multiple of 8 up to ${bitsPerBlock} expected)`)
  }
  if (blocksPerGroup !== clustersPerGroup * clusterRatio) {
    throw bad(`${blocksPerGroup} blocks per group is not ${clustersPerGroup} clusters of ${clusterRatio} blocks`)
  }

  const is64bit = (incompat & INCOMPAT_64BIT) !== 0
  const blocksCount = sb.readUInt32LE(0x04) + (is64bit ? sb.readUInt32LE(0x150) * 2 ** 32 : 0)
  const firstDataBlock = sb.readUInt32LE(0x14)
  const expectedFirst = blockSize === 1024 && clusterRatio === 1 ? 1 : 0
  if (firstDataBlock !== expectedFirst) throw bad(`s_first_data_block ${firstDataBlock} with ${blockSize}-byte blocks (expected ${expectedFirst})`)
  if (blocksCount <= firstDataBlock) throw bad(`s_blocks_count ${blocksCount}`)
  const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup)

  const inodesCount = sb.readUInt32LE(0x00)
  const inodesPerGroup = sb.readUInt32LE(0x28)
  if (inodesPerGroup === 0 || inodesPerGroup > bitsPerBlock) throw bad(`${inodesPerGroup} inodes per group`)
  if (inodesCount !== groupCount * inodesPerGroup) {
    throw bad(`s_inodes_count ${inodesCount} is not ${groupCount} groups × ${inodesPerGroup} inodes per group`)
  }
  const inodeSize = revLevel >= 1 ? sb.readUInt16LE(0x58) : 128
  if (!isPowerOfTwo(inodeSize) || inodeSize < 128 || inodeSize > blockSize) throw bad(`inode size ${inodeSize}`)

  const descSize = is64bit ? sb.readUInt16LE(0xfe) : 32
  if (is64bit && (!isPowerOfTwo(descSize) || descSize < 64 || descSize > 1024)) {
    throw bad(`s_desc_size ${descSize} (a power of two from 64 to 1024 expected with 64bit)`)
  }
  const descPerBlock = blockSize / descSize
  const gdtBlocks = Math.ceil(groupCount / descPerBlock)
  const metaBg = (incompat & INCOMPAT_META_BG) !== 0
  const firstMetaBg = metaBg ? sb.readUInt32LE(0x104) : 0
  if (firstMetaBg > gdtBlocks) throw bad(`s_first_meta_bg ${firstMetaBg} is past the ${gdtBlocks} descriptor blocks`)
  const reservedGdtBlocks = sb.readUInt16LE(0xce)
  if (reservedGdtBlocks > bitsPerBlock) throw bad(`${reservedGdtBlocks} reserved GDT blocks`)

  const backupBgs: [number, number] | null =
    compat & COMPAT_SPARSE_SUPER2 ? [sb.readUInt32LE(0x24c), sb.readUInt32LE(0x250)] : null
  const uuid = Buffer.from(sb.subarray(0x68, 0x78))
  const csumSeed = metadataCsum ? (incompat & INCOMPAT_CSUM_SEED ? sb.readUInt32LE(0x270) : crc32c(0xffffffff, uuid)) : 0

  const fs = incompat & ~EXT3_INCOMPAT || roCompat & ~EXT3_RO_COMPAT ? 'ext4' : compat & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2'
  return {
    fs,
    blockSize,
    clusterRatio,
    blocksCount,
    firstDataBlock,
    blocksPerGroup,
    clustersPerGroup,
    groupCount,
    inodeTableBlocks: Math.ceil((inodesPerGroup * inodeSize) / blockSize),
    descSize,
    descPerBlock,
    gdtBlocks,
    reservedGdtBlocks,
    metaBg,
    firstMetaBg,
    sparseSuper: (roCompat & RO_COMPAT_SPARSE_SUPER) !== 0,
    backupBgs,
    is64bit,
    groupCsum: metadataCsum ? 'crc32c' : roCompat & RO_COMPAT_GDT_CSUM ? 'crc16' : 'none',
    uuid,
    csumSeed,
  }
}

function groupFirstBlock(sb: ExtSuperblock, group: number): number {
  return sb.firstDataBlock + group * sb.blocksPerGroup
}

/** Blocks in a group: blocksPerGroup, fewer in the last one. */
function groupBlockCount(sb: ExtSuperblock, group: number): number {
  return Math.min(sb.blocksPerGroup, sb.blocksCount - groupFirstBlock(sb, group))
}

/** Block holding a group's superblock copy (group 0: the primary, at byte 1024). */
function superBlockOf(sb: ExtSuperblock, group: number): number {
  return group === 0 ? Math.floor(SUPERBLOCK_OFFSET / sb.blockSize) : groupFirstBlock(sb, group)
}

/** True when `n` is a power (≥ 1) of `base`. */
function isPowerOf(n: number, base: number): boolean {
  while (n > base && n % base === 0) n /= base
  return n === base
}

/** Whether a group carries a superblock copy: every group, or (sparse_super) 0, 1 and powers of 3, 5, 7, or (sparse_super2) 0 and the two named groups. */
function hasSuperCopy(sb: ExtSuperblock, group: number): boolean {
  if (group === 0) return true
  if (sb.backupBgs) return group === sb.backupBgs[0] || group === sb.backupBgs[1]
  if (group === 1 || !sb.sparseSuper) return true
  if (group % 2 === 0) return false
  return isPowerOf(group, 3) || isPowerOf(group, 5) || isPowerOf(group, 7)
}

/** Blocks at the start of a group that hold its superblock copy and descriptor (+ reserved GDT) blocks, as [first, count] runs. */
function superAndDescriptorBlocks(sb: ExtSuperblock, group: number): [number, number][] {
  const out: [number, number][] = []
  const hasSuper = hasSuperCopy(sb, group)
  const first = superBlockOf(sb, group)
  if (hasSuper) out.push([first, 1])
  if (!sb.metaBg || Math.floor(group / sb.descPerBlock) < sb.firstMetaBg) {
    // Classic layout: a full descriptor table (only the first s_first_meta_bg blocks with meta_bg) after each superblock copy.
    const tableBlocks = (sb.metaBg ? sb.firstMetaBg : sb.gdtBlocks) + sb.reservedGdtBlocks
    if (hasSuper && tableBlocks > 0) out.push([first + 1, tableBlocks])
  } else {
    // meta_bg: a meta group's descriptor block sits in its first, second and last group.
    const index = group % sb.descPerBlock
    if (index === 0 || index === 1 || index === sb.descPerBlock - 1) out.push([first + (hasSuper ? 1 : 0), 1])
  }
  return out
}

/** Block number of the primary copy of descriptor block `i`. */
function descriptorBlock(sb: ExtSuperblock, i: number): number {
  if (!sb.metaBg || i < sb.firstMetaBg) return superBlockOf(sb, 0) + 1 + i
  const group = i * sb.descPerBlock
  return superBlockOf(sb, group) + (hasSuperCopy(sb, group) ? 1 : 0)
}

/** Read the group descriptor table and check every descriptor (checksum, block numbers inside the filesystem). */
async function readGroupDescs(volume: Volume, sb: ExtSuperblock, where: string): Promise<GroupDesc[]> {
  const { blockSize } = sb
  const table = Buffer.alloc(sb.gdtBlocks * blockSize)
  const runs: { block: number; index: number; count: number }[] = []
  for (let i = 0; i < sb.gdtBlocks; i++) {
    const block = descriptorBlock(sb, i)
    if (block >= sb.blocksCount) throw new Error(`${where}: descriptor block ${i} would be at block ${block}, past the filesystem's ${sb.blocksCount} blocks`)
    const last = runs[runs.length - 1]
    if (last && last.block + last.count === block) last.count++
    else runs.push({ block, index: i, count: 1 })
  }
  await forEachLimited(runs, READS_IN_FLIGHT, async (run) => {
    await volume.source.read(volume.base + run.block * blockSize, run.count * blockSize, table.subarray(run.index * blockSize))
  })

  const descs: GroupDesc[] = []
  const groupLe = Buffer.alloc(4)
  for (let g = 0; g < sb.groupCount; g++) {
    const d = table.subarray(g * sb.descSize, (g + 1) * sb.descSize)
    const stored = d.readUInt16LE(0x1e)
    if (sb.groupCsum !== 'none') {
      groupLe.writeUInt32LE(g)
      let computed: number
      if (sb.groupCsum === 'crc32c') {
        let c = crc32c(sb.csumSeed, groupLe)
        c = crc32c(c, d.subarray(0, 0x1e))
        c = crc32c(c, ZERO_CHECKSUM)
        c = crc32c(c, d.subarray(0x20))
        computed = c & 0xffff
      } else {
        let c = crc16(0xffff, sb.uuid)
        c = crc16(c, groupLe)
        c = crc16(c, d.subarray(0, 0x1e))
        if (sb.is64bit) c = crc16(c, d.subarray(0x20))
        computed = c
      }
      if (stored !== computed) {
        throw new Error(`${where}: damaged ext group descriptor ${g}: checksum 0x${stored.toString(16)} does not match its contents (0x${computed.toString(16)})`)
      }
    }
    const hi = (offset: number): number => (sb.is64bit ? d.readUInt32LE(offset) * 2 ** 32 : 0)
    const desc: GroupDesc = {
      blockBitmap: d.readUInt32LE(0x00) + hi(0x20),
      inodeBitmap: d.readUInt32LE(0x04) + hi(0x24),
      inodeTable: d.readUInt32LE(0x08) + hi(0x28),
      flags: d.readUInt16LE(0x12),
      blockBitmapCsum: d.readUInt16LE(0x18) + (sb.descSize >= 0x3a ? d.readUInt16LE(0x38) * 0x10000 : 0),
    }
    const check = (what: string, first: number, count: number): void => {
      if (first < sb.firstDataBlock || first + count > sb.blocksCount) {
        throw new Error(`${where}: damaged ext group descriptor ${g}: ${what} at block ${first} is outside the filesystem (blocks ${sb.firstDataBlock}..${sb.blocksCount - 1})`)
      }
    }
    if (g === 0 && !bitmapOnDisk(sb, desc)) throw new Error(`${where}: damaged ext group descriptor 0: flagged BLOCK_UNINIT, which group 0 never is`)
    check('block bitmap', desc.blockBitmap, 1)
    check('inode bitmap', desc.inodeBitmap, 1)
    check(`inode table (${sb.inodeTableBlocks} blocks)`, desc.inodeTable, sb.inodeTableBlocks)
    descs.push(desc)
  }
  return descs
}

const ZERO_CHECKSUM = Buffer.alloc(2)

/** Whether a group's on-disk block bitmap is valid (BLOCK_UNINIT counts only with descriptor checksums). */
function bitmapOnDisk(sb: ExtSuperblock, desc: GroupDesc): boolean {
  return sb.groupCsum === 'none' || !(desc.flags & BG_BLOCK_UNINIT)
}

/**
 * Read the on-disk block bitmaps of groups [from, to): nearby bitmap blocks
 * (flex_bg packs them together) are read in one request. Returns one buffer
 * per group (undefined for a group whose bitmap is not on disk), checked
 * against its metadata_csum checksum.
 */
async function readBitmaps(volume: Volume, sb: ExtSuperblock, descs: GroupDesc[], from: number, to: number, where: string): Promise<(Buffer | undefined)[]> {
  const { blockSize } = sb
  const wanted: { group: number; block: number }[] = []
  for (let g = from; g < to; g++) if (bitmapOnDisk(sb, descs[g])) wanted.push({ group: g, block: descs[g].blockBitmap })
  wanted.sort((a, b) => a.block - b.block)

  const maxRunBlocks = Math.max(1, Math.floor(BITMAP_READ_MAX_BYTES / blockSize))
  const runs: { block: number; count: number; members: { group: number; block: number }[] }[] = []
  for (const w of wanted) {
    const last = runs[runs.length - 1]
    if (last && w.block < last.block + last.count + BITMAP_READ_GAP_BLOCKS && w.block + 1 - last.block <= maxRunBlocks) {
      last.count = Math.max(last.count, w.block + 1 - last.block)
      last.members.push(w)
    } else {
      runs.push({ block: w.block, count: 1, members: [w] })
    }
  }

  const out: (Buffer | undefined)[] = new Array(to - from)
  const bitmapBytes = sb.clustersPerGroup / 8
  await forEachLimited(runs, READS_IN_FLIGHT, async (run) => {
    const data = await volume.source.read(volume.base + run.block * blockSize, run.count * blockSize)
    for (const m of run.members) {
      const start = (m.block - run.block) * blockSize
      out[m.group - from] = data.subarray(start, start + bitmapBytes)
    }
  })

  if (sb.groupCsum === 'crc32c') {
    const full = sb.descSize >= 0x3a
    for (let g = from; g < to; g++) {
      const bitmap = out[g - from]
      if (!bitmap) continue
      const computed = crc32c(sb.csumSeed, bitmap)
      const stored = descs[g].blockBitmapCsum
      if (stored !== (full ? computed : computed & 0xffff)) {
        throw new Error(`${where}: damaged ext block bitmap of group ${g} (block ${descs[g].blockBitmap}): checksum 0x${stored.toString(16)} does not match its contents`)
      }
    }
  }
  return out
}

/** Set the bits of blocks [first, first+count) that fall in the group starting at block `groupStart`. */
function markBlocks(bits: Buffer, sb: ExtSuperblock, groupStart: number, groupBlocks: number, first: number, count: number): void {
  const lo = Math.max(first, groupStart)
  const hi = Math.min(first + count, groupStart + groupBlocks)
  if (lo >= hi) return
  const lastBit = Math.floor((hi - 1 - groupStart) / sb.clusterRatio)
  for (let bit = Math.floor((lo - groupStart) / sb.clusterRatio); bit <= lastBit; bit++) bits[bit >> 3] |= 1 << (bit & 7)
}

/** Every group's bitmaps and inode table as sorted, merged [first, end) block runs. */
function groupMetadataRuns(sb: ExtSuperblock, descs: GroupDesc[]): [number, number][] {
  const all: [number, number][] = []
  for (const d of descs) {
    all.push([d.blockBitmap, d.blockBitmap + 1], [d.inodeBitmap, d.inodeBitmap + 1], [d.inodeTable, d.inodeTable + sb.inodeTableBlocks])
  }
  all.sort((a, b) => a[0] - b[0])
  const merged: [number, number][] = []
  for (const r of all) {
    const last = merged[merged.length - 1]
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1])
    else merged.push([r[0], r[1]])
  }
  return merged
}

async function scanExt(volume: Volume): Promise<FsScan> {
  const where = `ext volume at byte ${volume.base} of ${volume.source.path}`
  if (volume.length < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) throw new Error(`${where}: only ${volume.length} bytes, too small for an ext superblock`)
  const sb = parseSuperblock(await volume.source.read(volume.base + SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE), where)
  const fsBytes = sb.blocksCount * sb.blockSize
  if (fsBytes > volume.length) {
    throw new Error(`${where}: the superblock says the filesystem is ${sb.blocksCount} blocks of ${sb.blockSize} bytes (${fsBytes} bytes), past the end of the volume (${volume.length} bytes)`)
  }
  const descs = await readGroupDescs(volume, sb, where)
  const metadata = groupMetadataRuns(sb, descs)

  const ranges = new RangeBuilder()
  const { blockSize, clusterRatio } = sb
  const fsEnd = volume.base + fsBytes
  // With 1 KiB blocks, block 0 (the boot area) precedes group 0 and no bitmap covers it.
  ranges.add(volume.base, sb.firstDataBlock * blockSize)

  const bits = Buffer.alloc(sb.clustersPerGroup / 8)
  const batch = Math.max(1, Math.floor(BATCH_BITMAP_BYTES / blockSize))
  let metaIndex = 0
  for (let from = 0; from < sb.groupCount; from += batch) {
    const to = Math.min(sb.groupCount, from + batch)
    const bitmaps = await readBitmaps(volume, sb, descs, from, to, where)
    for (let g = from; g < to; g++) {
      const onDisk = bitmaps[g - from]
      if (onDisk) onDisk.copy(bits)
      else bits.fill(0)
      const start = groupFirstBlock(sb, g)
      const blocks = groupBlockCount(sb, g)
      for (const [first, count] of superAndDescriptorBlocks(sb, g)) markBlocks(bits, sb, start, blocks, first, count)
      while (metaIndex < metadata.length && metadata[metaIndex][1] <= start) metaIndex++
      for (let i = metaIndex; i < metadata.length && metadata[i][0] < start + blocks; i++) {
        markBlocks(bits, sb, start, blocks, metadata[i][0], metadata[i][1] - metadata[i][0])
      }
      setBitRuns(bits, Math.ceil(blocks / clusterRatio), (first, count) => {
        const offset = volume.base + (start + first * clusterRatio) * blockSize
        ranges.add(offset, Math.min(count * clusterRatio * blockSize, fsEnd - offset))
      })
    }
  }
  return { fs: sb.fs, blockSize: blockSize * clusterRatio, ranges: ranges.ranges() }
}

/** Run `fn` over `items` with at most `limit` calls in flight. */
async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++])
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

/** CRC-16 (polynomial 0x8005, bit-reflected), the uninit_bg descriptor checksum. */
const CRC16_TABLE = makeCrcTable(0xa001)
/** CRC-32C (Castagnoli, bit-reflected), the metadata_csum checksum; no final inversion, as ext4 uses it. */
const CRC32C_TABLE = makeCrcTable(0x82f63b78)

function makeCrcTable(poly: number): Uint32Array {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1
    table[n] = c >>> 0
  }
  return table
}

function crc16(crc: number, data: Uint8Array): number {
  for (let i = 0; i < data.length; i++) crc = (crc >>> 8) ^ CRC16_TABLE[(crc ^ data[i]) & 0xff]
  return crc & 0xffff
}

function crc32c(crc: number, data: Uint8Array): number {
  for (let i = 0; i < data.length; i++) crc = (crc >>> 8) ^ CRC32C_TABLE[(crc ^ data[i]) & 0xff]
  return crc >>> 0
}

export const extReader: FsReader = {
  mode: 'ext',

  detect(head: Buffer): boolean {
    return head.length >= SUPERBLOCK_OFFSET + MAGIC_OFFSET + 2 && head.readUInt16LE(SUPERBLOCK_OFFSET + MAGIC_OFFSET) === EXT_MAGIC
  },

  scan: scanExt,
}
