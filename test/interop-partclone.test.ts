/**
 * A partclone `-T` directory seeded by a standard client deploys with
 * blockswarm: a real ext4 image (mkfs.ext4 -d), `partclone.extfs -c -T` into
 * ROOT/sda1, `blockswarm create --from-partclone` (name "sda1", so a client
 * with download directory ROOT finds ROOT/sda1/<offset>), then aria2c and
 * transmission-daemon each seed that directory as it is and
 * `blockswarm deploy` writes a loop device full of stale data. Checked: every
 * extent on the loop device equals the image, and e2fsck -fn is clean.
 */
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { extTestTree, makeExtImage, makeStaleTarget, writeTree } from './helpers/images-ext.js'
import { aria2cFlags, differingExtents, freePort, startTransmission, waitFor } from './helpers/interop.js'
import { captureOutput, cleanupAll, cli, loopAttach, run, sh, startProcess } from './helpers/sys.js'

const MiB = 1024 * 1024
const IMAGE_SIZE = 64 * MiB

let work: string
let image: string
/** partclone's output directory ROOT/sda1 is seeded with ROOT as the download directory. */
let seedRoot: string
let torrentFile: string
let torrent: ExtentTorrent

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'bsw-interop-pc-'))
  const content = join(work, 'content')
  await writeTree(content, extTestTree(23))
  image = join(work, 'golden.img')
  await makeExtImage(image, IMAGE_SIZE, 'mkfs.ext4', ['-b', '1024'], content)
  seedRoot = join(work, 'seed-root')
  await mkdir(seedRoot)
  // partclone creates OUTDIR itself and fails if it exists; -f 0: no progress-thread waits
  await sh('partclone.extfs', ['-c', '-T', '-q', '-f', '0', '-s', image, '-o', join(seedRoot, 'sda1'), '-L', join(work, 'partclone.log')])
  torrentFile = join(work, 'sda1.torrent')
  const made = await cli(['create', '--from-partclone', join(seedRoot, 'sda1', 'torrent.info'), '-o', torrentFile])
  expect(made.code, made.stderr).toBe(0)
  torrent = parseTorrent(await readFile(torrentFile))
  expect(torrent.name).toBe('sda1')
  expect(torrent.pieceCount).toBeGreaterThan(1)
})

afterEach(cleanupAll)
afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
})

/** A loop device over a file of stale data, as large as the image. */
async function staleLoopDevice(name: string): Promise<string> {
  const file = join(work, name)
  await makeStaleTarget(file, IMAGE_SIZE)
  return loopAttach(file)
}

/** `blockswarm deploy` from the one peer `peer` onto `device`; the deploy must succeed and the device must equal the image. */
async function deployFrom(peer: string, device: string): Promise<void> {
  const r = await cli(['deploy', torrentFile, device, '--peer', peer, '--port', String(await freePort()), '--seed-idle', '0', '--json'], { timeoutMs: 90_000 })
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
  const result = JSON.parse(r.stdout)
  expect(result).toMatchObject({ ok: true, piecesDone: torrent.pieceCount, reused: 0, bans: [] })
  expect(result.downloaded).toBeGreaterThanOrEqual(torrent.totalLength)
  expect(await differingExtents(torrent, image, device)).toEqual([])
  const fsck = await run('e2fsck', ['-fn', device])
  expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)
}

describe('a partclone -T directory seeded by a standard client deploys to a loop device', () => {
  it('aria2c checks the directory, seeds it, and blockswarm deploy dials it', async () => {
    const port = await freePort()
    const aria = startProcess('aria2c', [
      ...aria2cFlags(seedRoot, port),
      '--check-integrity=true',
      '--seed-ratio=0.0',
      '--console-log-level=notice',
      torrentFile,
    ])
    const out = captureOutput(aria)
    await waitFor('aria2c to check the files and listen', () => /listening on TCP port/.test(out.text()) || aria.exitCode !== null, 30_000, out.text)
    expect(out.text()).toContain(`Verification finished successfully. file=${join(seedRoot, 'sda1')}`)
    await deployFrom(`127.0.0.1:${port}`, await staleLoopDevice('from-aria2c.img'))
  })

  it('transmission checks the directory, seeds it, and blockswarm deploy dials it', async () => {
    const tr = await startTransmission(await mkdtemp(join(work, 'transmission-')), seedRoot)
    const added = await tr.remote('-a', torrentFile)
    expect(added.code, added.stderr).toBe(0)
    // transmission checks the files it finds on add; a torrent it trusts is 100% and idle (seeding, no peers yet)
    let row = ''
    for (let i = 0; i < 150 && !/ 100% .* (Idle|Seeding) sda1$/.test(row); i++) {
      row = await tr.row()
      await new Promise((r) => setTimeout(r, 200))
    }
    expect(row).toMatch(/ 100% .* (Idle|Seeding) sda1$/)
    await deployFrom(`127.0.0.1:${tr.peerPort}`, await staleLoopDevice('from-transmission.img'))
  })
})
