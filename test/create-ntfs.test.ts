/**
 * The NTFS reader against real mkntfs images filled with ntfscp (no mount):
 * its used-byte set against partclone.ntfs's, a round trip onto a target full
 * of stale data checked with ntfsfix and ntfscat, detection, and damaged
 * structures.
 */
import { copyFile, open, readFile, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ByteRange } from '../src/torrent/extents.js'
import { ntfsReader } from '../src/create/fs/ntfs.js'
import type { FsScan } from '../src/create/fs/types.js'
import { mergeRanges } from '../src/create/ranges.js'
import { Source } from '../src/create/source.js'
import {
  copyRanges,
  findAttribute,
  makeNtfsImage,
  makeStaleTarget,
  mftRecordOffset,
  type NtfsFileSpec,
  type NtfsImage,
  ntfsCat,
  partcloneRanges,
  patchMftRecord,
} from './helpers/images-ntfs.js'
import { cleanupAll, run, sh, tempDir } from './helpers/sys.js'

afterAll(cleanupAll)

const MiB = 1024 * 1024

/** Assorted sizes: empty, resident in the MFT record, around sector and cluster sizes, and multi-MiB; two freed again. */
const FILES: NtfsFileSpec[] = [
  { name: 'empty.bin', size: 0, seed: 1 },
  { name: 'tiny.txt', size: 100, seed: 2 },
  { name: 'sector.bin', size: 511, seed: 3 },
  { name: 'cluster.bin', size: 4096, seed: 4 },
  { name: 'freed-a.bin', size: 700_000, seed: 5, freed: true },
  { name: 'odd.bin', size: 12_345, seed: 6 },
  { name: 'mid.bin', size: 300_001, seed: 7 },
  { name: 'freed-b.bin', size: 2 * MiB, seed: 8, freed: true },
  { name: 'big.bin', size: 3 * MiB + 7, seed: 9 },
  { name: 'large.bin', size: 6 * MiB - 1, seed: 10 },
]

async function scanFile(path: string, base = 0, length?: number): Promise<FsScan> {
  const source = await Source.open(path)
  try {
    return await ntfsReader.scan({ source, base, length: length ?? source.size - base })
  } finally {
    await source.close()
  }
}

async function readBytes(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.alloc(length)
    await fh.read(buf, 0, length, offset)
    return buf
  } finally {
    await fh.close()
  }
}

/** Where the boot sector says the backup boot sector is: the sector just past totalSectors. */
async function backupBootSector(path: string): Promise<ByteRange> {
  const boot = await readBytes(path, 0, 512)
  const bytesPerSector = boot.readUInt16LE(11)
  return { offset: Number(boot.readBigUInt64LE(0x28)) * bytesPerSector, length: bytesPerSector }
}

function overlaps(ranges: readonly ByteRange[], r: ByteRange): boolean {
  return ranges.some((x) => x.offset < r.offset + r.length && r.offset < x.offset + x.length)
}

async function expectFilesEqual(target: string, files: ReadonlyMap<string, Buffer>): Promise<void> {
  for (const [name, data] of files) {
    const back = await ntfsCat(target, `/${name}`)
    expect(back.length, `/${name} length`).toBe(data.length)
    expect(back.equals(data), `/${name} content`).toBe(true)
  }
}

const LAYOUTS = [
  { label: '4 KiB clusters, 512-byte sectors', sizeMiB: 96, clusterSize: 4096 },
  { label: '64 KiB clusters', sizeMiB: 128, clusterSize: 65536, mkntfsCluster: 65536 },
  { label: '256 KiB clusters (negative sectors-per-cluster code 0xf7)', sizeMiB: 128, clusterSize: 262144, mkntfsCluster: 262144 },
  { label: '4096-byte sectors (4 KiB backup boot sector, 4 KiB MFT records)', sizeMiB: 64, clusterSize: 4096, sectorSize: 4096 },
]

describe.each(LAYOUTS)('ntfsReader on an mkntfs image with $label', (layout) => {
  let dir: string
  let img: NtfsImage
  let scan: FsScan
  let partclone: { blockSize: number; ranges: ByteRange[] }

  beforeAll(async () => {
    dir = await tempDir('bsw-ntfs-')
    img = await makeNtfsImage(dir, 'src.img', {
      sizeMiB: layout.sizeMiB,
      clusterSize: layout.mkntfsCluster,
      sectorSize: layout.sectorSize,
      files: FILES,
    })
    scan = await scanFile(img.path)
    partclone = await partcloneRanges(img.path, dir)
  })

  it('detects the image', async () => {
    expect(ntfsReader.detect(await readBytes(img.path, 0, 65536))).toBe(true)
    expect(scan.fs).toBe('ntfs')
    expect(scan.blockSize).toBe(layout.clusterSize)
  })

  it("reports exactly partclone.ntfs's used set plus the backup boot sector, which partclone leaves out", async () => {
    expect(partclone.blockSize).toBe(scan.blockSize)
    // mkntfs's total sectors count is the image's sectors minus one; the backup is that last sector,
    // past the last whole cluster, so a cluster bitmap (partclone's only source) never covers it.
    const backup = await backupBootSector(img.path)
    expect(backup.offset).toBe(img.size - backup.length)
    expect(overlaps(partclone.ranges, backup)).toBe(false)
    expect(scan.ranges).toEqual(mergeRanges([partclone.ranges, [backup]]))
    // The freed files left holes: the set is not the whole image.
    expect(scan.ranges.length).toBeGreaterThan(3)
  })

  it('round trip: only the reported bytes over stale data give a volume ntfsfix passes and every file back', async () => {
    const target = join(dir, 'target.img')
    await makeStaleTarget(target, img.size, 0xa5)
    await copyRanges(img.path, target, scan.ranges)
    const fix = await run('ntfsfix', ['-n', target])
    expect(fix.stdout + fix.stderr).toContain('Checking the alternate boot sector... OK')
    expect(fix.stdout).toContain('was processed successfully')
    expect(fix.code).toBe(0)
    await expectFilesEqual(target, img.files)
  })

  it("partclone's set alone leaves the stale backup boot sector, which ntfsfix rejects", async () => {
    const target = join(dir, 'target-partclone.img')
    await makeStaleTarget(target, img.size, 0xa5)
    await copyRanges(img.path, target, partclone.ranges)
    const fix = await run('ntfsfix', ['-n', target])
    expect(fix.stdout).toContain('Checking the alternate boot sector... BAD')
    expect(fix.code).not.toBe(0)
    // Everything else came across: the files read back.
    await expectFilesEqual(target, img.files)
  })
})

describe('ntfsReader.detect', () => {
  let dir: string
  let ntfsHead: Buffer

  beforeAll(async () => {
    dir = await tempDir('bsw-ntfs-detect-')
    const img = await makeNtfsImage(dir, 'small.img', { sizeMiB: 8, files: [] })
    ntfsHead = await readBytes(img.path, 0, 65536)
  })

  it('is false for FAT and ext headers and a zeroed buffer', async () => {
    const fat = join(dir, 'fat.img')
    await sh('mkfs.fat', ['-C', fat, '8192'])
    const ext = join(dir, 'ext.img')
    await writeFile(ext, '')
    await truncate(ext, 8 * MiB)
    await sh('mkfs.ext4', ['-q', '-F', ext])
    expect(ntfsReader.detect(ntfsHead)).toBe(true)
    expect(ntfsReader.detect(await readBytes(fat, 0, 65536))).toBe(false)
    expect(ntfsReader.detect(await readBytes(ext, 0, 65536))).toBe(false)
    expect(ntfsReader.detect(Buffer.alloc(65536))).toBe(false)
  })

  it('is false for the NTFS OEM id with an insane BPB', () => {
    const badSectorSize = Buffer.from(ntfsHead)
    badSectorSize.writeUInt16LE(768, 11)
    const badCluster = Buffer.from(ntfsHead)
    badCluster[13] = 3
    const badRecord = Buffer.from(ntfsHead)
    badRecord.writeInt8(0, 0x40)
    const noSignature = Buffer.from(ntfsHead)
    noSignature.writeUInt16LE(0, 510)
    for (const head of [badSectorSize, badCluster, badRecord, noSignature]) expect(ntfsReader.detect(head)).toBe(false)
  })
})

describe('ntfsReader.scan on edited images', () => {
  let dir: string
  let base: NtfsImage
  let baseScan: FsScan
  let n = 0

  beforeAll(async () => {
    dir = await tempDir('bsw-ntfs-edit-')
    base = await makeNtfsImage(dir, 'base.img', {
      sizeMiB: 8,
      files: [
        { name: 'a.bin', size: 300_000, seed: 21 },
        { name: 'gone.bin', size: 500_000, seed: 22, freed: true },
        { name: 'b.bin', size: 1_000_000, seed: 23 },
      ],
    })
    baseScan = await scanFile(base.path)
  })

  async function copyOfBase(): Promise<string> {
    const path = join(dir, `edit-${n++}.img`)
    await copyFile(base.path, path)
    return path
  }

  it('finds the volume at a byte offset inside a larger source and reports absolute ranges', async () => {
    const disk = join(dir, 'disk.img')
    const at = 3 * MiB
    await writeFile(disk, Buffer.alloc(at, 0x5a))
    const fh = await open(disk, 'r+')
    try {
      await fh.write(await readFile(base.path), 0, base.size, at)
      await fh.write(Buffer.alloc(MiB, 0x5a), 0, MiB, at + base.size)
    } finally {
      await fh.close()
    }
    const scan = await scanFile(disk, at, base.size)
    expect(scan.ranges).toEqual(baseScan.ranges.map((r) => ({ offset: r.offset + at, length: r.length })))
  })

  it('sends both the backup boot sector and the last sector when the volume is longer than the filesystem', async () => {
    const longer = await copyOfBase()
    await truncate(longer, base.size + MiB)
    const scan = await scanFile(longer)
    const backup = await backupBootSector(longer)
    const last = { offset: base.size + MiB - 512, length: 512 }
    expect(scan.ranges).toEqual(mergeRanges([baseScan.ranges, [last]]))
    expect(overlaps(scan.ranges, backup)).toBe(true)
    // ntfsfix checks the device's last sector, not the one mkntfs wrote: a copy keeps its verdict.
    const target = join(dir, 'longer-target.img')
    await makeStaleTarget(target, base.size + MiB, 7)
    await copyRanges(longer, target, scan.ranges)
    const [src, dst] = await Promise.all([run('ntfsfix', ['-n', longer]), run('ntfsfix', ['-n', target])])
    expect(src.stdout).toContain('Checking the alternate boot sector... BAD')
    expect(dst.stdout.replaceAll(target, 'IMG')).toBe(src.stdout.replaceAll(longer, 'IMG'))
    expect(dst.code).toBe(src.code)
  })

  it('reads a resident $Bitmap $DATA the same as the non-resident one', async () => {
    const img = await copyOfBase()
    const bitmap = await ntfsCat(base.path, '/$Bitmap')
    await patchMftRecord(img, 6, (rec) => {
      const pos = findAttribute(rec, 0x80)
      const id = rec.readUInt16LE(pos + 0x0e)
      const length = 0x18 + Math.ceil(bitmap.length / 8) * 8
      expect(pos + length + 8).toBeLessThanOrEqual(rec.length - 8)
      rec.fill(0, pos, rec.readUInt32LE(0x18))
      rec.writeUInt32LE(0x80, pos)
      rec.writeUInt32LE(length, pos + 4)
      rec.writeUInt16LE(id, pos + 0x0e)
      rec.writeUInt32LE(bitmap.length, pos + 0x10)
      rec.writeUInt16LE(0x18, pos + 0x14)
      bitmap.copy(rec, pos + 0x18)
      rec.writeUInt32LE(0xffffffff, pos + length)
      rec.writeUInt32LE(pos + length + 8, 0x18)
    })
    const scan = await scanFile(img)
    expect(scan.ranges).toEqual(baseScan.ranges)
  })

  it('rejects a torn MFT record (update sequence mismatch)', async () => {
    const img = await copyOfBase()
    const rec = await mftRecordOffset(img, 6)
    const fh = await open(img, 'r+')
    await fh.write(Buffer.from([0x12, 0x34]), 0, 2, rec.offset + 1022)
    await fh.close()
    await expect(scanFile(img)).rejects.toThrow(/MFT record 6: update sequence mismatch at byte 1022 \(0x3412/)
  })

  it('rejects a $Bitmap record that is not in use', async () => {
    const img = await copyOfBase()
    await patchMftRecord(img, 6, (rec) => rec.writeUInt16LE(rec.readUInt16LE(0x16) & ~1, 0x16))
    await expect(scanFile(img)).rejects.toThrow(/MFT record 6 is not in use/)
  })

  it('rejects a $Bitmap run list that points past the volume', async () => {
    const img = await copyOfBase()
    await patchMftRecord(img, 6, (rec) => {
      const pos = findAttribute(rec, 0x80)
      const runs = pos + rec.readUInt16LE(pos + 0x20)
      expect(rec[runs] & 0x0f).toBe(1) // one length byte: the 256-byte bitmap fits one cluster
      // Same length, LCN 0x7fff0000 (four offset bytes), then the terminator.
      Buffer.from([0x41, rec[runs + 1], 0x00, 0x00, 0xff, 0x7f, 0x00]).copy(rec, runs)
    })
    await expect(scanFile(img)).rejects.toThrow(/MFT record 6 \(\$Bitmap\): attribute 0x80 at byte \d+: run of 1 clusters at LCN 2147418112 lies past the volume's 2047 clusters/)
  })

  it('says so when $Bitmap keeps its $DATA elsewhere through an $ATTRIBUTE_LIST', async () => {
    const img = await copyOfBase()
    // Retype the $DATA attribute as an attribute list: no $DATA left in the base record.
    await patchMftRecord(img, 6, (rec) => rec.writeUInt32LE(0x20, findAttribute(rec, 0x80)))
    await expect(scanFile(img)).rejects.toThrow(/MFT record 6 \(\$Bitmap\): no unnamed \$DATA.*\$ATTRIBUTE_LIST, which this reader does not follow/)
  })

  it('rejects a volume shorter than the boot sector claims', async () => {
    await expect(scanFile(base.path, 0, base.size - MiB)).rejects.toThrow(
      /boot sector claims 16383 sectors \(8388096 bytes\) but the volume is 7340032 bytes/,
    )
  })
})
