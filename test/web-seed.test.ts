/**
 * Web seeds against real servers, with no BitTorrent seeder at all: Debian's
 * nginx serving an extents directory (BEP 19: URL/NAME/<offset>) and one raw
 * image file, deployed by `blockswarm deploy` onto loop devices full of stale
 * data (extents exact, free blocks untouched, e2fsck -fn clean). The faults,
 * each with the deploy still exact: wrong bytes in one extent file and a 404
 * (real nginx, a file edited or deleted in the served directory); a stall
 * mid-body, a close after the headers and a server that ignores Range (small
 * node:http servers: nginx cannot be made to do these). And aria2c
 * downloads the same torrent from the same nginx (the URL layout is the
 * standard one).
 */
import { copyFile, cp, mkdtemp, open, readFile, rm, unlink } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { extentName, gapsOf } from '../src/torrent/extents.js'
import { type ExtentTorrent, parseTorrent } from '../src/torrent/metainfo.js'
import type { WebSeedStatus } from '../src/swarm/status.js'
import { extTestTree, makeExtImage, makeStaleTarget, treeDifferences, writeTree } from './helpers/images-ext.js'
import { aria2cFlags, differingExtents, extentFileProblems } from './helpers/interop.js'
import { startNginx, type Nginx } from './helpers/nginx.js'
import { cleanupAll, cli, freePort, loopAttach, onCleanup, readRange, run } from './helpers/sys.js'

const MiB = 1024 * 1024
const IMAGE_SIZE = 64 * MiB
const NAME = 'disk0'

interface WebDeployJson {
  ok: boolean
  error: string | null
  piecesDone: number
  pieceCount: number
  downloaded: number
  hashFailures: number
  fromWebSeeds: number
  webSeeds: WebSeedStatus[]
}

let work: string
let image: string
let stale: string
/** The extents directory nginx serves: www/disk0/<offset>; www/golden.img is the raw image. */
let www: string
let nginx: Nginx
/** url-list = nginx over the extents directory. */
let listed: string
/** `web seed image` = nginx's golden.img. */
let imaged: string
/** No web seed in it: given on the deploy's command line. */
let plain: string
let torrent: ExtentTorrent
const tree = extTestTree(23)

// long-lived for the whole file (cleanupAll after each test would stop them): nginx and the work dir go in afterAll
const keep: (() => Promise<void>)[] = []

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'bsw-webseed-'))
  const content = join(work, 'content')
  await writeTree(content, tree)
  image = join(work, 'golden.img')
  await makeExtImage(image, IMAGE_SIZE, 'mkfs.ext4', ['-b', '1024'], content)
  stale = join(work, 'stale.img')
  await makeStaleTarget(stale, IMAGE_SIZE)
  www = join(work, 'www')
  nginx = await startNginx(www, { keep: true })
  keep.push(nginx.stop)
  listed = join(work, 'listed.torrent')
  const made = await cli(['create', image, '-o', listed, '--name', NAME, '--piece-size', '1M', '--web-seed', nginx.url, '--extents-dir', www])
  expect(made.code, made.stderr).toBe(0)
  expect(made.stderr).not.toContain('does not download from web seeds')
  await copyFile(image, join(www, 'golden.img'))
  imaged = join(work, 'imaged.torrent')
  expect((await cli(['create', image, '-o', imaged, '--name', NAME, '--piece-size', '1M', '--web-seed-image', `${nginx.url}/golden.img`])).code).toBe(0)
  plain = join(work, 'plain.torrent')
  expect((await cli(['create', image, '-o', plain, '--name', NAME, '--piece-size', '1M'])).code).toBe(0)
  torrent = parseTorrent(await readFile(listed))
  expect(torrent.extents.length).toBeGreaterThan(1)
  // every piece fits in the first server's 64 requests at once (the fault tests rely on it: see deployFrom)
  expect(torrent.pieceCount).toBeLessThanOrEqual(64)
  expect(parseTorrent(await readFile(plain)).infoHash).toBe(torrent.infoHash)
}, 120_000)

afterEach(cleanupAll)
afterAll(async () => {
  for (const k of keep) await k()
  if (work) await rm(work, { recursive: true, force: true })
})

/** A loop device over a fresh copy of the stale pattern. */
async function staleLoop(name: string): Promise<string> {
  const file = join(work, name)
  await copyFile(stale, file)
  onCleanup(() => rm(file, { force: true }))
  return loopAttach(file)
}

/** Extents that differ from the source, gaps that differ from the stale pattern. */
async function compareTarget(target: string) {
  const badExtents = await differingExtents(torrent, image, target)
  const touchedGaps: string[] = []
  for (const g of gapsOf(torrent.extents, IMAGE_SIZE)) {
    if (!(await readRange(stale, g.offset, g.length)).equals(await readRange(target, g.offset, g.length))) touchedGaps.push(`0x${g.offset.toString(16)}+${g.length}`)
  }
  return { badExtents, touchedGaps }
}

/** `deploy --json` with no peer and no tracker; asserts it exits 0 and the target is exact and e2fsck-clean. */
async function deployExact(torrentFile: string, name: string, extra: string[] = []): Promise<WebDeployJson> {
  const dev = await staleLoop(name)
  const r = await cli(['deploy', torrentFile, dev, '--port', String(await freePort()), '--bind', '127.0.0.1', '--seed-idle', '0', '--stall-timeout', '60', '--json', ...extra], {
    timeoutMs: 120_000,
  })
  expect(r.code, `deploy to ${dev}:\n${r.stdout}\n${r.stderr}`).toBe(0)
  const j = JSON.parse(r.stdout) as WebDeployJson
  expect(j.ok).toBe(true)
  expect(j.piecesDone).toBe(torrent.pieceCount)
  expect(await compareTarget(dev)).toEqual({ badExtents: [], touchedGaps: [] })
  const fsck = await run('e2fsck', ['-fn', dev])
  expect(fsck.code, `e2fsck -fn ${dev}:\n${fsck.stdout}${fsck.stderr}`).toBe(0)
  return j
}

/** Lines of nginx's access log for the torrent's data (not the readiness probe). */
async function dataRequests(n: Nginx): Promise<string[]> {
  return (await n.requests()).filter((l) => l.includes(`/${NAME}/`) || l.includes('.img'))
}

describe('web seeds: nginx, no BitTorrent seeder', () => {
  it('an extents directory (the url-list create --web-seed wrote): Range requests, deploy onto a stale loop device exact, e2fsck clean', async () => {
    const before = (await dataRequests(nginx)).length
    const j = await deployExact(listed, 'listed.img')
    expect(j.fromWebSeeds).toBe(torrent.totalLength)
    expect(j.downloaded).toBe(torrent.totalLength)
    expect(j.hashFailures).toBe(0)
    expect(j.webSeeds.map((w) => [w.url, w.kind, w.totalDownloaded])).toEqual([[nginx.url, 'extents', torrent.totalLength]])
    const lines = (await dataRequests(nginx)).slice(before)
    // every extent file asked for, by its 32-hex name under the torrent's name, with a Range, answered 206
    const asked = new Set(lines.map((l) => l.split(' ')[2]))
    expect(asked).toEqual(new Set(torrent.extents.map((e) => `/${NAME}/${extentName(e.offset)}`)))
    expect(lines.every((l) => /^206 GET \S+ bytes=\d+-\d+$/.test(l)), lines.join('\n')).toBe(true)
    expect(await treeDifferences(join(work, 'listed.img'), join(work, 'dump-listed'), tree)).toEqual([])
  }, 180_000)

  it("one raw image file (create --web-seed-image, in blockswarm's own dictionary): the extents read at their offsets", async () => {
    const shown = await cli(['inspect', imaged])
    expect(shown.stdout).toContain(`${nginx.url}/golden.img`)
    const raw = parseTorrent(await readFile(imaged))
    expect(raw.webSeeds).toEqual([])
    expect(raw.infoHash).toBe(torrent.infoHash)
    const before = (await dataRequests(nginx)).length
    const j = await deployExact(imaged, 'imaged.img')
    expect(j.fromWebSeeds).toBe(torrent.totalLength)
    expect(j.webSeeds.map((w) => [w.kind, w.totalDownloaded])).toEqual([['image', torrent.totalLength]])
    const lines = (await dataRequests(nginx)).slice(before)
    expect(lines.length).toBeGreaterThan(0)
    // each Range is an extent's bytes at its offset in the image
    for (const l of lines) {
      const m = /^206 GET \/golden\.img bytes=(\d+)-(\d+)$/.exec(l)
      expect(m, l).not.toBeNull()
      const [first, last] = [Number(m![1]), Number(m![2])]
      expect(torrent.extents.some((e) => e.offset <= first && last < e.offset + e.length), l).toBe(true)
    }
  }, 180_000)

  it('deploy --web-seed and --web-seed-image add URLs the torrent does not carry', async () => {
    const j = await deployExact(plain, 'plain.img', ['--web-seed', `${nginx.url}/`, '--web-seed-image', `${nginx.url}/golden.img`])
    expect(j.fromWebSeeds).toBe(torrent.totalLength)
    expect(j.webSeeds.map((w) => w.kind).sort()).toEqual(['extents', 'image'])
    const r = await cli(['deploy', plain, join(work, 'never.img'), '--web-seed', 'ftp://example.invalid/x'])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('only http:// and https:// URLs are supported')
  }, 180_000)

  it('aria2c downloads the same torrent from the same nginx web seed (the standard URL layout)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bsw-aria2-'))
    onCleanup(() => rm(dir, { recursive: true, force: true }))
    const r = await run('aria2c', [...aria2cFlags(dir, await freePort()), '--seed-time=0', '--console-log-level=warn', listed], { timeoutMs: 120_000 })
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(await extentFileProblems(dir, torrent, image)).toEqual([])
  }, 180_000)
})

/** A copy of the extents directory served by its own nginx, changed by `spoil` first. */
async function faultyNginx(spoil: (dir: string) => Promise<void>): Promise<Nginx> {
  const root = join(work, `www-${Math.random().toString(36).slice(2, 8)}`)
  await cp(join(www, NAME), join(root, NAME), { recursive: true })
  onCleanup(() => rm(root, { recursive: true, force: true }))
  await spoil(join(root, NAME))
  return startNginx(root)
}

/**
 * Deploy the plain torrent from a faulty server first and a good one (nginx's
 * raw image) second, 64 requests a server: the first pump gives every piece
 * to the faulty one, so each of its faults is met, and the good one
 * completes what it spoiled.
 */
async function deployFrom(faulty: string, kind: 'extents' | 'image', name: string): Promise<WebDeployJson> {
  const flag = kind === 'extents' ? '--web-seed' : '--web-seed-image'
  return deployExact(plain, name, [flag, faulty, '--web-seed-image', `${nginx.url}/golden.img`, '--web-seed-connections', '64', '--request-timeout', '2', '--skip-check', '--memory', '128M'])
}

/** The largest extent: its file is the one spoiled. */
const biggest = () => torrent.extents.reduce((a, b) => (b.length > a.length ? b : a))

describe('web seed faults: the deploy stays exact', () => {
  it('wrong bytes in one extent file (real nginx): the piece fails, that server is never asked for it again, the other completes it', async () => {
    const e = biggest()
    const bad = await faultyNginx(async (dir) => {
      const fh = await open(join(dir, extentName(e.offset)), 'r+')
      await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, Math.floor(e.length / 2))
      await fh.close()
    })
    const j = await deployFrom(bad.url, 'extents', 'wrong.img')
    expect(j.hashFailures).toBeGreaterThanOrEqual(1)
    const [first] = j.webSeeds
    expect(first.url).toBe(bad.url)
    expect(first.spoiled).toBeGreaterThanOrEqual(1)
    expect(first.lastError).toMatch(/failed its SHA-1 check: not asked of this server again/)
    // each range of the spoiled file asked of it once: a spoiled piece is never fetched from it again
    const ranges = (await bad.requests()).filter((l) => l.includes(extentName(e.offset)))
    expect(ranges.length).toBeGreaterThan(0)
    expect(new Set(ranges).size).toBe(ranges.length)
  }, 180_000)

  it('404 on one file (real nginx, the file deleted): that server is not asked for its pieces again, the other serves them', async () => {
    const e = biggest()
    const bad = await faultyNginx((dir) => unlink(join(dir, extentName(e.offset))))
    const j = await deployFrom(bad.url, 'extents', 'missing.img')
    expect(j.hashFailures).toBe(0)
    expect(j.webSeeds[0].lastError).toMatch(new RegExp(`HTTP 404 for ${bad.url}/${NAME}/${extentName(e.offset)}`))
    expect(j.webSeeds[0].spoiled).toBeGreaterThanOrEqual(1)
    expect((await bad.requests()).some((l) => l.startsWith('404 '))).toBe(true)
  }, 180_000)

  type Fault = 'stall' | 'close-after-headers' | 'ignore-range'

  /** A raw-image server that has every request meet `fault` (nginx cannot be made to). */
  async function faultServer(fault: Fault): Promise<{ url: string; hits: () => number }> {
    let hits = 0
    const sockets = new Set<import('node:net').Socket>()
    const server = http.createServer(async (req, res) => {
      hits++
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
      if (fault === 'ignore-range' || !m) {
        res.writeHead(200, { 'Content-Length': IMAGE_SIZE })
        const fh = await open(image, 'r')
        const s = fh.createReadStream()
        s.pipe(res)
        res.on('close', () => void fh.close().catch(() => {}))
        return
      }
      const [first, last] = [Number(m[1]), Number(m[2])]
      const body = await readRange(image, first, last - first + 1)
      res.writeHead(206, { 'Content-Length': body.length, 'Content-Range': `bytes ${first}-${last}/${IMAGE_SIZE}` })
      res.flushHeaders()
      if (fault === 'close-after-headers') return void res.socket?.destroy()
      // stall: half the body, then nothing
      res.write(body.subarray(0, body.length >> 1))
    })
    server.on('connection', (s) => {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    onCleanup(async () => {
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    })
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/golden.img`, hits: () => hits }
  }

  const faults: [Fault, string, RegExp][] = [
    ['stall', 'stalls mid-body', /stalled: no data for 2 s/],
    ['close-after-headers', 'closes after the headers', /closed the connection after 0 of \d+ bytes/],
    ['ignore-range', 'ignores Range and sends the whole file', /ignores Range \(HTTP 200 to bytes=\d+-\d+, \d+ bytes\): not written/],
  ]
  for (const [fault, what, error] of faults) {
    it(`a server that ${what}: backed off with a clear error, nothing of it written`, async () => {
      const bad = await faultServer(fault)
      const j = await deployFrom(bad.url, 'image', `${fault}.img`)
      expect(bad.hits()).toBeGreaterThan(0)
      expect(j.hashFailures).toBe(0)
      expect(j.webSeeds[0].url).toBe(bad.url)
      expect(j.webSeeds[0].totalDownloaded).toBeLessThan(torrent.totalLength)
      expect(j.webSeeds[0].failures).toBeGreaterThanOrEqual(1)
      expect(j.webSeeds[0].lastError).toMatch(error)
      expect(j.webSeeds[1].totalDownloaded).toBe(torrent.totalLength)
    }, 180_000)
  }
})
