/**
 * blockswarm through opentracker, Debian's build (whitelist mode: only the
 * info-hashes listed in its access.whitelist file are tracked): the line
 * `blockswarm seed` prints goes into the whitelist, opentracker reloads it on
 * SIGHUP, the running seed retries and is let in, and two `blockswarm deploy` that know only the
 * torrent's announce URL write exact loop devices. A torrent not in the
 * whitelist gets no peers, and the deploy says that the tracker refused it.
 */
import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { extTestTree, makeExtImage, makeStaleTarget, writeTree } from './helpers/images-ext.js'
import { differingExtents, freePort, startSeeder, waitFor } from './helpers/interop.js'
import { announceSeed, NOT_AUTHORIZED, scrape as scrapeTracker, startOpentracker as startTracker } from './helpers/opentracker.js'
import { captureOutput, CLI, cleanupAll, cli, loopAttach, run, startProcess, waitExit } from './helpers/sys.js'

const MiB = 1024 * 1024
const IMAGE_SIZE = 32 * MiB

let work: string
let image: string
let trackerPort: number
let announceUrl: string
/** Listed in the whitelist (from the seed's output) during the test. */
let listed: { file: string; torrent: ExtentTorrent }
/** Never listed: same image, another piece size, so another info-hash. */
let unlisted: { file: string; torrent: ExtentTorrent }

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'bsw-opentracker-'))
  const content = join(work, 'content')
  await writeTree(content, extTestTree(31))
  image = join(work, 'golden.img')
  await makeExtImage(image, IMAGE_SIZE, 'mkfs.ext4', ['-b', '1024'], content)
  trackerPort = await freePort()
  announceUrl = `http://127.0.0.1:${trackerPort}/announce`
  const make = async (name: string, pieceSize: string) => {
    const file = join(work, `${name}.torrent`)
    const r = await cli(['create', image, '-o', file, '--name', name, '--piece-size', pieceSize, '--tracker', announceUrl])
    expect(r.code, r.stderr).toBe(0)
    return { file, torrent: parseTorrent(await readFile(file)) }
  }
  listed = await make('listed', '1M')
  unlisted = await make('unlisted', '512K')
})

afterEach(cleanupAll)
afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
})

const announce = (infoHash: string) => announceSeed(trackerPort, infoHash)
const scrape = (infoHash: string) => scrapeTracker(trackerPort, infoHash)
const startOpentracker = () => startTracker(trackerPort)

describe('opentracker (whitelist mode) as the tracker', () => {
  it('the line blockswarm seed prints whitelists the torrent; two deploys find the seed through opentracker', async () => {
    const tracker = await startOpentracker()
    expect(await announce(listed.torrent.infoHash)).toContain(NOT_AUTHORIZED)

    // the seed prints the line; opentracker refuses the seed until the line is in its whitelist
    const seed = await startSeeder([listed.file, image, '--port', String(await freePort())])
    // the line must be what opentracker's whitelist parser takes: 40 hex digits at the start of a line
    expect(seed.whitelistLine).toMatch(/^[0-9a-f]{40}$/)
    expect(seed.whitelistLine).toBe(listed.torrent.infoHash)
    await waitFor('the seed to report the refusal', () => seed.output().includes(NOT_AUTHORIZED), 30_000, seed.output)
    await appendFile(tracker.whitelist, seed.whitelistLine + '\n')
    tracker.reload()
    // the running seed retries (after its back-off) and is let in
    let seeds = 0
    for (let i = 0; i < 600 && seeds < 1; i++) {
      seeds = (await scrape(listed.torrent.infoHash)).complete
      if (seeds < 1) await new Promise((r) => setTimeout(r, 100))
    }
    expect(seeds, `opentracker never counted the seed; seed output:\n${seed.output()}\nopentracker:\n${tracker.output()}`).toBe(1)

    const targets = []
    for (const name of ['node-a.img', 'node-b.img']) {
      const file = join(work, name)
      await makeStaleTarget(file, IMAGE_SIZE)
      targets.push(await loopAttach(file))
    }
    // no --peer: the announce URL in the torrent is the only way to find anyone
    const runs = await Promise.all(
      targets.map(async (dev) => cli(['deploy', listed.file, dev, '--port', String(await freePort()), '--seed-idle', '2', '--json'], { timeoutMs: 90_000 })),
    )
    for (const [i, r] of runs.entries()) {
      expect(r.code, `${targets[i]}: ${r.stdout}\n${r.stderr}`).toBe(0)
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, piecesDone: listed.torrent.pieceCount, reused: 0, bans: [] })
      expect(await differingExtents(listed.torrent, image, targets[i])).toEqual([])
      const fsck = await run('e2fsck', ['-fn', targets[i]])
      expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)
    }
    // both told opentracker they completed; the seed, complete from the start, did not (BEP 3)
    expect((await scrape(listed.torrent.infoHash)).downloaded).toBe(2)
  })

  it('a torrent not in the whitelist gets no peers, and the deploy says the tracker refused it', async () => {
    const tracker = await startOpentracker()
    // a seed of it is running and announcing too: opentracker refuses both
    const seed = await startSeeder([unlisted.file, image, '--port', String(await freePort())])
    expect(await announce(unlisted.torrent.infoHash)).toContain(NOT_AUTHORIZED)

    const target = join(work, 'refused.img')
    await makeStaleTarget(target, IMAGE_SIZE)
    const before = await readFile(target)
    const deploy = startProcess(process.execPath, [CLI, 'deploy', unlisted.file, target, '--port', String(await freePort()), '--json'])
    const out = captureOutput(deploy)
    let stdout = ''
    deploy.stdout!.on('data', (d) => (stdout += d))
    await waitFor('the deploy to report the refusal', () => out.text().includes(NOT_AUTHORIZED) || deploy.exitCode !== null, 30_000, out.text)
    expect(out.text()).toMatch(/tracker announce failed/)
    deploy.kill('SIGTERM')
    expect(await waitExit(deploy, 15_000)).toBe(143)
    const result = JSON.parse(stdout)
    expect(result).toMatchObject({ ok: false, piecesDone: 0, downloaded: 0 })
    expect(result.error).toMatch(/interrupted by SIGTERM at 0\//)
    // the status says why: the tracker's own words
    expect(result.trackerError).toContain(NOT_AUTHORIZED)
    expect((await readFile(target)).equals(before)).toBe(true)
    // no progress line ever showed a peer, and opentracker holds no seed of it
    expect(out.text()).toMatch(/peers 0 \(0 seeds\)/)
    expect(out.text()).not.toMatch(/peers [1-9]/)
    expect((await scrape(unlisted.torrent.infoHash)).complete, tracker.output() + seed.output()).toBeLessThanOrEqual(0)
  })
})
