/**
 * Faults during real deploys, each of which must end in a clear state and
 * never in a silent hang or a false success: a disk failing writes (FUSE
 * under a loop device) and a full tmpfs (ENOSPC, and EIO through a loop
 * device); a target file deleted or truncated, and a loop device detached,
 * mid-way; a tracker that is down; a seeder that dies (the deploy gives up
 * after --stall-timeout, or resumes when the seeder is back; a daemon keeps
 * reporting). Real `blockswarm` processes on 127.0.0.1, real loop devices.
 */
import { readFile, rm, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { Server } from 'bittorrent-tracker'
import { afterEach, describe, expect, it } from 'vitest'
import { makePeerId } from '../src/swarm/client-name.js'
import { TrackerClient, type TrackerFailure } from '../src/swarm/tracker-client.js'
import { createTorrent } from '../src/create/create.js'
import { deployJson, freePort, startDeploy, startSeed, waitFor } from './helpers/deploy-run.js'
import { faultyDevice, type ByteSpan } from './helpers/faulty-device.js'
import { extentDigest, type Image, makeImage, makeTarget, startDaemonProcess } from './helpers/grpc-fixtures.js'
import { cleanupAll, cli, loopAttach, onCleanup, pseudoRandom, run, sh, tempDir, waitExit } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** Part of what `blockswarm status --json` says of a torrent. */
interface TorrentJson {
  name: string
  state: string
  error: string | null
  progress: number
  piecesDone: number
  peers: number
  done: boolean
}

/** The torrents of `blockswarm status --json` (over gRPC) from a daemon, by name. */
async function daemonStatus(address: string): Promise<Record<string, TorrentJson>> {
  const r = await cli(['status', '--json', '--daemon', address])
  if (r.code !== 0) throw new Error(`status --json exited ${r.code}: ${r.stderr}`)
  return Object.fromEntries((JSON.parse(r.stdout) as TorrentJson[]).map((t) => [t.name, t]))
}

/** Whether the extents of `target` hold the image's bytes. */
async function extentsMatch(image: Image, target: string): Promise<boolean> {
  return extentDigest(image.torrent, await readFile(target)) === extentDigest(image.torrent, image.bytes)
}

describe('I/O errors from the target', () => {
  it('a disk failing writes: the torrent goes to error naming the device, the offsets and EIO, before the download ends; the daemon keeps running and another torrent finishes', async () => {
    const dir = await tempDir('bsw-faults-')
    const size = 16 * MiB
    const bad = await makeImage(dir, 'sda1', size, 7)
    const good = await makeImage(dir, 'sda2', 4 * MiB, 8)
    // bad sectors over the middle half of the disk, across extents and holes
    const BAD: ByteSpan = [4 * MiB + 5000, 12 * MiB]
    const dev = await faultyDevice({ size, failWrites: BAD, content: pseudoRandom(size, 99) })
    const goodTarget = await makeTarget(dir, 'good.img', 4 * MiB)

    // slow enough (12 MiB at 1 MiB/s) that the periodic flush (every 10 s) meets the failure before the last piece
    const badSeed = (await startSeed(bad.torrentFile, bad.path, ['--upload-rate', '1M'])).port
    const goodSeed = await freePort()
    const address = `127.0.0.1:${await freePort()}`
    // static peers for both torrents; the second one's seeder is not up yet
    const daemon = await startDaemonProcess(
      ['--listen', address, '--port', '0', '--bind', '127.0.0.1', '--peer', `127.0.0.1:${badSeed}`, '--peer', `127.0.0.1:${goodSeed}`]
        .concat(['--seed-idle', '0', '--status-interval', '0', '--log-level', 'warn'])
        .concat(['--add', `${bad.torrentFile}=${dev.loop}`, '--add', `${good.torrentFile}=${goodTarget}`]),
      address,
    )
    let status = await daemonStatus(address)
    await waitFor('the torrent on the failing disk to stop', async () => (status = await daemonStatus(address)).sda1.state === 'error', 60_000, daemon.output)

    // fdatasync reports the failed writeback; the store names the span of what was written since the last flush
    const t = status.sda1
    expect(t.error).toMatch(new RegExp(`^writeback to ${esc(dev.loop!)} failed: EIO \\(i/o error\\); data written since the last flush may be lost: \\d+ piece\\(s\\)`))
    const [, low, high] = /between offsets 0x([0-9a-f]+) and 0x([0-9a-f]+)$/.exec(t.error!)!.map((x) => parseInt(x, 16))
    expect(low).toBeLessThanOrEqual(BAD[0])
    expect(high).toBeGreaterThanOrEqual(BAD[1])
    expect(t.done).toBe(false)
    expect(t.piecesDone).toBeLessThan(bad.torrent.pieceCount)
    expect(dev.faults().some((f) => f.op === 'write' && f.errno === 'EIO' && f.offset < BAD[1] && f.offset + f.size > BAD[0])).toBe(true)

    // the same daemon goes on with the other torrent once its seeder is up
    expect(status.sda2.state).toBe('downloading')
    await startSeed(good.torrentFile, good.path, [], goodSeed)
    await waitFor('the other torrent to finish', async () => (status = await daemonStatus(address)).sda2.done, 60_000, daemon.output)
    expect(await extentsMatch(good, goodTarget)).toBe(true)
    expect(status.sda1.state).toBe('error')
    expect(daemon.child.exitCode).toBe(null)
    console.log(`failing disk: ${t.error} (found at ${t.piecesDone}/${bad.torrent.pieceCount} pieces)`)
  })

  it('a full tmpfs: a file target fails with ENOSPC, a loop device over it with an I/O error; deploy exits 1 and never reports success', async () => {
    const dir = await tempDir('bsw-faults-')
    const image = await makeImage(dir, 'sda1', 8 * MiB, 9)
    const small = join(dir, 'small')
    await sh('mkdir', [small])
    await sh('mount', ['-t', 'tmpfs', '-o', 'size=2M', 'tmpfs', small])
    onCleanup(async () => void (await run('umount', ['-l', small])))
    const seedPort = (await startSeed(image.torrentFile, image.path)).port
    const deploy = async (target: string) => {
      const r = await cli(['deploy', image.torrentFile, target, '--peer', `127.0.0.1:${seedPort}`, '--port', '0', '--seed-idle', '0', '--json'], { timeoutMs: 60_000 })
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(1)
      const j = deployJson(r.stdout)
      expect(j.ok).toBe(false)
      expect(j.state).toBe('error')
      return j.error!
    }

    const file = await makeTarget(small, 'target.img', 8 * MiB)
    const fileError = await deploy(file)
    expect(fileError).toMatch(new RegExp(`^write of \\d+ bytes at offset 0x[0-9a-f]+ on ${esc(file)} failed: ENOSPC \\(no space left on device\\)$`))

    await rm(file)
    const loop = await loopAttach(await makeTarget(small, 'backing.img', 8 * MiB))
    const loopError = await deploy(loop)
    // the loop driver turns the backing file's ENOSPC into a failed writeback, reported by fdatasync
    expect(loopError).toMatch(new RegExp(`^writeback to ${esc(loop)} failed: (EIO \\(i/o error\\)|ENOSPC \\(no space left on device\\)); .* between offsets 0x[0-9a-f]+ and 0x[0-9a-f]+$`))
    console.log(`full tmpfs: ${fileError}\n            ${loopError}`)
  })
})

describe('the target vanishes mid-way', () => {
  /** A rate-limited seeder and a deploy onto `target`, stopped at a third of the pieces for `act`. */
  async function deployAndAct(target: string, act: () => Promise<void>, extra: string[] = []) {
    const dir = await tempDir('bsw-faults-')
    const image = await makeImage(dir, 'sda1', 8 * MiB, 10)
    const seedPort = (await startSeed(image.torrentFile, image.path, ['--upload-rate', '2M'])).port
    const d = startDeploy([image.torrentFile, target, '--peer', `127.0.0.1:${seedPort}`, '--port', '0', '--seed-idle', '0', '--json', ...extra])
    const third = Math.ceil(image.torrent.pieceCount / 3)
    await waitFor('a third of the pieces', () => d.pieces() >= third || d.child.exitCode !== null, 60_000, d.text)
    expect(d.child.exitCode, `the deploy ended too early:\n${d.text()}`).toBe(null)
    await act()
    const code = await waitExit(d.child, 60_000)
    return { image, code, json: deployJson(d.text()), text: d.text() }
  }

  it('a target file deleted mid-way: the deploy stops with an error saying so (before: it "finished" into the deleted file)', async () => {
    const dir = await tempDir('bsw-faults-')
    const target = await makeTarget(dir, 'target.img', 8 * MiB)
    const r = await deployAndAct(target, () => rm(target))
    expect(r.code, r.text).toBe(1)
    expect(r.json.ok).toBe(false)
    expect(r.json.error).toBe(`${target} (the deploy's target) was removed during the deploy: what was written since went to the deleted file`)
  })

  it('a target file truncated mid-way: the deploy stops with an error giving the sizes (before: success with zeros in the lost part)', async () => {
    const dir = await tempDir('bsw-faults-')
    // one MiB larger than the image: a write after the truncation cannot grow the file back to its old size
    const target = await makeTarget(dir, 'target.img', 9 * MiB)
    const r = await deployAndAct(target, () => truncate(target, 2 * MiB))
    expect(r.code, r.text).toBe(1)
    expect(r.json.ok).toBe(false)
    expect(r.json.error).toMatch(
      new RegExp(`^${esc(target)} \\(the deploy's target\\) shrank from ${9 * MiB} to \\d+ bytes during the deploy \\(truncated by another program\\?\\); pieces written past 0x[0-9a-f]+ may be lost$`),
    )
  })

  it('a loop device detached (losetup -d) mid-way: the kernel detaches it lazily, the deploy completes into the backing file, and the device is gone after', async () => {
    const dir = await tempDir('bsw-faults-')
    const backing = await makeTarget(dir, 'backing.img', 8 * MiB)
    const loop = await loopAttach(backing)
    const r = await deployAndAct(loop, async () => {
      // while the deploy holds it open, LOOP_CLR_FD only sets autoclear: the device works until its last close
      await sh('losetup', ['-d', loop])
    })
    expect(r.code, r.text).toBe(0)
    expect(r.json.ok).toBe(true)
    expect(await extentsMatch(r.image, backing)).toBe(true)
    expect((await sh('losetup', ['--list', '--noheadings', '--output', 'NAME'])).split('\n')).not.toContain(loop)
  })
})

describe('a dead tracker', () => {
  it('a tracker on a closed port: the deploy works from --peer and its result says the tracker fails', async () => {
    const dir = await tempDir('bsw-faults-')
    const image = await makeImage(dir, 'sda1', 4 * MiB, 11)
    const closed = await freePort()
    const url = `http://127.0.0.1:${closed}/announce`
    const made = await createTorrent({ source: image.path, name: 'sda1', mode: 'zero', pieceLength: 64 * 1024, trackers: [url] })
    const torrentFile = join(dir, 'tracked.torrent')
    await writeFile(torrentFile, made.buffer)
    const seedPort = (await startSeed(torrentFile, image.path)).port
    const target = await makeTarget(dir, 'target.img', 4 * MiB)
    const r = await cli(['deploy', torrentFile, target, '--peer', `127.0.0.1:${seedPort}`, '--port', '0', '--seed-idle', '0', '--json'], { timeoutMs: 60_000 })
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    const j = deployJson(r.stdout)
    expect(j.ok).toBe(true)
    expect(await extentsMatch(image, target)).toBe(true)
    expect(j.trackerError).toMatch(new RegExp(`^announce to ${esc(url)} failed \\(\\d+× in a row\\): connect ECONNREFUSED 127\\.0\\.0\\.1:${closed}$`))
    expect(r.stderr).toContain('"msg":"tracker announce failed"')
  })

  it('TrackerClient retries a failing tracker with doubling delays and clears the failure when it answers again', async () => {
    const port = await freePort()
    const url = `http://127.0.0.1:${port}/announce`
    const client = new TrackerClient({
      infoHash: 'ab'.repeat(20),
      peerId: makePeerId(),
      trackers: [url],
      port: 6881,
      stats: () => ({ uploaded: 0, downloaded: 0, left: 1 }),
      wantsUpdate: () => false,
      reannounceMs: 100,
      log: pino({ level: 'silent' }),
    })
    onCleanup(() => client.stop())
    const failures: TrackerFailure[] = []
    client.on('failure', (f: TrackerFailure) => failures.push(f))
    client.start()
    await waitFor('four failed announces', () => failures.length >= 4, 30_000, () => JSON.stringify(failures))
    // retried although the swarm did not ask (wantsUpdate false): the delays double
    expect(failures.slice(0, 4).map((f) => [f.failures, f.retryInMs])).toEqual([
      [1, 100],
      [2, 200],
      [3, 400],
      [4, 800],
    ])
    expect(failures[0].error).toBe(`connect ECONNREFUSED 127.0.0.1:${port}`)
    expect(client.error).toMatch(new RegExp(`^announce to ${esc(url)} failed \\([4-9]× in a row\\): connect ECONNREFUSED`))

    // the tracker comes up: the next retry reaches it and the failure is gone
    const server = new Server({ http: true, udp: false, ws: false, stats: false })
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()))
    onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const answered = new Promise<void>((resolve) => client.once('update', () => resolve()))
    await answered
    expect(client.error).toBe(undefined)
    expect(client.swarmCounts).toEqual({ complete: 0, incomplete: 1 })
  })
})

describe('all peers gone', () => {
  it('the seeder killed mid-way: deploy gives up after --stall-timeout with exit 1 and says why; a daemon keeps the torrent and reports it; a re-run resumes', async () => {
    const dir = await tempDir('bsw-faults-')
    const image = await makeImage(dir, 'sda1', 8 * MiB, 12)
    const seeder = await startSeed(image.torrentFile, image.path, ['--upload-rate', '1M'])
    // the daemon has a slower seeder of its own, so that neither takes the other's bandwidth and it is still at work when both die
    const daemonSeeder = await startSeed(image.torrentFile, image.path, ['--upload-rate', '256K'])
    const address = `127.0.0.1:${await freePort()}`
    const daemonTarget = await makeTarget(dir, 'daemon.img', 8 * MiB)
    const daemon = await startDaemonProcess(
      ['--listen', address, '--port', '0', '--bind', '127.0.0.1', '--peer', `127.0.0.1:${daemonSeeder.port}`, '--status-interval', '0', '--log-level', 'warn']
        .concat(['--add', `${image.torrentFile}=${daemonTarget}`]),
      address,
    )
    const peer = `127.0.0.1:${seeder.port}`
    const target = await makeTarget(dir, 'target.img', 8 * MiB)
    const args = [image.torrentFile, target, '--peer', peer, '--seed-idle', '0', '--json']
    const d = startDeploy([...args, '--port', '0', '--stall-timeout', '3'])
    const n = image.torrent.pieceCount
    const under = async () => d.pieces() >= n / 3 && (await daemonStatus(address)).sda1.progress > 0
    await waitFor('a third of the pieces, and some in the daemon', async () => d.child.exitCode !== null || (await under()), 60_000, d.text)
    expect(d.child.exitCode, d.text()).toBe(null)
    for (const p of [seeder, daemonSeeder]) p.child.kill('SIGKILL')
    for (const p of [seeder, daemonSeeder]) await waitExit(p.child, 10_000)

    expect(await waitExit(d.child, 60_000), d.text()).toBe(1)
    const j = deployJson(d.text())
    expect(j.ok).toBe(false)
    expect(j.state).toBe('downloading')
    expect(j.error).toMatch(
      new RegExp(
        `^stalled: no data for 3 s \\(--stall-timeout\\); no peer connected; ${esc(peer)} unreachable: connect ECONNREFUSED ${esc(peer)} \\(\\d+ failed dials?\\); ` +
          `${j.piecesDone}/${n} pieces are on the target, a new deploy resumes from there$`,
      ),
    )
    expect(j.piecesDone).toBeGreaterThanOrEqual(n / 3)
    expect(j.piecesDone).toBeLessThan(n)

    // the daemon does not give up: the torrent stays, downloading, with no peer
    const s = (await daemonStatus(address)).sda1
    expect(s, daemon.output()).toMatchObject({ state: 'downloading', error: null, peers: 0, done: false })
    expect(s.progress).toBeLessThan(1)
    expect(daemon.child.exitCode).toBe(null)

    // the seeder is back: a new deploy re-uses what the stalled one wrote and fetches the rest
    await startSeed(image.torrentFile, image.path, [], seeder.port)
    const r = await cli(['deploy', ...args, '--port', '0'], { timeoutMs: 60_000 })
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    const again = deployJson(r.stdout)
    expect(again.reused).toBeGreaterThanOrEqual(j.piecesDone * image.torrent.pieceLength - image.torrent.pieceLength)
    expect(again.downloaded).toBe(again.total - again.reused)
    expect(await extentsMatch(image, target)).toBe(true)
    console.log(`stall: ${j.error}`)
  })

  it('the seeder killed and back before --stall-timeout: the deploy reconnects and finishes exact', async () => {
    const dir = await tempDir('bsw-faults-')
    const image = await makeImage(dir, 'sda1', 8 * MiB, 13)
    const seeder = await startSeed(image.torrentFile, image.path, ['--upload-rate', '2M'])
    const target = await makeTarget(dir, 'target.img', 8 * MiB)
    const d = startDeploy([image.torrentFile, target, '--peer', `127.0.0.1:${seeder.port}`, '--port', '0', '--seed-idle', '0', '--json', '--stall-timeout', '60'])
    const n = image.torrent.pieceCount
    await waitFor('a third of the pieces', () => d.pieces() >= n / 3 || d.child.exitCode !== null, 60_000, d.text)
    seeder.child.kill('SIGKILL')
    await waitExit(seeder.child, 10_000)
    // the deploy notices: its progress lines show no peer
    const lines = () => d.text().split('\n').length
    const before = lines()
    await waitFor('a progress line without peers', () => /peers 0 \(0 seeds\)/.test(d.text().split('\n').slice(before).join('\n')) || d.child.exitCode !== null, 30_000, d.text)
    expect(d.child.exitCode).toBe(null)
    await startSeed(image.torrentFile, image.path, [], seeder.port)
    expect(await waitExit(d.child, 60_000), d.text()).toBe(0)
    const j = deployJson(d.text())
    expect(j.ok).toBe(true)
    expect(await extentsMatch(image, target)).toBe(true)
  })
})
