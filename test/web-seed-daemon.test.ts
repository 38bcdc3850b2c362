/**
 * Web seeds through the daemon, end to end with real parts and no BitTorrent
 * seeder anywhere: a `blockswarm daemon` process, Debian's nginx serving an
 * extents directory and the raw image, and the CLI over gRPC. `add
 * --web-seed URL --web-seed-image URL` of a torrent that carries no url-list
 * deploys onto a file target exactly; `status` shows a row per web seed
 * under its torrent with its bytes, `status --json` has them, and the
 * metrics endpoint counts the bytes from web seeds. A URL that is not
 * http(s) is INVALID_ARGUMENT naming it, over gRPC and from the CLI, and
 * nothing is added.
 * Needs a build (`npx tsc -p .`): bin/blockswarm.js runs dist/.
 */
import { copyFile, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { torrentJson } from '../src/cli/torrent-view.js'
import { connectControl } from '../src/control/client.js'
import { createTorrent } from '../src/create/create.js'
import { formatBytes } from '../src/util/size.js'
import { grpcError, makeImage, makeTarget, startDaemonProcess } from './helpers/grpc-fixtures.js'
import { differingExtents } from './helpers/interop.js'
import { scrape, series } from './helpers/metrics.js'
import { startNginx } from './helpers/nginx.js'
import { cleanupAll, cli, freePort, onCleanup, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024
const NAME = 'sda1'

/** A web seed as `status --json` shows it. */
type WebSeedJson = ReturnType<typeof torrentJson>['webSeeds'][number]

async function statusJson(address: string): Promise<any[]> {
  const r = await cli(['status', '--json', '--daemon', address])
  if (r.code !== 0) throw new Error(`status --json exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')

describe('web seeds over the daemon (gRPC AddTorrent, add, status, metrics)', () => {
  it('add --web-seed/--web-seed-image, no BitTorrent seeder: the file target exact, status rows and --json, the metrics counter; ftp:// refused', async () => {
    const dir = await tempDir('bsw-webseed-daemon-')
    const image = await makeImage(dir, NAME, 4 * MiB)
    expect(image.torrent.webSeeds).toEqual([])
    // nginx serves the same extents as an extents directory (www/sda1/<offset>) and as the raw image (www/sda1.img)
    const www = join(dir, 'www')
    const again = await createTorrent({ source: image.path, name: NAME, mode: 'zero', pieceLength: 64 * 1024, extentsDir: www })
    expect(again.torrent.infoHash).toBe(image.torrent.infoHash)
    await copyFile(image.path, join(www, `${NAME}.img`))
    const nginx = await startNginx(www)

    const address = `127.0.0.1:${await freePort()}`
    const metrics = `127.0.0.1:${await freePort()}`
    await startDaemonProcess(['--listen', address, '--port', '0', '--bind', '127.0.0.1', '--status-interval', '0', '--log-level', 'warn', '--metrics', metrics], address)
    const target = await makeTarget(dir, 'target.img', image.size)
    const extentsUrl = `${nginx.url}/`
    const imageUrl = `${nginx.url}/${NAME}.img`

    // not http(s): refused before anything is added, the bad entry and URL named
    const fromCli = await cli(['add', image.torrentFile, target, '--daemon', address, '--web-seed', extentsUrl, '--web-seed', 'ftp://x'])
    expect(fromCli).toMatchObject({ code: 1, stderr: 'blockswarm: web_seeds[1] ftp://x: only http:// and https:// URLs are supported [INVALID_ARGUMENT]\n' })
    const c = connectControl(address)
    onCleanup(async () => c.close())
    const torrent = await readFile(image.torrentFile)
    expect(await grpcError(c.blockswarm.AddTorrent({ torrent, target, webSeedImages: [imageUrl, 'ftp://x'] }))).toEqual({
      code: 'INVALID_ARGUMENT',
      details: 'web_seed_images[1] ftp://x: only http:// and https:// URLs are supported',
    })
    expect(await grpcError(c.blockswarm.AddTorrent({ torrent, target, webSeeds: ['not a url'] }))).toEqual({ code: 'INVALID_ARGUMENT', details: 'web_seeds[0] "not a url" is not a URL' })
    expect(await statusJson(address)).toEqual([])

    const added = await cli(['add', image.torrentFile, target, '--daemon', address, '--web-seed', extentsUrl, '--web-seed-image', imageUrl])
    expect(added.code, added.stderr).toBe(0)
    await expect.poll(async () => (await statusJson(address))[0]?.complete, { timeout: 60_000 }).toBe(true)
    expect(await differingExtents(image.torrent, image.path, target)).toEqual([])

    const [t] = await statusJson(address)
    const total = image.torrent.totalLength
    expect(t).toMatchObject({ infoHash: image.torrent.infoHash, state: 'seeding', peers: 0, totalDownloaded: total, fromWebSeeds: total })
    const seeds = t.webSeeds as WebSeedJson[]
    expect(seeds.map((w) => [w.url, w.kind])).toEqual([
      [extentsUrl, 'extents'],
      [imageUrl, 'image'],
    ])
    expect(seeds.reduce((n, w) => n + w.totalDownloaded, 0)).toBe(total)
    for (const w of seeds) expect(w).toMatchObject({ spoiledPieces: 0, faults: 0, lastError: null })
    const log = (await nginx.requests()).filter((l) => l.includes(`/${NAME}`))
    expect(log.length).toBeGreaterThan(0)
    expect(log.every((l) => l.startsWith('206 GET ')), log.join('\n')).toBe(true)

    // the table: the torrent's row, then one row per web seed: kind, URL, state, rate, bytes, last error
    const table = await cli(['status', '--daemon', address])
    expect(table.code, table.stderr).toBe(0)
    const lines = table.stdout.split('\n')
    expect(lines[0]).toMatch(/^HASH +NAME +STATE +PROGRESS +DOWN +UP +PEERS +ETA +TARGET$/)
    expect(lines[1]).toMatch(new RegExp(`^${image.torrent.infoHash}  ${NAME}  seeding +100\\.0% .* ${escape(target)}$`))
    seeds.forEach((w, i) => {
      const label = w.kind === 'image' ? 'web seed image' : 'web seed'
      expect(lines[2 + i]).toMatch(new RegExp(`^  ${label} +${escape(w.url)} +${w.state} +[\\d.]+ \\S*B/s +${escape(formatBytes(w.totalDownloaded))} +-$`))
    })
    expect(lines.slice(2 + seeds.length)).toEqual([''])

    // Prometheus: the bytes from web seeds, per torrent, beside the download total
    const m = await scrape(metrics)
    const labels = { infohash: image.torrent.infoHash, name: NAME }
    expect(m.get(series('blockswarm_torrent_web_seed_downloaded_bytes_total', labels))).toBe(total)
    expect(m.get(series('blockswarm_torrent_downloaded_bytes_total', labels))).toBe(total)
  }, 120_000)
})
