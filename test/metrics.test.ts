/**
 * The Prometheus endpoint over real sockets: a leecher Session fed first by
 * a seeder of corrupt data (hash failures, a ban) and then by a good one;
 * its metrics say what its status says, per torrent (infohash + name
 * labels), with process metrics beside them, and a removed torrent's series
 * are gone. Then `seed --metrics` and `deploy --metrics` as processes: the
 * deploy's endpoint shows the download in progress, the seeder's what it
 * uploaded.
 */
import { copyFile, open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { parseMetricsAddress, serveSessionMetrics } from '../src/metrics/metrics-server.js'
import type { Session } from '../src/session/session.js'
import { extentDigest, makeImage, makeTarget, startSession, waitStatus } from './helpers/grpc-fixtures.js'
import { scrape, series } from './helpers/metrics.js'
import { captureOutput, cleanupAll, CLI, freePort, onCleanup, startProcess, tempDir, waitExit, waitFor } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024

/** The samples of a text exposition: `name{labels}` → value. */

describe('metrics', () => {
  it('a Session: per-torrent counters and gauges equal to its status, hash failures and bans counted, process metrics, removed torrents gone', async () => {
    const dir = await tempDir('bsw-metrics-')
    const image = await makeImage(dir, 'sda1', 4 * MiB)
    // a copy with one flipped byte in every 16 KiB block: every piece it sends fails
    const corrupt = join(dir, 'corrupt.img')
    await copyFile(image.path, corrupt)
    const fh = await open(corrupt, 'r+')
    for (const e of image.torrent.extents) {
      for (let at = 0; at < e.length; at += 16 * 1024) await fh.write(Buffer.from([image.bytes[e.offset + at] ^ 0xff]), 0, 1, e.offset + at)
    }
    await fh.close()

    const bad = await startSession()
    await bad.add(image.torrent, { target: corrupt, seedingMode: true })
    const logLines: string[] = []
    const leecher = await startSession({ log: pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) }) })
    const metrics = await serveSessionMetrics(leecher, '127.0.0.1:0')
    onCleanup(() => metrics.close())
    const hash = image.torrent.infoHash
    const labels = { infohash: hash, name: 'sda1' }
    await leecher.add(image.torrent, { target: await makeTarget(dir, 'target.img', image.size), peers: [`127.0.0.1:${bad.port}`], seedRatio: 0 })

    // the only peer sends garbage: it is banned (a sole sender is the culprit)
    await waitStatus(leecher, hash, (s) => s.bans.length === 1, 'the corrupt seeder to be banned')
    const whileBanned = await scrape(metrics.address)
    expect(whileBanned.get(series('blockswarm_torrent_bans_total', labels))).toBe(1)
    expect(whileBanned.get(series('blockswarm_torrent_hash_failures_total', labels))).toBeGreaterThanOrEqual(1)
    expect(whileBanned.get(series('blockswarm_torrent_state', { ...labels, state: 'downloading' }))).toBe(1)
    expect(whileBanned.get(series('blockswarm_torrent_pieces_done', labels))).toBe(0)

    // a good seeder that dials the leecher
    const good = await startSession()
    const goodMetrics = await serveSessionMetrics(good, '127.0.0.1:0')
    onCleanup(() => goodMetrics.close())
    await good.add(image.torrent, { target: image.path, seedingMode: true, peers: [`127.0.0.1:${leecher.port}`] })
    const done = await waitStatus(leecher, hash, (s) => s.done, 'the deploy to finish and be done')
    expect(extentDigest(image.torrent, await readFile(join(dir, 'target.img')))).toBe(extentDigest(image.torrent, image.bytes))

    const m = await scrape(metrics.address)
    const now = leecher.get(hash)!
    expect(m.get(series('blockswarm_torrent_pieces', labels))).toBe(image.torrent.pieceCount)
    expect(m.get(series('blockswarm_torrent_pieces_done', labels))).toBe(image.torrent.pieceCount)
    expect(m.get(series('blockswarm_torrent_progress_ratio', labels))).toBe(1)
    expect(m.get(series('blockswarm_torrent_size_bytes', labels))).toBe(image.torrent.totalLength)
    expect(m.get(series('blockswarm_torrent_downloaded_bytes_total', labels))).toBe(now.totalDownloaded)
    expect(now.totalDownloaded).toBeGreaterThanOrEqual(image.torrent.totalLength)
    expect(m.get(series('blockswarm_torrent_uploaded_bytes_total', labels))).toBe(now.totalUploaded)
    expect(m.get(series('blockswarm_torrent_hash_failures_total', labels))).toBe(done.hashFailures)
    expect(m.get(series('blockswarm_torrent_bans_total', labels))).toBe(1)
    expect(m.get(series('blockswarm_torrent_done', labels))).toBe(1)
    expect(m.get(series('blockswarm_torrent_state', { ...labels, state: 'finished' }))).toBe(1)
    for (const state of ['checking', 'downloading', 'seeding', 'paused', 'error']) expect(m.get(series('blockswarm_torrent_state', { ...labels, state }))).toBe(0)
    for (const name of ['peers', 'seeds', 'download_rate_bytes_per_second', 'upload_rate_bytes_per_second']) {
      expect(m.get(series(`blockswarm_torrent_${name}`, labels)), name).toBeGreaterThanOrEqual(0)
    }
    expect(m.get('blockswarm_torrents')).toBe(1)
    expect(m.get('process_cpu_user_seconds_total')).toBeGreaterThan(0)
    expect(m.get('nodejs_heap_size_used_bytes')).toBeGreaterThan(0)
    // the good seeder uploaded what the leecher still lacked after the ban
    const g = await scrape(goodMetrics.address)
    expect(g.get(series('blockswarm_torrent_uploaded_bytes_total', labels))).toBeGreaterThanOrEqual(image.torrent.totalLength - (whileBanned.get(series('blockswarm_torrent_pieces_done', labels)) ?? 0))
    expect(g.get(series('blockswarm_torrent_state', { ...labels, state: 'seeding' }))).toBe(1)

    // structured logs of the events
    const msgs = logLines.map((l) => JSON.parse(l) as { msg: string; reason?: string })
    expect(msgs.map((l) => l.msg)).toEqual(expect.arrayContaining(['torrent added', 'piece failed its hash check; fetching it again', 'peer banned', 'all pieces verified and flushed; seeding', 'done seeding']))

    await leecher.remove(hash)
    const after = await scrape(metrics.address)
    expect([...after.keys()].filter((k) => k.includes(hash))).toEqual([])
    expect(after.get('blockswarm_torrents')).toBe(0)

    expect((await fetch(`http://${metrics.address}/`)).status).toBe(404)
    expect((await fetch(`http://${metrics.address}/metrics`, { method: 'POST' })).status).toBe(405)
  })

  it('refuses a bad --metrics address and a port in use, saying which', async () => {
    expect(() => parseMetricsAddress('9100')).toThrow('--metrics "9100" is not HOST:PORT (e.g. 127.0.0.1:9100')
    expect(parseMetricsAddress('[::1]:9100')).toEqual({ host: '::1', port: 9100 })
    const session = await startSession()
    const first = await serveSessionMetrics(session, '127.0.0.1:0')
    onCleanup(() => first.close())
    await expect(serveSessionMetrics(session, first.address)).rejects.toThrow(`cannot serve metrics on ${first.address}: the port is in use`)
  })

  it('seed --metrics and deploy --metrics: the deploy shows its download in progress, the seeder what it uploaded', async () => {
    const dir = await tempDir('bsw-metrics-cli-')
    const image = await makeImage(dir, 'sda1', 4 * MiB)
    const labels = { infohash: image.torrent.infoHash, name: 'sda1' }
    const seedPort = await freePort()
    const seedMetrics = `127.0.0.1:${await freePort()}`
    // a slow seeder, so that the deploy is scraped while it downloads
    const seeder = startProcess(process.execPath, [CLI, 'seed', image.torrentFile, image.path, '--port', String(seedPort), '--upload-rate', '1M', '--metrics', seedMetrics, '--log-level', 'warn'])
    const seederOut = captureOutput(seeder)
    await waitFor('the seeder', () => seederOut.text().includes('opentracker whitelist line') || seeder.exitCode !== null, 30_000, seederOut.text)

    const deployMetrics = `127.0.0.1:${await freePort()}`
    const target = await makeTarget(dir, 'target.img', image.size)
    const deploy = startProcess(process.execPath, [
      CLI, 'deploy', image.torrentFile, target, '--port', String(await freePort()), '--peer', `127.0.0.1:${seedPort}`, '--seed-idle', '0', '--metrics', deployMetrics, '--json',
    ])
    const deployOut = captureOutput(deploy)
    let midway: Map<string, number> | undefined
    await waitFor(
      'the deploy metrics to show a download in progress',
      async () => {
        if (deploy.exitCode !== null) return true
        const m = await scrape(deployMetrics).catch(() => undefined)
        const got = m?.get(series('blockswarm_torrent_pieces_done', labels)) ?? 0
        if (m && got > 0 && got < image.torrent.pieceCount) midway = m
        return midway !== undefined
      },
      60_000,
      deployOut.text,
    )
    expect(midway, `the deploy ended before a scrape saw it midway:\n${deployOut.text()}`).toBeDefined()
    expect(midway!.get(series('blockswarm_torrent_state', { ...labels, state: 'downloading' }))).toBe(1)
    expect(midway!.get(series('blockswarm_torrent_pieces', labels))).toBe(image.torrent.pieceCount)
    expect(midway!.get(series('blockswarm_torrent_peers', labels))).toBe(1)
    // a seed shows its pieces in stripes (seed-stripes.ts) until every piece is out: meanwhile it is not a seed to its peers
    expect(midway!.get(series('blockswarm_torrent_seeds', labels))).toBe(0)
    expect(midway!.get(series('blockswarm_torrent_downloaded_bytes_total', labels))).toBeGreaterThan(0)
    expect(await waitExit(deploy, 60_000), deployOut.text()).toBe(0)
    // the endpoint went with the deploy
    await expect(fetch(`http://${deployMetrics}/metrics`)).rejects.toThrow()

    const s = await scrape(seedMetrics)
    expect(s.get(series('blockswarm_torrent_uploaded_bytes_total', labels))).toBeGreaterThanOrEqual(image.torrent.totalLength)
    expect(s.get(series('blockswarm_torrent_state', { ...labels, state: 'seeding' }))).toBe(1)
    seeder.kill('SIGTERM')
    expect(await waitExit(seeder, 15_000)).toBe(0)
  })
})
