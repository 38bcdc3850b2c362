/**
 * Whole disks: GPT and MBR images made by sfdisk/sgdisk, with real ext4 and
 * FAT32 partitions. The used ranges, written onto a target full of stale
 * data, give a disk with the same partition table, clean filesystems and the
 * same files.
 */
import { mkdir, open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { type ByteRange, gapsOf, rangesToExtents } from '../src/torrent/extents.js'
import type { GapPolicy } from '../src/torrent/metainfo.js'
import { readPartitionTable } from '../src/create/partition-table.js'
import { Source } from '../src/create/source.js'
import { BOOT_AREA_WHOLE_LIMIT, usedBlocks } from '../src/create/used-blocks.js'
import { cleanupAll, onCleanup, pseudoRandom, run, sh, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024
const SECTOR = 512

/** Files put into every filesystem, and compared after the round trip. */
const FILES: Record<string, Buffer> = {
  'big.bin': pseudoRandom(3 * MiB + 17, 11),
  'hello.txt': Buffer.from('hello from the source disk\n'),
  'sub/nested.bin': pseudoRandom(200_000, 12),
}

async function contentDir(dir: string): Promise<string> {
  const root = join(dir, 'content')
  await mkdir(join(root, 'sub'), { recursive: true })
  for (const [name, data] of Object.entries(FILES)) await writeFile(join(root, name), data)
  return root
}

/** Apply an sfdisk script to an image file. */
async function partition(img: string, script: string): Promise<void> {
  await sh('sfdisk', ['-q', img], { input: script })
}

async function mkExt4(img: string, startSector: number, sectors: number, content: string): Promise<void> {
  await sh('mkfs.ext4', ['-q', '-F', '-E', `offset=${startSector * SECTOR}`, '-d', content, img, `${(sectors * SECTOR) / 1024}k`])
}

async function mkFat32(img: string, startSector: number, sectors: number, content: string): Promise<void> {
  await sh('mkfs.vfat', ['-F', '32', `--offset=${startSector}`, img, String((sectors * SECTOR) / 1024)])
  await sh('mcopy', ['-s', '-i', `${img}@@${startSector * SECTOR}`, join(content, 'big.bin'), join(content, 'hello.txt'), join(content, 'sub'), '::/'])
}

async function openSource(path: string): Promise<Source> {
  const s = await Source.open(path)
  onCleanup(() => s.close())
  return s
}

/** A read-only loop device over bytes [offset, offset+length) of a file; detached by cleanupAll(). */
async function loopSlice(file: string, offset: number, length: number): Promise<string> {
  const dev = (await sh('losetup', ['--find', '--show', '--read-only', '-o', String(offset), '--sizelimit', String(length), file])).trim()
  onCleanup(async () => {
    await run('losetup', ['-d', dev])
  })
  return dev
}

/** Write the used ranges of `sourcePath` onto a same-size target of stale bytes (and zero the gaps if the policy says so). */
async function deploy(sourcePath: string, targetPath: string, ranges: ByteRange[], gaps: GapPolicy): Promise<void> {
  const src = await readFile(sourcePath)
  await writeFile(targetPath, pseudoRandom(src.length, 77))
  const fh = await open(targetPath, 'r+')
  try {
    for (const r of ranges) await fh.write(src, r.offset, r.length, r.offset)
    if (gaps === 'zero') for (const g of gapsOf(rangesToExtents(ranges), src.length)) await fh.write(Buffer.alloc(g.length), 0, g.length, g.offset)
  } finally {
    await fh.close()
  }
}

/** `sfdisk --dump` without the lines that name the device (which differ between source and target). */
async function tableDump(img: string): Promise<string> {
  const dump = await sh('sfdisk', ['--dump', img])
  return dump
    .split('\n')
    .filter((l) => !l.startsWith('device:'))
    .map((l) => l.replace(/^\S+ : /, 'part : '))
    .join('\n')
}

interface SfdiskPart {
  start: number
  size: number
  type: string
  name?: string
}

async function sfdiskParts(img: string): Promise<{ sectorsize?: number; partitions: SfdiskPart[] }> {
  return (JSON.parse(await sh('sfdisk', ['--json', img])) as { partitiontable: { sectorsize?: number; partitions: SfdiskPart[] } }).partitiontable
}

/** fsck the ext4 partition read-only and compare its files with FILES. */
async function checkExt4(img: string, start: number, length: number, dir: string): Promise<void> {
  const dev = await loopSlice(img, start, length)
  const fsck = await run('e2fsck', ['-fn', dev])
  expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)
  for (const [name, data] of Object.entries(FILES)) {
    const out = join(dir, `ext-${name.replace('/', '_')}`)
    await sh('debugfs', ['-R', `dump /${name} ${out}`, dev])
    expect((await readFile(out)).equals(data), `ext4 file ${name}`).toBe(true)
  }
}

/** fsck the FAT partition read-only and compare its files with FILES. */
async function checkFat(img: string, start: number, length: number, dir: string): Promise<void> {
  const dev = await loopSlice(img, start, length)
  const fsck = await run('fsck.vfat', ['-n', dev])
  expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)
  for (const [name, data] of Object.entries(FILES)) {
    const out = join(dir, `fat-${name.replace('/', '_')}`)
    await sh('mcopy', ['-n', '-i', img + `@@${start}`, `::/${name}`, out])
    expect((await readFile(out)).equals(data), `FAT file ${name}`).toBe(true)
  }
}

describe('readPartitionTable', () => {
  it('reads a GPT as sfdisk does, with both table copies as areas', async () => {
    const dir = await tempDir()
    const img = join(dir, 'disk.img')
    await sh('truncate', ['-s', '64M', img])
    await partition(img, 'label: gpt\nstart=2048, size=4096, type=L, name="root fs"\nstart=8192, type=U, name="efi"\n')
    const table = await readPartitionTable(await openSource(img))
    expect(table).not.toBeNull()
    const expected = await sfdiskParts(img)
    expect(table!.kind).toBe('gpt')
    expect(table!.sectorSize).toBe(512)
    expect(table!.partitions.map((p) => ({ start: p.start / 512, size: p.length / 512, type: p.type.toUpperCase(), name: p.name }))).toEqual(
      expected.partitions.map((p) => ({ start: p.start, size: p.size, type: p.type, name: p.name })),
    )
    // Protective MBR + primary header + 128 entries of 128 bytes; backup entries + header in the last 33 sectors.
    expect(table!.areas).toEqual([
      { offset: 0, length: 34 * 512 },
      { offset: 64 * MiB - 33 * 512, length: 33 * 512 },
    ])
    expect(table!.warnings).toEqual([])
  })

  it('falls back to the backup GPT when the primary is damaged, and fails clearly when both are', async () => {
    const dir = await tempDir()
    const img = join(dir, 'disk.img')
    await sh('truncate', ['-s', '32M', img])
    await partition(img, 'label: gpt\nstart=2048, size=8192, type=L\n')
    const fh = await open(img, 'r+')
    try {
      await fh.write(Buffer.from([0xff]), 0, 1, 512 + 60) // inside the disk GUID of the primary header
      let table = await readPartitionTable(await openSource(img))
      expect(table!.partitions.map((p) => [p.start, p.length])).toEqual([[2048 * 512, 8192 * 512]])
      expect(table!.warnings.join('\n')).toContain('primary GPT at LBA 1')
      expect(table!.warnings.join('\n')).toContain('header CRC32 mismatch')

      await fh.write(Buffer.from([0xff]), 0, 1, 32 * MiB - 33 * 512 + 5) // the backup entries array
      await expect(readPartitionTable(await openSource(img))).rejects.toThrow(
        /has a protective MBR but no usable GPT: primary at LBA 1 \(512-byte sectors\): header CRC32 mismatch; backup at LBA 65535: partition entries CRC32 mismatch/,
      )
      // Only the primary entries damaged: the backup is used.
      await sh('truncate', ['-s', '0', img])
      await sh('truncate', ['-s', '32M', img])
      await partition(img, 'label: gpt\nstart=2048, size=8192, type=L\n')
      await fh.write(Buffer.from([0xff]), 0, 1, 1024 + 100)
      table = await readPartitionTable(await openSource(img))
      expect(table!.warnings.join('\n')).toContain('partition entries CRC32 mismatch')
      expect(table!.partitions.length).toBe(1)
    } finally {
      await fh.close()
    }
  })

  it('reads a GPT written with 4096-byte logical sectors', async () => {
    const dir = await tempDir()
    const img = join(dir, 'disk4k.img')
    await sh('truncate', ['-s', '64M', img])
    const dev = (await sh('losetup', ['--find', '--show', '--sector-size', '4096', img])).trim()
    onCleanup(async () => {
      await run('losetup', ['-d', dev])
    })
    await sh('sgdisk', ['-n', '1:0:+8M', '-t', '1:8300', '-c', '1:data', '-n', '2:0:0', '-t', '2:ef00', dev])
    const expected = await sfdiskParts(dev)
    expect(expected.sectorsize).toBe(4096)
    await run('losetup', ['-d', dev])

    const table = await readPartitionTable(await openSource(img))
    expect(table!.sectorSize).toBe(4096)
    expect(table!.partitions.map((p) => [p.start, p.length, p.name])).toEqual(expected.partitions.map((p) => [p.start * 4096, p.size * 4096, p.name ?? '']))
    expect(table!.areas[0]).toEqual({ offset: 0, length: 6 * 4096 }) // protective MBR, header, 4 sectors of entries
    expect(table!.areas[table!.areas.length - 1]).toEqual({ offset: 64 * MiB - 5 * 4096, length: 5 * 4096 })
  })

  it('follows the EBR chain of an MBR extended partition', async () => {
    const dir = await tempDir()
    const img = join(dir, 'disk.img')
    await sh('truncate', ['-s', '64M', img])
    await partition(img, 'label: dos\nstart=2048, size=8192, type=83\nstart=10240, type=5\nstart=12288, size=8192, type=c\nstart=22528, size=8192, type=82\n')
    const table = await readPartitionTable(await openSource(img))
    const expected = await sfdiskParts(img)
    expect(table!.kind).toBe('mbr')
    expect(table!.partitions.map((p) => ({ start: p.start / 512, size: p.length / 512, type: p.type }))).toEqual(
      expected.partitions.map((p) => ({ start: p.start, size: p.size, type: '0x' + p.type.padStart(2, '0') })),
    )
    expect(table!.partitions.map((p) => [p.number, p.container])).toEqual([
      [1, false],
      [2, true],
      [5, false],
      [6, false],
    ])
    // The MBR and one EBR in front of each logical partition.
    expect(table!.areas).toEqual([
      { offset: 0, length: 512 },
      { offset: 10240 * 512, length: 512 },
      { offset: 20480 * 512, length: 512 },
    ])

    // A broken chain is an error that says where.
    const fh = await open(img, 'r+')
    await fh.write(Buffer.alloc(2), 0, 2, 20480 * 512 + 510)
    await fh.close()
    await expect(readPartitionTable(await openSource(img))).rejects.toThrow(`EBR at byte ${20480 * 512} of ${img}: no 0x55AA signature`)
  })

  it('does not take a filesystem on the whole disk (a superfloppy) for a partition table', async () => {
    const dir = await tempDir()
    /** Boot code that happens to look like a partition entry (type 0x83 at sector 2048), as a boot sector may hold. */
    const plantEntry = async (img: string) => {
      const entry = Buffer.alloc(16)
      entry[4] = 0x83
      entry.writeUInt32LE(2048, 8)
      entry.writeUInt32LE(2048, 12)
      const fh = await open(img, 'r+')
      await fh.write(entry, 0, 16, 446)
      await fh.close()
    }
    const fat = join(dir, 'fat.img')
    await sh('mkfs.vfat', ['-C', fat, String(40 * 1024)])
    await plantEntry(fat)
    expect((await readFile(fat)).readUInt16LE(510)).toBe(0xaa55)
    expect(await readPartitionTable(await openSource(fat))).toBeNull()
    expect((await usedBlocks(await openSource(fat), 'auto')).fs).toMatch(/^fat(16|32)$/)

    const ntfs = join(dir, 'ntfs.img')
    await sh('truncate', ['-s', '16M', ntfs])
    await sh('mkntfs', ['-q', '-F', '-f', ntfs])
    await plantEntry(ntfs)
    expect(await readPartitionTable(await openSource(ntfs))).toBeNull()
    expect((await usedBlocks(await openSource(ntfs), 'auto')).fs).toBe('ntfs')

    const ext = join(dir, 'ext.img')
    await sh('mkfs.ext4', ['-q', '-F', ext, '16M'])
    expect(await readPartitionTable(await openSource(ext))).toBeNull()
    expect((await usedBlocks(await openSource(ext), 'auto')).fs).toBe('ext4')
  })
})

describe('usedBlocks on a whole disk', () => {
  it('GPT with a BIOS boot partition, ext4 and FAT32: copies the small unknown partition whole and round-trips', async () => {
    const dir = await tempDir()
    const content = await contentDir(dir)
    const img = join(dir, 'source.img')
    await sh('truncate', ['-s', '100M', img])
    await partition(
      img,
      'label: gpt\n' +
        'start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name="bios"\n' +
        'start=4096, size=65536, type=L, name="root"\n' +
        'start=69632, size=133120, type=U, name="efi"\n',
    )
    await mkExt4(img, 4096, 65536, content)
    await mkFat32(img, 69632, 133120, content)
    // Boot code in the BIOS boot partition: 100 KiB of bytes, the rest zero.
    const bootCode = pseudoRandom(100 * 1024, 5)
    const fh = await open(img, 'r+')
    await fh.write(bootCode, 0, bootCode.length, 2048 * SECTOR)
    await fh.close()

    const used = await usedBlocks(await openSource(img), 'auto')
    expect(used.fs).toBe('gpt[raw,ext4,fat32]')
    expect(used.gaps).toBe('dont-care')
    expect(used.targetSize).toBe(100 * MiB)
    expect(used.parts).toEqual([
      { start: 2048 * SECTOR, length: 2048 * SECTOR, fs: 'raw' },
      { start: 4096 * SECTOR, length: 65536 * SECTOR, fs: 'ext4' },
      { start: 69632 * SECTOR, length: 133120 * SECTOR, fs: 'fat32' },
    ])
    expect(used.notes).toEqual([])
    // The whole BIOS boot partition (boot code and its zero rest) is in.
    expect(used.ranges.some((r) => r.offset <= 2048 * SECTOR && r.offset + r.length >= 4096 * SECTOR)).toBe(true)
    // The backup GPT at the end of the disk is in.
    expect(used.ranges[used.ranges.length - 1]).toEqual({ offset: 100 * MiB - 33 * SECTOR, length: 33 * SECTOR })
    expect(used.ranges.reduce((n, r) => n + r.length, 0)).toBeLessThan(30 * MiB)

    const target = join(dir, 'target.img')
    await deploy(img, target, used.ranges, used.gaps)
    expect(await tableDump(target)).toBe(await tableDump(img))
    const verify = await run('sgdisk', ['-v', target])
    expect(verify.stdout).toContain('No problems found')
    await checkExt4(target, 4096 * SECTOR, 65536 * SECTOR, dir)
    await checkFat(target, 69632 * SECTOR, 133120 * SECTOR, dir)
    const t = await readFile(target)
    expect(t.subarray(2048 * SECTOR, 4096 * SECTOR).equals((await readFile(img)).subarray(2048 * SECTOR, 4096 * SECTOR))).toBe(true)
  })

  it('MBR with ext4, an extended partition and a logical FAT32: copies the boot area and round-trips', async () => {
    const dir = await tempDir()
    const content = await contentDir(dir)
    const img = join(dir, 'source.img')
    await sh('truncate', ['-s', '100M', img])
    await partition(img, 'label: dos\nstart=2048, size=65536, type=83\nstart=67584, type=5\nstart=69632, size=133120, type=c\n')
    await mkExt4(img, 2048, 65536, content)
    await mkFat32(img, 69632, 133120, content)
    // A boot loader's core image in the MBR gap (sectors 1–62, where GRUB puts core.img).
    const core = pseudoRandom(62 * SECTOR, 6)
    const fh = await open(img, 'r+')
    await fh.write(core, 0, core.length, SECTOR)
    await fh.close()

    const used = await usedBlocks(await openSource(img), 'auto')
    expect(used.fs).toBe('mbr[ext4,fat32]')
    expect(used.gaps).toBe('dont-care')
    expect(used.notes).toEqual([])
    expect(used.parts.map((p) => p.fs)).toEqual(['ext4', 'extended', 'fat32'])
    // The whole first MiB (MBR + boot area) and the EBR are used ranges.
    expect(used.ranges[0].offset).toBe(0)
    expect(used.ranges[0].length).toBeGreaterThanOrEqual(2048 * SECTOR)
    expect(used.ranges.some((r) => r.offset <= 67584 * SECTOR && r.offset + r.length >= 67585 * SECTOR)).toBe(true)

    const target = join(dir, 'target.img')
    await deploy(img, target, used.ranges, used.gaps)
    expect(await tableDump(target)).toBe(await tableDump(img))
    const t = await readFile(target)
    expect(t.subarray(SECTOR, SECTOR + core.length).equals(core)).toBe(true)
    await checkExt4(target, 2048 * SECTOR, 65536 * SECTOR, dir)
    await checkFat(target, 69632 * SECTOR, 133120 * SECTOR, dir)
  })

  it('zero-scans a boot area larger than 16 MiB and a large partition of unknown type', async () => {
    const dir = await tempDir()
    const img = join(dir, 'source.img')
    await sh('truncate', ['-s', '48M', img])
    const start = 20 * MiB
    expect(start).toBeGreaterThan(BOOT_AREA_WHOLE_LIMIT)
    await partition(img, `label: dos\nstart=${start / SECTOR}, size=${(24 * MiB) / SECTOR}, type=da\n`)
    const fh = await open(img, 'r+')
    await fh.write(Buffer.from('boot bytes'), 0, 10, 5 * MiB + 100)
    await fh.write(pseudoRandom(3 * 4096, 8), 0, 3 * 4096, start + MiB)
    await fh.close()

    const used = await usedBlocks(await openSource(img), 'auto')
    expect(used.fs).toBe('mbr[zero]')
    expect(used.gaps).toBe('zero')
    expect(used.ranges).toEqual([
      { offset: 0, length: 4096 }, // the MBR sector, in the zero-scanned boot area's first block
      { offset: 5 * MiB, length: 4096 },
      { offset: start + MiB, length: 3 * 4096 },
    ])
    expect(used.notes.join('\n')).toContain(`the ${start} bytes before the first partition (boot loader area) were zero-scanned`)
    expect(used.notes.join('\n')).toContain('gaps must be zeroed')
  })

  it('a filesystem mode on a partitioned disk says the filesystem is not at offset 0', async () => {
    const dir = await tempDir()
    const img = join(dir, 'disk.img')
    await sh('truncate', ['-s', '64M', img])
    await partition(img, 'label: gpt\nstart=2048, size=126976, type=L\n')
    await mkExt4(img, 2048, 126976, await contentDir(dir))
    await expect(usedBlocks(await openSource(img), 'ext')).rejects.toThrow(`--mode ext: ${img} holds no ext filesystem at offset 0`)
    expect((await usedBlocks(await openSource(img), 'auto')).fs).toBe('gpt[ext4]')
  })
})

describe('swap partitions', () => {
  it('copy only the header page of a swap partition and keep "don\'t care" gaps', async () => {
    const dir = await tempDir()
    const img = join(dir, 'disk.img')
    await sh('truncate', ['-s', '64M', img])
    await partition(img, 'label: gpt\nstart=2048, size=40960, type=S\n')
    const swapStart = 2048 * SECTOR
    const loopless = join(dir, 'swap.img')
    await sh('truncate', ['-s', `${40960 * SECTOR}`, loopless])
    await sh('mkswap', ['-L', 'node-swap', loopless])
    const header = (await readFile(loopless)).subarray(0, 4096)
    const fh = await open(img, 'r+')
    await fh.write(header, 0, 4096, swapStart)
    // Stale pages further into swap are not copied.
    await fh.write(pseudoRandom(8192, 3), 0, 8192, swapStart + MiB)
    await fh.close()

    const used = await usedBlocks(await openSource(img), 'auto')
    expect(used.fs).toBe('gpt[swap]')
    expect(used.gaps).toBe('dont-care')
    expect(used.ranges.some((r) => r.offset <= swapStart && r.offset + r.length >= swapStart + 4096)).toBe(true)
    expect(used.ranges.some((r) => r.offset + r.length > swapStart + 4096 && r.offset < swapStart + 40960 * SECTOR)).toBe(false)
  })
})
