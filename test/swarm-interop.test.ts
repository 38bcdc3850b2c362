/**
 * blockswarm speaks plain BitTorrent v1 with standard clients, over
 * 127.0.0.1: libtorrent (python3-libtorrent) and aria2c (through the embedded
 * tracker) download from `blockswarm seed` of a read-only loop device;
 * libtorrent seeds to `blockswarm deploy`; transmission downloads from a
 * seed that dials it. The standard clients work in file mode: a directory
 * with one file per extent, named by its hex offset, each checked against
 * the source's bytes at that offset.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { extTestTree, makeExtImage, makeStaleTarget, writeTree } from './helpers/images-ext.js'
import { aria2cFlags, differingExtents, extentFileProblems, freePort, PYTHON, startSeeder, startTransmission, waitFor, writeLibtorrentPeer } from './helpers/interop.js'
import { captureOutput, cleanupAll, cli, loopAttach, run, startProcess, waitExit } from './helpers/sys.js'

const MiB = 1024 * 1024

let work: string
let image: string
let extentsDir: string
let torrentFile: string
let torrent: ExtentTorrent
let trackerPort: number
let ltPeer: string

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'bsw-interop-'))
  const content = join(work, 'content')
  await writeTree(content, extTestTree(5))
  image = join(work, 'golden.img')
  await makeExtImage(image, 32 * MiB, 'mkfs.ext4', ['-b', '1024'], content)
  extentsDir = join(work, 'extents')
  trackerPort = await freePort()
  torrentFile = join(work, 'golden.torrent')
  const made = await cli(['create', image, '-o', torrentFile, '--piece-size', '256K', '--tracker', `http://127.0.0.1:${trackerPort}/announce`, '--extents-dir', extentsDir])
  expect(made.code, made.stderr).toBe(0)
  torrent = parseTorrent(await readFile(torrentFile))
  ltPeer = await writeLibtorrentPeer(work)
})

afterEach(cleanupAll)
afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
})

describe('interoperability with standard clients', () => {
  it('libtorrent downloads from blockswarm seed of a read-only loop device', async () => {
    const source = await loopAttach(image, { readOnly: true })
    const seedPort = await freePort()
    await startSeeder([torrentFile, source, '--port', String(seedPort)])
    const save = await mkdtemp(join(work, 'lt-leech-'))
    const r = await run(PYTHON, [ltPeer, 'leech', torrentFile, save, String(await freePort()), `127.0.0.1:${seedPort}`], { timeoutMs: 60_000 })
    expect(r.code, r.stderr).toBe(0)
    const last = JSON.parse(r.stdout.trim().split('\n').pop()!)
    expect(last).toMatchObject({ seeding: true, failed: 0 })
    expect(await extentFileProblems(save, torrent, source)).toEqual([])
  })

  it('blockswarm deploy downloads from a libtorrent seed', async () => {
    const ltPort = await freePort()
    const lt = startProcess(PYTHON, [ltPeer, 'seed', torrentFile, extentsDir, String(ltPort)])
    const out = captureOutput(lt)
    await waitFor('libtorrent to start', () => out.text().includes('"ready"') || lt.exitCode !== null, 30_000, out.text)
    const target = join(work, 'from-libtorrent.img')
    await makeStaleTarget(target, 32 * MiB)
    const r = await cli(['deploy', torrentFile, target, '--port', String(await freePort()), '--peer', `127.0.0.1:${ltPort}`, '--seed-idle', '0', '--json'], {
      timeoutMs: 60_000,
    })
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    const j = JSON.parse(r.stdout)
    expect(j).toMatchObject({ ok: true, piecesDone: torrent.pieceCount, bans: [] })
    expect(await differingExtents(torrent, image, target)).toEqual([])
    lt.kill('SIGTERM')
    await waitExit(lt, 10_000)
  })

  it('transmission downloads from blockswarm seed, which dials it as a static peer', async () => {
    const dir = await mkdtemp(join(work, 'transmission-'))
    const tr = await startTransmission(dir, join(dir, 'download'))
    const added = await tr.remote('-a', torrentFile)
    expect(added.code, added.stderr).toBe(0)
    // transmission ignores 127.x peers from a tracker: the seed dials it
    await startSeeder([torrentFile, image, '--port', String(await freePort()), '--peer', `127.0.0.1:${tr.peerPort}`])
    let row = ''
    for (let i = 0; i < 300 && !/ 100% /.test(row); i++) {
      row = await tr.row()
      await new Promise((r) => setTimeout(r, 200))
    }
    expect(row, tr.output()).toMatch(/ 100% /)
    expect(await extentFileProblems(join(dir, 'download'), torrent, image)).toEqual([])
  })

  it('aria2c downloads from blockswarm seed of a read-only loop device through the embedded tracker', async () => {
    const source = await loopAttach(image, { readOnly: true })
    await startSeeder([torrentFile, source, '--port', String(await freePort()), '--tracker-embedded', String(trackerPort)])
    const dir = await mkdtemp(join(work, 'aria2-'))
    const r = await run('aria2c', [...aria2cFlags(dir, await freePort()), '--seed-time=0', '--console-log-level=warn', torrentFile], { timeoutMs: 60_000 })
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    expect(await extentFileProblems(dir, torrent, source)).toEqual([])
  })
})
