/**
 * blockswarm.v1.Blockswarm and server reflection over real sockets (TCP and
 * unix), against a real Session deploying from a real seeder.
 */
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Status } from 'nice-grpc'
import { afterEach, describe, expect, it } from 'vitest'
import type { TorrentInfo } from '../src/control/blockswarm-wire.js'
import { connectControl } from '../src/control/client.js'
import { startControlServer } from '../src/control/server.js'
import { extentDigest, grpcError, makeImage, makeTarget, PYTHON, python, startInProcessDaemon, startSeeder, startSession } from './helpers/grpc-fixtures.js'
import { cleanupAll, onCleanup, sh, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024

function client(address: string) {
  const c = connectControl(address)
  onCleanup(async () => c.close())
  return c
}

describe('blockswarm.v1.Blockswarm', () => {
  it('adds, watches to the end, details, lists and removes a torrent; the target keeps its data', async () => {
    const dir = await tempDir()
    const image = await makeImage(dir, 'sda1', 4 * MiB)
    const seeder = await startSeeder(image, 2 * MiB)
    const daemon = await startInProcessDaemon()
    const target = await makeTarget(dir, 'target.img', image.size)
    const c = client(daemon.address)
    const hash = image.torrent.infoHash

    const added = await c.blockswarm.AddTorrent({ torrent: await readFile(image.torrentFile), target, peers: [seeder.peer], maxUploads: 2 })
    expect(added).toMatchObject({ infoHash: hash, name: 'sda1', target, total: image.torrent.totalLength, pieceCount: image.torrent.pieceCount })

    const watched: TorrentInfo[] = []
    let sawPeer = false
    for await (const update of c.blockswarm.WatchTorrents({ intervalMs: 100 })) {
      expect(update.removed).toEqual([])
      watched.push(...update.torrents)
      const last = watched.at(-1)
      if (last?.state === 'TORRENT_STATE_DOWNLOADING' && !sawPeer) {
        const detail = await c.blockswarm.GetTorrent({ infoHash: hash })
        sawPeer = detail.peers.some((p) => p.address === seeder.peer && p.isSeed)
      }
      if (last?.state === 'TORRENT_STATE_SEEDING') break
    }
    expect(watched[0].infoHash).toBe(hash)
    const done = watched.map((t) => t.totalDone)
    expect(done).toEqual([...done].sort((a, b) => a - b))
    expect(watched.at(-1)).toMatchObject({ progress: 1, totalDone: image.torrent.totalLength, total: image.torrent.totalLength, error: '' })
    expect(watched.some((t) => t.state === 'TORRENT_STATE_DOWNLOADING' && t.progress > 0 && t.progress < 1)).toBe(true)
    expect(sawPeer).toBe(true)

    const other = await makeImage(dir, 'sda2', MiB, 3)
    await c.blockswarm.AddTorrent({ torrent: await readFile(other.torrentFile), target: await makeTarget(dir, 'other.img', MiB) })
    expect((await c.blockswarm.ListTorrents({})).torrents.map((t) => t.name)).toEqual(['sda1', 'sda2'])
    expect((await c.blockswarm.ListTorrents({ infoHashes: [other.torrent.infoHash] })).torrents.map((t) => t.name)).toEqual(['sda2'])

    const stream = c.blockswarm.WatchTorrents({ infoHashes: [hash] })[Symbol.asyncIterator]()
    expect((await stream.next()).value?.torrents.map((t: TorrentInfo) => t.infoHash)).toEqual([hash])
    await c.blockswarm.RemoveTorrent({ infoHash: hash })
    let removed: string[] = []
    while (removed.length === 0) removed = (await stream.next()).value!.removed
    expect(removed).toEqual([hash])
    await stream.return?.()
    expect((await c.blockswarm.ListTorrents({})).torrents.map((t) => t.name)).toEqual(['sda2'])
    expect(extentDigest(image.torrent, await readFile(target))).toBe(extentDigest(image.torrent, image.bytes))

    expect(await grpcError(c.blockswarm.GetTorrent({ infoHash: hash }))).toEqual({ code: 'NOT_FOUND', details: expect.stringContaining(hash) })
    expect(await grpcError(c.blockswarm.RemoveTorrent({ infoHash: hash }))).toMatchObject({ code: 'NOT_FOUND' })
    expect(await grpcError(c.blockswarm.AddTorrent({ torrent: await readFile(other.torrentFile), target: join(dir, 'x.img'), peers: ['nowhere'] }))).toEqual({
      code: 'INVALID_ARGUMENT',
      details: expect.stringContaining('peer address "nowhere" is not HOST:PORT'),
    })
  })

  it('skip_check: a target that already holds the image is downloaded whole, not found by the resume check', async () => {
    const dir = await tempDir()
    const image = await makeImage(dir, 'sda1', 4 * MiB)
    const seeder = await startSeeder(image, 2 * MiB)
    const torrent = await readFile(image.torrentFile)
    const hash = image.torrent.infoHash
    const total = image.torrent.totalLength
    const finish = async (skipCheck: boolean) => {
      const daemon = await startInProcessDaemon()
      const c = client(daemon.address)
      const target = join(dir, `holds-${skipCheck}.img`)
      await writeFile(target, image.bytes)
      await c.blockswarm.AddTorrent({ torrent, target, peers: [seeder.peer], skipCheck })
      await expect.poll(async () => (await c.blockswarm.GetTorrent({ infoHash: hash })).complete, { timeout: 30_000 }).toBe(true)
      const t = await c.blockswarm.GetTorrent({ infoHash: hash })
      expect(extentDigest(image.torrent, await readFile(target))).toBe(extentDigest(image.torrent, image.bytes))
      return { reused: t.totalReused, downloaded: t.totalDownloaded }
    }
    expect(await finish(false)).toEqual({ reused: total, downloaded: 0 })
    const skipped = await finish(true)
    expect(skipped.reused).toBe(0)
    expect(skipped.downloaded).toBeGreaterThanOrEqual(total)
  })

  it('applies a done policy set over the wire, and reports the daemon', async () => {
    const dir = await tempDir()
    const image = await makeImage(dir, 'sda1', MiB)
    const daemon = await startInProcessDaemon({ maxUploads: 4 })
    const c = client(daemon.address)
    const hash = image.torrent.infoHash
    await c.blockswarm.AddTorrent({ torrent: await readFile(image.torrentFile), target: image.path, seedingMode: true })
    expect((await c.blockswarm.GetTorrent({ infoHash: hash })).state).toBe('TORRENT_STATE_SEEDING')

    await c.blockswarm.SetDonePolicy({ policy: { seedRatio: 3, seedIdleSeconds: 3600 } })
    expect((await c.blockswarm.GetDaemonInfo({})).donePolicy).toEqual({ seedRatio: 3, seedIdleSeconds: 3600 })
    expect((await c.blockswarm.GetTorrent({ infoHash: hash })).done).toBe(false)
    // This torrent's own rule: done after 1 s without an upload (there are no peers at all).
    await c.blockswarm.SetDonePolicy({ infoHash: hash, policy: { seedRatio: 0, seedIdleSeconds: 1 } })
    await expect.poll(async () => (await c.blockswarm.GetTorrent({ infoHash: hash })).done, { timeout: 20_000 }).toBe(true)
    const done = await c.blockswarm.GetTorrent({ infoHash: hash })
    expect(done).toMatchObject({ state: 'TORRENT_STATE_FINISHED', paused: true, doneReason: expect.stringContaining('no upload for 1 s') })
    // EZIO clients see it finished and paused, as libtorrent shows a torrent stopped at its share limit.
    expect((await c.ezio.GetTorrentStatus({ hashes: [hash] })).torrents[hash]).toMatchObject({ state: 4, isPaused: true, isFinished: true, total: image.torrent.totalLength })
    // With its rules off, a resumed torrent seeds again.
    await c.blockswarm.SetDonePolicy({ infoHash: hash, policy: { seedRatio: 0, seedIdleSeconds: 0 } })
    await c.ezio.ResumeTorrent({ hash })
    const resumed = (await c.ezio.GetTorrentStatus({ hashes: [hash] })).torrents[hash]
    expect(resumed).toMatchObject({ state: 5, isPaused: false })

    const info = await c.blockswarm.GetDaemonInfo({})
    expect(info).toMatchObject({ listen: [daemon.address], btPort: daemon.session.port, maxUploads: 4, pid: process.pid, version: expect.stringMatching(/^\d+\.\d+\.\d+/) })
    expect(await grpcError(c.blockswarm.SetDonePolicy({ infoHash: 'ab'.repeat(20), policy: { seedRatio: 1, seedIdleSeconds: 0 } }))).toMatchObject({ code: 'NOT_FOUND' })
    expect(await grpcError(c.blockswarm.SetDonePolicy({ policy: { seedRatio: -1, seedIdleSeconds: 0 } }))).toEqual({
      code: 'INVALID_ARGUMENT',
      details: expect.stringContaining('seed_ratio -1'),
    })
  })
})

describe('shutdown', () => {
  it('answers Shutdown, ends open watch streams, closes the session, then exits 0', async () => {
    const dir = await tempDir()
    const image = await makeImage(dir, 'sda1', MiB)
    const daemon = await startInProcessDaemon()
    const c = client(daemon.address)
    await c.blockswarm.AddTorrent({ torrent: await readFile(image.torrentFile), target: image.path, seedingMode: true })
    const watch = c.blockswarm.WatchTorrents({})[Symbol.asyncIterator]()
    expect((await watch.next()).value?.torrents).toHaveLength(1)
    expect(await c.ezio.Shutdown({})).toEqual({})
    let ended = false
    while (!ended) ended = (await watch.next()).done === true
    await expect.poll(() => daemon.exits, { timeout: 10_000 }).toEqual([0])
    await expect(daemon.session.add(image.torrent, { target: image.path })).rejects.toThrow('the session is closing')
    expect(await grpcError(c.ezio.GetVersion({}))).toMatchObject({ code: 'UNAVAILABLE' })
  })
})

describe('listening', () => {
  it('serves on a unix socket, clears a stale one, refuses a live one, removes it on close', async () => {
    const dir = await tempDir()
    const sock = join(dir, 'control.sock')
    const session = await startSession()
    const first = await startControlServer(session, { listen: [`unix:${sock}`, '127.0.0.1:0'] })
    onCleanup(() => first.close())
    expect(first.addresses[0]).toBe(`unix:${sock}`)
    expect((await client(`unix:${sock}`).ezio.GetVersion({})).version).toMatch(/^blockswarm /)
    expect((await client(first.addresses[1]).ezio.GetVersion({})).version).toMatch(/^blockswarm /)
    await expect(startControlServer(session, { listen: [`unix:${sock}`] })).rejects.toThrow(`cannot listen on unix:${sock}: another daemon is listening there`)
    await expect(startControlServer(session, { listen: [first.addresses[1]] })).rejects.toThrow(`cannot listen on ${first.addresses[1]}`)
    await first.close()
    expect(existsSync(sock)).toBe(false)

    // A socket file left by a daemon that died: bound, never listened on, its process gone.
    await sh(PYTHON, ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(sock)})`])
    expect(existsSync(sock)).toBe(true)
    const second = await startControlServer(session, { listen: [`unix:${sock}`] })
    onCleanup(() => second.close())
    expect((await client(`unix:${sock}`).ezio.GetVersion({})).version).toMatch(/^blockswarm /)
    await writeFile(join(dir, 'plain-file'), 'x')
    await expect(startControlServer(session, { listen: [`unix:${join(dir, 'plain-file')}`] })).rejects.toThrow('the path exists and is not a socket')
  })
})

describe('server reflection', () => {
  it('lets a client that has no .proto list the services, load their descriptors and call GetVersion', async () => {
    const dir = await tempDir()
    const daemon = await startInProcessDaemon()
    const r = await python(join(dir, 'stubs'), daemon.address, 'reflect')
    expect(r.services.sort()).toEqual(['blockswarm.v1.Blockswarm', 'ezio.EZIO', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection'])
    expect(r.version).toMatch(/^blockswarm \d/)
    expect(r.torrentFields).toMatchObject({ hash: 1, progress: 3, state: 9, total: 11, is_paused: 17, save_path: 18, last_upload: 19, last_download: 20 })
    expect(Object.keys(r.torrentFields)).toHaveLength(20)
    expect(r.blockswarmMethods).toEqual(['AddTorrent', 'GetDaemonInfo', 'GetTorrent', 'ListTorrents', 'RemoveTorrent', 'SetDonePolicy', 'WatchTorrents'])
    expect(r.streaming['blockswarm.v1.Blockswarm/WatchTorrents']).toEqual([false, true])
    expect(r.streaming['grpc.reflection.v1.ServerReflection/ServerReflectionInfo']).toEqual([true, true])
    expect(r.missingSymbol).toEqual({ code: Status.NOT_FOUND, message: 'symbol no.such.Symbol not found' })
  })
})
