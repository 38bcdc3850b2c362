/**
 * "Finished" means on the disk. The target is a FUSE file whose fdatasync is
 * held open (helpers/faulty-fuse.py --hold-fsync): every piece is verified
 * and written, its gaps must be zeroed, and the flush does not return. While
 * it is held, every status surface — ezio.EZIO, blockswarm.v1, the CLI,
 * Prometheus metrics, deploy's exit — must say "not finished yet"; once it is
 * released, each says finished and the target holds the image.
 */
import { existsSync } from 'node:fs'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { connectControl } from '../src/control/client.js'
import { startSeed, startDeploy, deployJson } from './helpers/deploy-run.js'
import { faultyDevice } from './helpers/faulty-device.js'
import { extentDigest, makeImage, startDaemonProcess } from './helpers/grpc-fixtures.js'
import { scrape, series } from './helpers/metrics.js'
import { cleanupAll, cli, freePort, onCleanup, pseudoRandom, tempDir, waitExit, waitFor } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024
/** How many times every surface is read while the flush is held (each must say "not finished"). */
const LOOKS = 3

/** The backing image's bytes inside the extents equal the image's, and every gap is zero (the torrent says gaps must be zero). */
async function onDisk(backing: string, image: { bytes: Buffer; torrent: { extents: readonly { offset: number; length: number }[] } }): Promise<void> {
  const got = await readFile(backing)
  expect(extentDigest(image.torrent as never, got)).toBe(extentDigest(image.torrent as never, image.bytes))
  let at = 0
  for (const e of [...image.torrent.extents, { offset: got.length, length: 0 }]) {
    const gap = got.subarray(at, e.offset)
    expect(gap.every((b) => b === 0), `gap ${at}..${e.offset} not zeroed`).toBe(true)
    at = e.offset + e.length
  }
}

describe('finished means on the disk: every surface while the final flush is held open', () => {
  it('daemon: ezio.EZIO says downloading (< 1, not finished), blockswarm.v1 and the CLI say finishing, metrics agree; all say finished only after the flush', async () => {
    const dir = await tempDir('bsw-finish-')
    const image = await makeImage(dir, 'sda1', 4 * MiB)
    expect(image.torrent.meta.gaps).toBe('zero')
    const hold = join(dir, 'hold-fsync')
    await writeFile(hold, '')
    // stale bytes everywhere, so that an un-zeroed gap would show
    const dev = await faultyDevice({ size: image.size, loop: false, holdFsync: hold, content: pseudoRandom(image.size, 3) })
    const seeder = await startSeed(image.torrentFile, image.path)

    const address = `127.0.0.1:${await freePort()}`
    const metrics = `127.0.0.1:${await freePort()}`
    const daemon = await startDaemonProcess(
      ['--listen', address, '--port', String(await freePort()), '--bind', '127.0.0.1', '--peer', `127.0.0.1:${seeder.port}`, '--metrics', metrics, '--log-level', 'warn'],
      address,
    )
    // cleanups run last-first: release the flush before anything is killed or unmounted
    onCleanup(() => rm(hold, { force: true }))
    const c = connectControl(address)
    onCleanup(async () => c.close())
    const hash = image.torrent.infoHash
    const labels = { infohash: hash, name: 'sda1' }
    expect(await c.ezio.AddTorrent({ torrent: await readFile(image.torrentFile), savePath: dev.file })).toEqual({ result: true })

    await waitFor('every piece verified and the flush held', async () => {
      const t = await c.blockswarm.GetTorrent({ infoHash: hash })
      return (t.piecesDone === t.pieceCount && dev.holding()) || t.state === 'TORRENT_STATE_ERROR'
    }, 60_000, daemon.output)

    for (let look = 0; look < LOOKS; look++) {
      const e = (await c.ezio.GetTorrentStatus({ hashes: [hash] })).torrents[hash]
      expect(e).toMatchObject({ isFinished: false, state: 3, finishedTime: 0 })
      expect(e.progress).toBeLessThan(1)
      expect(e.totalDone).toBeLessThan(e.total)

      const v1 = await c.blockswarm.GetTorrent({ infoHash: hash })
      expect(v1).toMatchObject({ state: 'TORRENT_STATE_FINISHING', complete: false, finishedAt: 0, piecesDone: image.torrent.pieceCount })

      const status = await cli(['status', hash, '--daemon', address, '--json'])
      expect(status.code, status.stderr).toBe(0)
      expect(JSON.parse(status.stdout)[0]).toMatchObject({ state: 'finishing', complete: false, finishedAt: null })

      const m = await scrape(metrics)
      expect(m.get(series('blockswarm_torrent_state', { ...labels, state: 'finishing' }))).toBe(1)
      expect(m.get(series('blockswarm_torrent_state', { ...labels, state: 'seeding' }))).toBe(0)
      expect(m.get(series('blockswarm_torrent_complete', labels))).toBe(0)
      expect(dev.holding()).toBe(true)
      await new Promise((r) => setTimeout(r, 300))
    }

    await rm(hold)
    await waitFor('the torrent to be complete', async () => (await c.ezio.GetTorrentStatus({ hashes: [hash] })).torrents[hash].isFinished, 60_000, daemon.output)
    const e = (await c.ezio.GetTorrentStatus({ hashes: [hash] })).torrents[hash]
    expect(e).toMatchObject({ isFinished: true, state: 5, progress: 1, totalDone: image.torrent.totalLength, numPieces: image.torrent.pieceCount })
    expect(await c.blockswarm.GetTorrent({ infoHash: hash })).toMatchObject({ state: 'TORRENT_STATE_SEEDING', complete: true })
    expect(JSON.parse((await cli(['status', hash, '--daemon', address, '--json'])).stdout)[0]).toMatchObject({ state: 'seeding', complete: true })
    expect((await scrape(metrics)).get(series('blockswarm_torrent_complete', labels))).toBe(1)
    await onDisk(dev.image, image)

    await c.ezio.Shutdown({})
    expect(await waitExit(daemon.child, 20_000)).toBe(0)
  })

  it('deploy: stays running (state finishing) while the flush is held, then exits 0 with the target zeroed and flushed', async () => {
    const dir = await tempDir('bsw-finish-deploy-')
    const image = await makeImage(dir, 'sda1', 4 * MiB, 11)
    const hold = join(dir, 'hold-fsync')
    await writeFile(hold, '')
    const dev = await faultyDevice({ size: image.size, loop: false, holdFsync: hold, content: pseudoRandom(image.size, 4) })
    const seeder = await startSeed(image.torrentFile, image.path)
    const metrics = `127.0.0.1:${await freePort()}`
    const deploy = startDeploy([
      image.torrentFile, dev.file, '--peer', `127.0.0.1:${seeder.port}`, '--port', String(await freePort()), '--bind', '127.0.0.1', '--seed-idle', '0', '--skip-check', '--metrics', metrics, '--json',
    ])
    const labels = { infohash: image.torrent.infoHash, name: 'sda1' }
    onCleanup(() => rm(hold, { force: true }))

    await waitFor('the deploy to reach its final flush', () => (deploy.state() === 'finishing' && dev.holding()) || deploy.child.exitCode !== null, 60_000, deploy.text)
    for (let look = 0; look < LOOKS; look++) {
      expect(deploy.child.exitCode, deploy.text()).toBeNull()
      expect(deploy.state()).toBe('finishing')
      const m = await scrape(metrics)
      expect(m.get(series('blockswarm_torrent_state', { ...labels, state: 'finishing' }))).toBe(1)
      expect(m.get(series('blockswarm_torrent_complete', labels))).toBe(0)
      await new Promise((r) => setTimeout(r, 300))
    }
    expect(deploy.text()).not.toMatch(/"ok": true|deployed /)

    await rm(hold)
    expect(await waitExit(deploy.child, 60_000), deploy.text()).toBe(0)
    const r = deployJson(deploy.text())
    expect(r).toMatchObject({ ok: true, piecesDone: image.torrent.pieceCount })
    expect(existsSync(hold)).toBe(false)
    await onDisk(dev.image, image)
  })
})
