/**
 * `blockswarm create` end to end on real images (mkfs.ext4 -d, mkfs.vfat +
 * mcopy, mkntfs + ntfscp; nothing mounted), checked against partclone's
 * torrent.info and against aria2c's own piece check.
 */
import { createHash } from 'node:crypto'
import { cp, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ExtentTorrent, parseTorrent } from '../src/torrent/metainfo.js'
import { type PartcloneInfo, readPartcloneInfo } from '../src/create/partclone-info.js'
import { cleanupAll, cli, loopAttach, pseudoRandom, run, sh, tempDir } from './helpers/sys.js'

const MiB = 1024 * 1024

type Kind = 'ext4' | 'fat32' | 'fat16' | 'ntfs'
interface Image {
  kind: Kind
  path: string
  /** partclone -c -T output directory. */
  pcDir: string
  pcInfo: PartcloneInfo
  /** SHA-256 of the image right after it was made. */
  digest: string
}

const PARTCLONE: Record<Kind, string> = { ext4: 'partclone.extfs', fat32: 'partclone.fat32', fat16: 'partclone.fat16', ntfs: 'partclone.ntfs' }

let work: string
let files: string[]
let smallFiles: string[]
const images = {} as Record<Kind, Image>

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex')
}

async function makeImage(kind: Kind): Promise<Image> {
  const path = join(work, `${kind}.img`)
  switch (kind) {
    case 'ext4':
      await sh('truncate', ['-s', '128M', path])
      await sh('mkfs.ext4', ['-q', '-F', '-d', join(work, 'data'), path])
      break
    case 'fat32':
    case 'fat16':
      await sh('truncate', ['-s', kind === 'fat32' ? '300M' : '96M', path])
      await sh('mkfs.vfat', ['-F', kind === 'fat32' ? '32' : '16', path])
      await sh('mcopy', ['-i', path, ...files, '::/'])
      if (kind === 'fat16') {
        // small files with every other one deleted: many short extents with small gaps between them
        await sh('mcopy', ['-i', path, ...smallFiles, '::/'])
        await sh('mdel', ['-i', path, ...smallFiles.filter((_, i) => i % 2 === 0).map((f) => `::/${basename(f)}`)])
      }
      break
    case 'ntfs':
      await sh('truncate', ['-s', '256M', path])
      await sh('mkntfs', ['-q', '-F', '-f', path])
      for (const f of files) await sh('ntfscp', ['-f', path, f, basename(f)])
      break
  }
  const pcDir = join(work, `pc-${kind}`)
  await sh(PARTCLONE[kind], ['-c', '-T', '-q', '-s', path, '-o', pcDir, '-L', join(work, `pc-${kind}.log`)])
  return { kind, path, pcDir, pcInfo: await readPartcloneInfo(join(pcDir, 'torrent.info')), digest: await sha256(path) }
}

/** Run `blockswarm create … --json`; fail the test with its stderr unless it exits 0. */
async function create(args: string[]): Promise<{ json: Record<string, unknown>; torrent: ExtentTorrent }> {
  const out = args[args.indexOf('-o') + 1]
  const r = await cli(['create', ...args, '--json'])
  expect(r.code, r.stderr).toBe(0)
  return { json: JSON.parse(r.stdout), torrent: parseTorrent(await readFile(out), { source: out }) }
}

/** Sorted extents with touching neighbours joined: the set of bytes, whatever the file cut. */
function byteRuns(extents: readonly { offset: number; length: number }[]): [number, number][] {
  const runs: [number, number][] = []
  for (const e of extents) {
    const last = runs[runs.length - 1]
    if (last && last[0] + last[1] === e.offset) last[1] += e.length
    else runs.push([e.offset, e.length])
  }
  return runs
}

/** aria2c's own check of every piece of `torrent` against files under DIR/NAME; true when all pieces are OK. */
async function aria2Verifies(torrent: string, dir: string): Promise<{ ok: boolean; output: string }> {
  const r = await run(
    'aria2c',
    [
      '--check-integrity=true',
      '--hash-check-only=true',
      '--seed-time=0',
      `--dir=${dir}`,
      '--enable-dht=false',
      '--enable-dht6=false',
      '--bt-enable-lpd=false',
      '--enable-peer-exchange=false',
      '--disable-ipv6=true',
      '--interface=127.0.0.1',
      '--summary-interval=0',
      '--console-log-level=error',
      torrent,
    ],
    { timeoutMs: 60_000 },
  )
  return { ok: r.code === 0 && /\|OK\s*\|/.test(r.stdout), output: r.stdout + r.stderr }
}

beforeAll(async () => {
  work = await tempDir('bsw-create-')
  const data = join(work, 'data')
  await mkdir(data)
  // ~37 MiB of file data: three 16 MiB pieces on every filesystem
  const sizes = [20 * MiB, 9 * MiB + 12345, 5 * MiB, 3 * MiB - 1000, 70_000]
  files = []
  for (const [i, size] of sizes.entries()) {
    const f = join(data, `file${i}.bin`)
    await writeFile(f, pseudoRandom(size, i + 1))
    files.push(f)
  }
  smallFiles = []
  for (let i = 0; i < 120; i++) {
    const f = join(work, `small${i}.bin`)
    await writeFile(f, pseudoRandom(3000 + i * 97, 1000 + i))
    smallFiles.push(f)
  }
  for (const kind of ['ext4', 'fat32', 'fat16', 'ntfs'] as const) images[kind] = await makeImage(kind)
})
afterAll(cleanupAll)

describe('piece hashes against partclone', () => {
  it.each(['ext4', 'fat32', 'fat16'] as const)('%s: same used bytes as partclone, and the 16 MiB piece hashes equal its sha1 lines', async (kind) => {
    const img = images[kind]
    const { json, torrent } = await create([img.path, '-o', join(work, `${kind}.torrent`)])
    expect(json.fs).toBe(kind)
    expect(json.hashesFrom).toBe('source')
    expect(byteRuns(torrent.extents)).toEqual(byteRuns(img.pcInfo.extents))
    // maximal runs: no two extents touch
    expect(torrent.extents.length).toBe(byteRuns(torrent.extents).length)
    expect(img.pcInfo.complete).toBe(true)
    expect(torrent.pieceCount).toBeGreaterThanOrEqual(3)
    expect(torrent.pieces.toString('hex')).toBe(img.pcInfo.pieces.toString('hex'))
  })

  it('ntfs: partclone leaves out the backup boot sector (the last 512 bytes), so all but the last piece agree', async () => {
    const img = images.ntfs
    const { json, torrent } = await create([img.path, '-o', join(work, 'ntfs.torrent')])
    expect(json.fs).toBe('ntfs')
    const ours = byteRuns(torrent.extents)
    const theirs = byteRuns(img.pcInfo.extents)
    const size = (await stat(img.path)).size
    expect(ours.slice(0, -1)).toEqual(theirs)
    expect(ours[ours.length - 1]).toEqual([size - 512, 512])
    const n = torrent.pieceCount
    expect(n).toBe(img.pcInfo.pieces.length / 20)
    expect(torrent.pieces.subarray(0, (n - 1) * 20).equals(img.pcInfo.pieces.subarray(0, (n - 1) * 20))).toBe(true)
    expect(torrent.pieces.subarray((n - 1) * 20).equals(img.pcInfo.pieces.subarray((n - 1) * 20))).toBe(false)
  })
})

describe('hashing', () => {
  it('fat16 with every other small file deleted: many short extents, still the same pieces as partclone', async () => {
    const { torrent } = await create([images.fat16.path, '-o', join(work, 'fat16-frag.torrent')])
    const gaps = torrent.extents.slice(1).map((e, i) => e.offset - (torrent.extents[i].offset + torrent.extents[i].length))
    expect(gaps.filter((g) => g <= 64 * 1024).length).toBeGreaterThan(30)
    expect(torrent.pieces.equals(images.fat16.pcInfo.pieces)).toBe(true)
  })

  it('--mode all over 300 MiB (hashed by several worker threads): every piece equals a plain SHA-1 of the image', async () => {
    const img = images.fat32
    const { json, torrent } = await create([img.path, '-o', join(work, 'all.torrent'), '--mode', 'all', '--piece-size', '4M'])
    expect(json.fs).toBe('all')
    const bytes = await readFile(img.path)
    expect(torrent.extents).toEqual([{ offset: 0, length: bytes.length, start: 0, name: '0'.repeat(32) }])
    expect(torrent.pieceCount).toBe(75)
    for (let i = 0; i < torrent.pieceCount; i++) {
      const want = createHash('sha1').update(bytes.subarray(i * 4 * MiB, (i + 1) * 4 * MiB)).digest('hex')
      expect(torrent.pieces.subarray(i * 20, i * 20 + 20).toString('hex'), `piece ${i}`).toBe(want)
    }
  })
})

describe('--extents-dir', () => {
  it('writes DIR/NAME/<32-hex offset>, one file per extent, that aria2c verifies piece by piece', async () => {
    const img = images.ext4
    const dir = join(work, 'seed-ext4')
    const torrentPath = join(work, 'ext4-seed.torrent')
    const { json, torrent } = await create([img.path, '-o', torrentPath, '--name', 'disk0', '--extents-dir', dir, '--piece-size', '1M'])
    expect(json.extentsDir).toBe(join(dir, 'disk0'))
    expect((await readdir(join(dir, 'disk0'))).sort()).toEqual(torrent.extents.map((e) => e.name))
    for (const e of torrent.extents) expect(e.name).toBe(e.offset.toString(16).padStart(32, '0'))
    const first = torrent.extents[torrent.extents.length - 1]
    const fileBytes = await readFile(join(dir, 'disk0', first.name))
    const imageBytes = (await readFile(img.path)).subarray(first.offset, first.offset + first.length)
    expect(fileBytes.equals(imageBytes)).toBe(true)

    const good = await aria2Verifies(torrentPath, dir)
    expect(good.ok, good.output).toBe(true)
    // the same check fails once one byte of one file differs
    const bad = join(work, 'seed-bad')
    await cp(dir, bad, { recursive: true })
    const victim = join(bad, 'disk0', torrent.extents[0].name)
    const bytes = await readFile(victim)
    bytes[100] ^= 0xff
    await writeFile(victim, bytes)
    expect((await aria2Verifies(torrentPath, bad)).ok).toBe(false)
  })

  it('refuses a non-empty DIR/NAME', async () => {
    const dir = join(work, 'seed-busy')
    await mkdir(join(dir, 'ext4.img'), { recursive: true })
    await writeFile(join(dir, 'ext4.img', 'stale'), 'x')
    const r = await cli(['create', images.ext4.path, '-o', join(work, 'busy.torrent'), '--extents-dir', dir])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`extents directory ${join(dir, 'ext4.img')} is not empty`)
  })
})

describe('--from-partclone', () => {
  it("takes partclone's extents and sha1 lines without reading data; aria2c seeds partclone's output directory as it is", async () => {
    const img = images.ext4
    const torrentPath = join(work, 'pc-ext4.torrent')
    const { json, torrent } = await create(['--from-partclone', join(img.pcDir, 'torrent.info'), '-o', torrentPath])
    expect(json.hashesFrom).toBe('partclone')
    expect(json.bytes).toBe(0)
    // the name is the output directory's: a client given its parent as download dir finds DIR/NAME/<offset>
    expect(torrent.name).toBe(basename(img.pcDir))
    expect(torrent.extents.map((e) => [e.name, e.length])).toEqual(img.pcInfo.extents.map((e) => [e.name, e.length]))
    expect(torrent.meta.targetSize).toBe(img.pcInfo.blockSize! * img.pcInfo.blocksTotal!)
    expect(torrent.meta.source).toBe('partclone')

    const fromImage = parseTorrent(await readFile(join(work, 'ext4.torrent')))
    expect(torrent.pieces.equals(fromImage.pieces)).toBe(true)
    const check = await aria2Verifies(torrentPath, dirname(img.pcDir))
    expect(check.ok, check.output).toBe(true)
  })

  it('fat32: a symlink named NAME makes a partclone directory seedable under any torrent name', async () => {
    const img = images.fat32
    const torrentPath = join(work, 'pc-fat32.torrent')
    await create(['--from-partclone', join(img.pcDir, 'torrent.info'), '-o', torrentPath, '--name', 'sdb1'])
    const seedRoot = join(work, 'seed-root')
    await mkdir(seedRoot)
    await symlink(img.pcDir, join(seedRoot, 'sdb1'))
    const check = await aria2Verifies(torrentPath, seedRoot)
    expect(check.ok, check.output).toBe(true)
  })

  it('another piece size hashes from SOURCE with partclone\'s file cut: same pieces as the torrent made straight from the image', async () => {
    const img = images.ext4
    const { json, torrent } = await create([img.path, '--from-partclone', join(img.pcDir, 'torrent.info'), '-o', join(work, 'pc-1m.torrent'), '--piece-size', '1M'])
    expect(json.hashesFrom).toBe('source')
    expect(torrent.name).toBe('ext4.img')
    expect(torrent.meta.targetSize).toBe((await stat(img.path)).size)
    const direct = (await create([img.path, '-o', join(work, 'direct-1m.torrent'), '--piece-size', '1M'])).torrent
    expect(torrent.pieceCount).toBe(direct.pieceCount)
    expect(torrent.pieces.equals(direct.pieces)).toBe(true)
    expect(torrent.extents.length).toBeGreaterThan(direct.extents.length)

    // and from partclone's extent files (SOURCE = its output directory) instead of the image
    const fromDir = (await create([img.pcDir, '--from-partclone', join(img.pcDir, 'torrent.info'), '-o', join(work, 'pc-dir-1m.torrent'), '--piece-size', '1M'])).torrent
    expect(fromDir.pieces.equals(direct.pieces)).toBe(true)
  })

  it('ntfs: with --extents-dir the data is read and checked against every partclone sha1 line', async () => {
    const img = images.ntfs
    const dir = join(work, 'seed-ntfs')
    const torrentPath = join(work, 'pc-ntfs.torrent')
    const { json, torrent } = await create([img.path, '--from-partclone', join(img.pcDir, 'torrent.info'), '-o', torrentPath, '--extents-dir', dir])
    expect(json.hashesFrom).toBe('source')
    expect(torrent.pieces.equals(img.pcInfo.pieces)).toBe(true)
    const check = await aria2Verifies(torrentPath, dir)
    expect(check.ok, check.output).toBe(true)
  })

  it('says so when the source no longer matches partclone\'s sha1 lines', async () => {
    const img = images.fat16
    const changed = join(work, 'fat16-changed.img')
    await cp(img.path, changed)
    const e = img.pcInfo.extents[img.pcInfo.extents.length - 1]
    const bytes = await readFile(changed)
    bytes[e.offset] ^= 0xff
    await writeFile(changed, bytes)
    const r = await cli(['create', changed, '--from-partclone', join(img.pcDir, 'torrent.info'), '-o', join(work, 'x.torrent'), '--extents-dir', join(work, 'seed-changed')])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/piece \d+ read from .*fat16-changed\.img does not match partclone's sha1/)
    // no half-made extents directory is left to be seeded by mistake
    await expect(stat(join(work, 'seed-changed', 'fat16-changed.img'))).rejects.toThrow(/ENOENT/)
  })

  it('partclone -t (no data files) with another piece size needs a SOURCE, and says so', async () => {
    const out = join(work, 'pc-t-ext4')
    await sh('partclone.extfs', ['-c', '-t', '-q', '-s', images.ext4.path, '-o', out, '-L', join(work, 'pc-t.log')])
    const r = await cli(['create', '--from-partclone', join(out, 'torrent.info'), '-o', join(work, 't.torrent'), '--piece-size', '4M'])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/extent file .*pc-t-ext4\/0{32} is missing \(partclone -t writes no data files: give the source device instead\)/)
  })
})

describe('the torrent and the command', () => {
  it('inspect shows what create put in', async () => {
    const out = join(work, 'inspect.torrent')
    await create([
      images.fat16.path,
      '-o',
      out,
      '--name',
      'boot',
      '--piece-size',
      '256K',
      '--tracker',
      'http://127.0.0.1:6969/announce',
      '--tracker',
      'http://127.0.0.1:6970/announce',
      '--web-seed',
      'http://127.0.0.1:8080/boot/',
    ])
    const r = await cli(['inspect', out, '--json'])
    expect(r.code, r.stderr).toBe(0)
    const s = JSON.parse(r.stdout)
    expect(s).toMatchObject({
      name: 'boot',
      pieceLength: 256 * 1024,
      gaps: 'dont-care',
      source: 'fat16',
      targetSize: 96 * MiB,
      bytesCovered: images.fat16.pcInfo.totalLength,
      firstOffset: 0,
      trackers: ['http://127.0.0.1:6969/announce', 'http://127.0.0.1:6970/announce'],
      webSeeds: ['http://127.0.0.1:8080/boot/'],
    })
    expect(s.pieceCount).toBe(Math.ceil(images.fat16.pcInfo.totalLength / (256 * 1024)))
  })

  it('a read-only loop device gives the same torrent as its image file', async () => {
    const dev = await loopAttach(images.ext4.path, { readOnly: true })
    const { json, torrent } = await create([dev, '-o', join(work, 'loop.torrent'), '--name', 'ext4.img'])
    expect(json.source).toBe(dev)
    const fromFile = parseTorrent(await readFile(join(work, 'ext4.torrent')))
    expect(torrent.infoHash).toBe(fromFile.infoHash)
  })

  it('a human summary without --json; a progress bar only on a terminal', async () => {
    const out = join(work, 'human.torrent')
    const plain = await cli(['create', images.ext4.path, '-o', out])
    expect(plain.code, plain.stderr).toBe(0)
    expect(plain.stdout).toMatch(/^torrent +.*human\.torrent$/m)
    expect(plain.stdout).toMatch(/^info-hash +[0-9a-f]{40}$/m)
    expect(plain.stdout).toMatch(/^found by +ext4$/m)
    expect(plain.stderr).not.toContain('hashing')

    // under a pseudo-terminal (util-linux `script`) the bar is drawn on stderr
    const cmd = `${process.execPath} ${join(import.meta.dirname, '..', 'bin/blockswarm.js')} create ${images.ext4.path} -o ${out}`
    const tty = await run('script', ['-qec', cmd, '/dev/null'])
    expect(tty.code, tty.stderr).toBe(0)
    expect(tty.stdout).toMatch(/hashing .*\d+% \| .* \/ .* \| .*MB\/s \| ETA/)
    const json = await run('script', ['-qec', `${cmd} --json`, '/dev/null'])
    expect(json.stdout).not.toContain('hashing')
  })

  it('clear errors: missing source, a directory, a bad piece size, the output over the source, no source', async () => {
    const out = join(work, 'err.torrent')
    const missing = await cli(['create', join(work, 'nope.img'), '-o', out])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain(`${join(work, 'nope.img')} does not exist`)

    const directory = await cli(['create', work, '-o', out])
    expect(directory.code).toBe(1)
    expect(directory.stderr).toContain(`${work} is a directory; a source is a block device or an image file`)

    const piece = await cli(['create', images.ext4.path, '-o', out, '--piece-size', '24K'])
    expect(piece.code).toBe(1)
    expect(piece.stderr).toContain('piece size 24576 is not a power of two between 16 KiB and 256 MiB')

    const small = await cli(['create', images.ext4.path, '-o', out, '--piece-size', '8K'])
    expect(small.stderr).toContain('piece size 8192 is not a power of two between 16 KiB and 256 MiB')

    const over = await cli(['create', images.fat16.path, '-o', images.fat16.path])
    expect(over.code).toBe(1)
    expect(over.stderr).toContain(`output ${images.fat16.path} is the source itself`)

    const nowhere = await cli(['create', images.ext4.path, '-o', join(work, 'no-such-dir', 'x.torrent')])
    expect(nowhere.code).toBe(1)
    expect(nowhere.stderr).toContain(`${join(work, 'no-such-dir')} is not a writable directory`)

    const none = await cli(['create', '-o', out])
    expect(none.code).toBe(1)
    expect(none.stderr).toContain('give a SOURCE')

    const badMode = await cli(['create', images.ext4.path, '-o', out, '--mode', 'btrfs'])
    expect(badMode.code).not.toBe(0)
    expect(badMode.stderr).toContain('btrfs')
  })

  it('create never modifies its source', async () => {
    for (const img of Object.values(images)) {
      expect(await sha256(img.path), img.path).toBe(img.digest)
    }
  })
})
