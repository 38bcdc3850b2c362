/**
 * End to end, with real processes on 127.0.0.1 and real loop devices: a real
 * ext4 image (mkfs.ext4 -d) made into a torrent by `blockswarm create`, seeded
 * by `blockswarm seed`, deployed by `blockswarm deploy` onto loop devices full
 * of stale data. Checked: every extent equals the source, every free block
 * still holds the stale bytes, e2fsck -fn is clean, the files read back; a
 * seeder sending corrupt data is banned and the deploy still comes out exact;
 * a deploy killed with SIGKILL halfway resumes and fetches only what is
 * missing.
 */
import { copyFile, open, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { gapsOf } from '../src/torrent/extents.js'
import { extTestTree, makeGoldenWork, treeDifferences } from './helpers/images-ext.js'
import { captureOutput, cleanupAll, CLI, cli, freePort, loopAttach, readRange, run, startProcess, waitExit, waitFor } from './helpers/sys.js'

const MiB = 1024 * 1024
const IMAGE_SIZE = 64 * MiB

/** Start `blockswarm seed` and wait until it says it is seeding. */
async function startSeeder(args: string[]) {
  const child = startProcess(process.execPath, [CLI, 'seed', ...args, '--log-level', 'warn'])
  const out = captureOutput(child)
  await waitFor('the seeder to start', () => out.text().includes('opentracker whitelist line') || child.exitCode !== null, 30_000, out.text)
  if (child.exitCode !== null) throw new Error(`seeder exited ${child.exitCode}:\n${out.text()}`)
  return { child, out }
}

/** The extents that differ between two devices/files, and the gaps of `target` that differ from `stale`. */
async function compareTarget(t: ExtentTorrent, source: string, target: string, stale: string) {
  const badExtents: string[] = []
  for (const e of t.extents) {
    if (!(await readRange(source, e.offset, e.length)).equals(await readRange(target, e.offset, e.length))) badExtents.push(`0x${e.offset.toString(16)}+${e.length}`)
  }
  const touchedGaps: string[] = []
  for (const g of gapsOf(t.extents, IMAGE_SIZE)) {
    if (!(await readRange(stale, g.offset, g.length)).equals(await readRange(target, g.offset, g.length))) touchedGaps.push(`0x${g.offset.toString(16)}+${g.length}`)
  }
  return { badExtents, touchedGaps }
}

interface DeployJson {
  ok: boolean
  piecesDone: number
  pieceCount: number
  total: number
  downloaded: number
  uploaded: number
  reused: number
  checkRate: number | null
  bans: { peer: string; reason: string }[]
  error: string | null
  doneReason: string | null
}

function parseDeploy(stdout: string, stderr: string): DeployJson {
  try {
    return JSON.parse(stdout) as DeployJson
  } catch {
    throw new Error(`deploy printed no JSON:\n${stdout}\n${stderr}`)
  }
}

let work: string
let image: string
let stale: string
let torrentFile: string
let torrent: ExtentTorrent
let trackerPort: number
const tree = extTestTree(41)

beforeAll(async () => {
  // shared by the tests (cleanupAll after each test would remove a tempDir): removed in afterAll
  ;({ work, image, stale } = await makeGoldenWork('bsw-deploy-', 41, IMAGE_SIZE))
  trackerPort = await freePort()
  torrentFile = join(work, 'golden.torrent')
  const made = await cli(['create', image, '-o', torrentFile, '--piece-size', '256K', '--tracker', `http://127.0.0.1:${trackerPort}/announce`])
  expect(made.code, made.stderr).toBe(0)
  torrent = parseTorrent(await readFile(torrentFile))
  // a real filesystem torrent: free blocks are left out
  expect(torrent.extents.length).toBeGreaterThan(1)
  expect(torrent.totalLength).toBeLessThan(IMAGE_SIZE)
})

afterEach(cleanupAll)
afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
})

/** A loop device over a fresh copy of the stale pattern. */
async function staleLoop(name: string): Promise<string> {
  const file = join(work, name)
  await copyFile(stale, file)
  return loopAttach(file)
}

describe('deploy', () => {
  it('one seeder with an embedded tracker, three deploys onto stale loop devices: exact extents, free blocks untouched, e2fsck clean', async () => {
    const seedPort = await freePort()
    const seeder = await startSeeder([torrentFile, image, '--tracker-embedded', String(trackerPort), '--port', String(seedPort)])
    expect(seeder.out.text()).toContain(torrent.infoHash)

    const devices = await Promise.all([0, 1, 2].map((i) => staleLoop(`target${i}.img`)))
    const ports = await Promise.all(devices.map(() => freePort()))
    const results = await Promise.all(devices.map((dev, i) => cli(['deploy', torrentFile, dev, '--port', String(ports[i]), '--seed-idle', '3', '--json'], { timeoutMs: 90_000 })))

    for (const [i, r] of results.entries()) {
      expect(r.code, `deploy ${i} to ${devices[i]}:\n${r.stdout}\n${r.stderr}`).toBe(0)
      const j = parseDeploy(r.stdout, r.stderr)
      expect(j.ok).toBe(true)
      expect(j.piecesDone).toBe(torrent.pieceCount)
      expect(j.bans).toEqual([])
    }
    for (const dev of devices) {
      expect(await compareTarget(torrent, image, dev, stale)).toEqual({ badExtents: [], touchedGaps: [] })
      const fsck = await run('e2fsck', ['-fn', dev])
      expect(fsck.code, `e2fsck -fn ${dev}:\n${fsck.stdout}${fsck.stderr}`).toBe(0)
    }
    expect(await treeDifferences(devices[0], join(work, 'dump0'), tree)).toEqual([])
    const total = results.map((r) => parseDeploy(r.stdout, r.stderr))
    console.log(
      `three deploys: downloaded ${total.map((j) => j.downloaded).join(', ')} bytes, uploaded ${total.map((j) => j.uploaded).join(', ')} bytes; ` +
        `done: ${total.map((j) => j.doneReason).join('; ')}`,
    )
  })

  it('a seeder sending corrupt data is banned (by address and peer id) and the deploy still comes out exact', async () => {
    // every 16 KiB block inside the extents gets one flipped byte on the bad seeder's copy
    const corrupt = join(work, 'corrupt.img')
    await copyFile(image, corrupt)
    const fh = await open(corrupt, 'r+')
    try {
      for (const e of torrent.extents) {
        for (let at = 0; at < e.length; at += 16 * 1024) {
          const pos = e.offset + at + Math.min(100, e.length - at - 1)
          const b = Buffer.alloc(1)
          await fh.read(b, 0, 1, pos)
          b[0] ^= 0xff
          await fh.write(b, 0, 1, pos)
        }
      }
    } finally {
      await fh.close()
    }
    const goodPort = await freePort()
    const badPort = await freePort()
    await startSeeder([torrentFile, image, '--port', String(goodPort)])
    await startSeeder([torrentFile, corrupt, '--port', String(badPort)])

    const dev = await staleLoop('target-ban.img')
    const r = await cli(
      ['deploy', torrentFile, dev, '--port', String(await freePort()), '--peer', `127.0.0.1:${badPort}`, '--peer', `127.0.0.1:${goodPort}`, '--seed-idle', '0', '--json'],
      { timeoutMs: 90_000 },
    )
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    const j = parseDeploy(r.stdout, r.stderr)
    expect(j.ok).toBe(true)
    expect(j.bans.length, JSON.stringify(j.bans)).toBe(1)
    expect(j.bans[0].peer).toMatch(new RegExp(`^127\\.0\\.0\\.1:${badPort} -BS`))
    expect(j.bans[0].reason).toMatch(/piece \d+/)
    expect(await compareTarget(torrent, image, dev, stale)).toEqual({ badExtents: [], touchedGaps: [] })
    const fsck = await run('e2fsck', ['-fn', dev])
    expect(fsck.code, fsck.stdout).toBe(0)
    console.log(`ban: ${j.bans[0].peer}: ${j.bans[0].reason}`)
  })

  it('a deploy killed with SIGKILL halfway resumes: re-uses what was written and downloads only what is missing', async () => {
    const seedPort = await freePort()
    // a slow seeder, so that the first deploy is still running when it is killed
    const seeder = await startSeeder([torrentFile, image, '--port', String(seedPort), '--upload-rate', '3M'])
    const dev = await staleLoop('target-resume.img')
    const args = ['deploy', torrentFile, dev, '--peer', `127.0.0.1:${seedPort}`, '--seed-idle', '0', '--progress-interval', '0.2']

    const first = startProcess(process.execPath, [CLI, ...args, '--port', String(await freePort())])
    const out = captureOutput(first)
    const half = Math.ceil(torrent.pieceCount / 2)
    const piecesSeen = () => Math.max(0, ...[...out.text().matchAll(/ (\d+)\/\d+ pieces/g)].map((m) => Number(m[1])))
    await waitFor('the first deploy to reach half way', () => piecesSeen() >= half || first.exitCode !== null, 60_000, out.text)
    expect(first.exitCode, `the first deploy ended before it could be killed:\n${out.text()}`).toBe(null)
    first.kill('SIGKILL')
    expect(await waitExit(first, 10_000)).toBe(null)
    const doneAtKill = piecesSeen()

    seeder.child.kill('SIGTERM')
    await waitExit(seeder.child, 10_000)
    await startSeeder([torrentFile, image, '--port', String(seedPort)])
    const r = await cli([...args, '--port', String(await freePort()), '--json'], { timeoutMs: 90_000 })
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    const j = parseDeploy(r.stdout, r.stderr)
    expect(j.ok).toBe(true)
    const missing = j.total - j.reused
    console.log(
      `resume: ${doneAtKill}/${torrent.pieceCount} pieces reported before SIGKILL; re-run re-used ${j.reused} bytes ` +
        `(check at ${((j.checkRate ?? 0) / MiB).toFixed(0)} MiB/s), downloaded ${j.downloaded} bytes for ${missing} missing`,
    )
    expect(j.reused).toBeGreaterThanOrEqual(doneAtKill * torrent.pieceLength - torrent.pieceLength)
    // what was verified before the kill is not fetched again: at most the missing bytes, plus a few pieces of slack
    // for endgame duplicates
    expect(j.downloaded).toBeLessThanOrEqual(missing + 4 * torrent.pieceLength)
    expect(await compareTarget(torrent, image, dev, stale)).toEqual({ badExtents: [], touchedGaps: [] })
    const fsck = await run('e2fsck', ['-fn', dev])
    expect(fsck.code, fsck.stdout).toBe(0)
  })

  it('refuses a target too small for the extents, saying which extent does not fit', async () => {
    const small = join(work, 'small.img')
    await writeFile(small, Buffer.alloc(MiB))
    const r = await cli(['deploy', torrentFile, small, '--port', String(await freePort())])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/extent 0x[0-9a-f]+\+\d+ ends past .*small\.img \(size 1048576\)/)
  })
})
