/**
 * blockswarm speaks plain BitTorrent v1 with standard clients, over
 * 127.0.0.1: libtorrent (python3-libtorrent) downloads from `blockswarm seed`
 * and seeds to `blockswarm deploy`; aria2c downloads from `blockswarm seed`
 * through its embedded tracker. The standard clients work in file mode: a
 * directory with one file per extent, named by its hex offset.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { extTestTree, makeExtImage, makeStaleTarget, writeTree } from './helpers/images-ext.js'
import { captureOutput, CLI, cleanupAll, cli, onCleanup, run, startProcess, waitExit } from './helpers/sys.js'

const MiB = 1024 * 1024
const PYTHON = '/usr/bin/python3'

/** A libtorrent peer: "seed" (from save_path, trusted) or "leech" (exits once complete); prints JSON status lines. */
const LIBTORRENT_PEER = `
import json, sys, time
import libtorrent as lt
mode, torrent, save, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ses = lt.session({'listen_interfaces': '127.0.0.1:%d' % port, 'enable_dht': False, 'enable_lsd': False,
                  'enable_upnp': False, 'enable_natpmp': False, 'allow_multiple_connections_per_ip': True})
p = lt.add_torrent_params()
p.ti = lt.torrent_info(torrent)
p.save_path = save
if mode == 'seed':
    p.flags |= lt.torrent_flags.seed_mode
h = ses.add_torrent(p)
for peer in sys.argv[5:]:
    host, pt = peer.rsplit(':', 1)
    h.connect_peer((host, int(pt)))
print(json.dumps({'ready': True}), flush=True)
while True:
    s = h.status()
    print(json.dumps({'progress': s.progress, 'seeding': s.is_seeding, 'peers': s.num_peers,
                      'down': s.total_payload_download, 'failed': s.total_failed_bytes}), flush=True)
    if mode == 'leech' and s.is_seeding:
        break
    time.sleep(0.2)
`

async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer()
      s.once('error', () => resolve(false))
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
    })
    if (ok) return port
  }
}

async function waitFor(what: string, pred: () => boolean, timeoutMs: number, output: () => string): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; output so far:\n${output()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function startSeeder(args: string[]) {
  const child = startProcess(process.execPath, [CLI, 'seed', ...args, '--log-level', 'warn'])
  const out = captureOutput(child)
  await waitFor('the seeder to start', () => out.text().includes('opentracker whitelist line') || child.exitCode !== null, 30_000, out.text)
  if (child.exitCode !== null) throw new Error(`seeder exited ${child.exitCode}:\n${out.text()}`)
  return child
}

/** Every extent file under `dir`/NAME equals the extents directory blockswarm create wrote. */
async function expectSameExtentFiles(dir: string, reference: string, t: ExtentTorrent): Promise<void> {
  const names = (await readdir(join(reference, t.name))).sort()
  expect(names).toEqual(t.extents.map((e) => e.name))
  for (const n of names) {
    const got = await readFile(join(dir, t.name, n))
    expect(got.equals(await readFile(join(reference, t.name, n))), `extent file ${n}`).toBe(true)
  }
}

let work: string
let image: string
let extentsDir: string
let torrentFile: string
let torrent: ExtentTorrent
let trackerPort: number

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
  await writeFile(join(work, 'lt-peer.py'), LIBTORRENT_PEER)
})

afterEach(cleanupAll)
afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
})

describe('interoperability with standard clients', () => {
  it('libtorrent downloads from blockswarm seed', async () => {
    const seedPort = await freePort()
    await startSeeder([torrentFile, image, '--port', String(seedPort)])
    const save = await mkdtemp(join(work, 'lt-leech-'))
    const r = await run(PYTHON, [join(work, 'lt-peer.py'), 'leech', torrentFile, save, String(await freePort()), `127.0.0.1:${seedPort}`], { timeoutMs: 60_000 })
    expect(r.code, r.stderr).toBe(0)
    const last = JSON.parse(r.stdout.trim().split('\n').pop()!)
    expect(last).toMatchObject({ seeding: true, failed: 0 })
    await expectSameExtentFiles(save, extentsDir, torrent)
  })

  it('blockswarm deploy downloads from a libtorrent seed', async () => {
    const ltPort = await freePort()
    const lt = startProcess(PYTHON, [join(work, 'lt-peer.py'), 'seed', torrentFile, extentsDir, String(ltPort)])
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
    const got = await readFile(target)
    const want = await readFile(image)
    for (const e of torrent.extents) expect(got.subarray(e.offset, e.offset + e.length).equals(want.subarray(e.offset, e.offset + e.length))).toBe(true)
    lt.kill('SIGTERM')
    await waitExit(lt, 10_000)
  })

  it('transmission downloads from blockswarm seed, which dials it as a static peer', async () => {
    const dir = await mkdtemp(join(work, 'transmission-'))
    const [peerPort, rpcPort, seedPort] = [await freePort(), await freePort(), await freePort()]
    const daemon = startProcess('transmission-daemon', [
      '-f', '-g', join(dir, 'config'), '-w', join(dir, 'download'), '-P', String(peerPort), '-p', String(rpcPort),
      '-T', '-O', '-Y', '-M', '--no-utp', '--log-error',
    ])
    const daemonOut = captureOutput(daemon)
    const remote = (...args: string[]) => run('transmission-remote', [String(rpcPort), ...args], { timeoutMs: 10_000 })
    let ready = false
    for (let i = 0; i < 100 && !ready && daemon.exitCode === null; i++) {
      ready = (await remote('-l')).code === 0
      if (!ready) await new Promise((r) => setTimeout(r, 200))
    }
    expect(ready, daemonOut.text()).toBe(true)
    expect((await remote('-a', torrentFile)).code).toBe(0)
    await startSeeder([torrentFile, image, '--port', String(seedPort), '--peer', `127.0.0.1:${peerPort}`])
    let list = ''
    for (let i = 0; i < 300 && !/ 100% /.test(list); i++) {
      list = (await remote('-l')).stdout
      await new Promise((r) => setTimeout(r, 200))
    }
    expect(list).toMatch(/ 100% /)
    await expectSameExtentFiles(join(dir, 'download'), extentsDir, torrent)
  })

  it('aria2c downloads from blockswarm seed through the embedded tracker', async () => {
    const seedPort = await freePort()
    await startSeeder([torrentFile, image, '--port', String(seedPort), '--tracker-embedded', String(trackerPort)])
    const dir = await mkdtemp(join(work, 'aria2-'))
    onCleanup(() => rm(dir, { recursive: true, force: true }))
    const r = await run(
      'aria2c',
      [
        `--dir=${dir}`,
        '--seed-time=0',
        '--enable-dht=false',
        '--enable-dht6=false',
        '--bt-enable-lpd=false',
        '--enable-peer-exchange=false',
        `--listen-port=${await freePort()}`,
        '--summary-interval=0',
        '--console-log-level=warn',
        torrentFile,
      ],
      { timeoutMs: 60_000 },
    )
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    await expectSameExtentFiles(dir, extentsDir, torrent)
  })
})
