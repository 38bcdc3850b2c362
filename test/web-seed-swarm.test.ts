/**
 * One web seed (Debian's nginx over an extents directory) and four
 * `blockswarm deploy` nodes on 127.0.0.1 that know each other (--peer), no
 * BitTorrent seeder: every node's target is exact and e2fsck-clean, and the
 * share of bytes the nodes took from each other rather than from HTTP is
 * printed (goal: at least 60%) and must be more than half.
 */
import { copyFile, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, expect, it } from 'vitest'
import { parseTorrent } from '../src/torrent/metainfo.js'
import { makeGoldenWork } from './helpers/images-ext.js'
import { differingExtents } from './helpers/interop.js'
import { startNginx } from './helpers/nginx.js'
import { cleanupAll, cli, freePort, loopAttach, run } from './helpers/sys.js'

const MiB = 1024 * 1024
const NODES = 4
let work = ''

afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
})

it('1 web seed + 4 nodes, no BitTorrent seeder: every node exact, most bytes from peers', async () => {
  const golden = await makeGoldenWork('bsw-webseed-swarm-', 31, 64 * MiB)
  work = golden.work
  const { image, stale } = golden
  const www = join(work, 'www')
  const nginx = await startNginx(www)
  const torrentFile = join(work, 'golden.torrent')
  const made = await cli(['create', image, '-o', torrentFile, '--name', 'disk0', '--piece-size', '256K', '--web-seed', nginx.url, '--extents-dir', www])
  expect(made.code, made.stderr).toBe(0)
  const torrent = parseTorrent(await readFile(torrentFile))
  const ports = await Promise.all(Array.from({ length: NODES }, () => freePort()))
  const devices: string[] = []
  for (let i = 0; i < NODES; i++) {
    await copyFile(stale, join(work, `node${i}.img`))
    devices.push(await loopAttach(join(work, `node${i}.img`)))
  }
  const results = await Promise.all(
    devices.map((dev, i) =>
      cli(
        ['deploy', torrentFile, dev, '--port', String(ports[i]), '--bind', '127.0.0.1', '--seed-idle', '5', '--stall-timeout', '60', '--json', ...ports.filter((_, k) => k !== i).flatMap((p) => ['--peer', `127.0.0.1:${p}`])],
        { timeoutMs: 180_000 },
      ),
    ),
  )
  let downloaded = 0
  let fromWeb = 0
  for (const [i, r] of results.entries()) {
    expect(r.code, `node ${i}:\n${r.stdout}\n${r.stderr}`).toBe(0)
    const j = JSON.parse(r.stdout) as { ok: boolean; downloaded: number; fromWebSeeds: number }
    expect(j.ok).toBe(true)
    downloaded += j.downloaded
    fromWeb += j.fromWebSeeds
  }
  for (const dev of devices) {
    expect(await differingExtents(torrent, image, dev)).toEqual([])
    const fsck = await run('e2fsck', ['-fn', dev])
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)
  }
  const share = 1 - fromWeb / downloaded
  process.stdout.write(`1 web seed + ${NODES} nodes: ${(share * 100).toFixed(1)}% of ${downloaded} bytes from peers, ${fromWeb} bytes from the web seed (${(fromWeb / torrent.totalLength).toFixed(2)} × the torrent)\n`)
  expect(fromWeb).toBeGreaterThanOrEqual(torrent.totalLength)
  expect(share).toBeGreaterThan(0.5)
}, 300_000)
