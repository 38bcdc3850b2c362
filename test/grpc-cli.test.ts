/**
 * The thin client commands end to end: a real `blockswarm daemon` process, a
 * real `blockswarm seed` process, and the CLI talking gRPC to the daemon.
 * Needs a build (`npx tsc -p .`): bin/blockswarm.js runs dist/.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { extentDigest, makeImage, makeTarget, python, startDaemonProcess } from './helpers/grpc-fixtures.js'
import { captureOutput, cleanupAll, CLI, cli, freePort, startProcess, tempDir, waitExit } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024

async function statusJson(address: string, ...hashes: string[]): Promise<any[]> {
  const r = await cli(['status', '--json', '--daemon', address, ...hashes])
  if (r.code !== 0) throw new Error(`status --json exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

describe('blockswarm CLI over gRPC', () => {
  it('adds, shows, watches, pauses, resumes and removes a torrent, then shuts the daemon down', async () => {
    const dir = await tempDir()
    const image = await makeImage(dir, 'sda1', 4 * MiB)
    const seedPort = await freePort()
    const seeder = startProcess(process.execPath, [CLI, 'seed', image.torrentFile, image.path, '--port', String(seedPort), '--bind', '127.0.0.1', '--upload-rate', '2M'])
    const address = `127.0.0.1:${await freePort()}`
    const daemon = await startDaemonProcess(
      ['--listen', address, '--port', '0', '--bind', '127.0.0.1', '--peer', `127.0.0.1:${seedPort}`, '--status-interval', '0', '--log-level', 'warn'],
      address,
    )
    expect(seeder.exitCode).toBe(null)
    const target = await makeTarget(dir, 'target.img', image.size)
    const hash = image.torrent.infoHash

    const version = await cli(['version', '--daemon', address])
    expect(version).toMatchObject({ code: 0, stdout: expect.stringMatching(/^client: blockswarm \d+\.\d+\.\d+\ndaemon at 127\.0\.0\.1:\d+: blockswarm \d+\.\d+\.\d+\n$/) })

    const added = await cli(['add', image.torrentFile, target, '--daemon', address, '--max-uploads', '2'])
    expect(added.code, added.stderr).toBe(0)
    expect(added.stdout).toMatch(new RegExp(`^added ${hash} sda1 -> ${target} \\((checking|downloading)\\)\n$`))

    // --watch --json: one line per change, until the watcher is stopped.
    const watcher = startProcess(process.execPath, [CLI, 'status', '--watch', '--json', '--daemon', address, 'sda1'])
    const watched = captureOutput(watcher)
    await expect.poll(() => watched.text().split('\n').filter(Boolean).map((l) => JSON.parse(l)).some((t) => t.state === 'seeding'), { timeout: 60_000 }).toBe(true)
    watcher.kill('SIGINT')
    expect(await waitExit(watcher, 10_000)).toBe(0)
    const lines = watched.text().split('\n').filter(Boolean).map((l) => JSON.parse(l))
    expect(lines[0]).toMatchObject({ infoHash: hash, name: 'sda1', target })
    expect(lines.some((t) => t.state === 'downloading' && t.progress > 0 && t.progress < 1)).toBe(true)
    expect(lines.at(-1)).toMatchObject({ state: 'seeding', progress: 1, totalDone: image.torrent.totalLength, etaSeconds: null })
    expect(extentDigest(image.torrent, await readFile(target))).toBe(extentDigest(image.torrent, image.bytes))

    const [t] = await statusJson(address)
    expect(t).toMatchObject({ infoHash: hash, state: 'seeding', paused: false, done: false, total: image.torrent.totalLength, pieceCount: image.torrent.pieceCount })
    const table = await cli(['status', '--daemon', address])
    expect(table.stdout).toMatch(/^HASH +NAME +STATE +PROGRESS +DOWN +UP +PEERS +ETA +TARGET\n/)
    expect(table.stdout).toMatch(new RegExp(`\n${hash}  sda1  seeding +100\\.0% .* ${target}\n$`))

    expect(await cli(['pause', 'sda1', '--daemon', address])).toMatchObject({ code: 0, stdout: `paused ${hash}\n` })
    expect((await statusJson(address, hash))[0]).toMatchObject({ state: 'paused', paused: true })
    expect(await cli(['resume', hash.slice(0, 8), '--daemon', address])).toMatchObject({ code: 0, stdout: `resumed ${hash}\n` })
    expect((await statusJson(address, hash))[0]).toMatchObject({ state: 'seeding', paused: false })

    const unknown = await cli(['pause', 'sdz9', '--daemon', address])
    expect(unknown).toMatchObject({ code: 1, stderr: expect.stringContaining(`no torrent named or hashed "sdz9" in the daemon at ${address} (it has 1)`) })
    await writeFile(join(dir, 'bad.torrent'), 'd4:infoi3ee')
    const badAdd = await cli(['add', join(dir, 'bad.torrent'), join(dir, 'x.img'), '--daemon', address])
    expect(badAdd).toMatchObject({ code: 1, stderr: expect.stringMatching(/^blockswarm: torrent \(\d+ bytes\) is not a usable torrent: .* \[INVALID_ARGUMENT\]\n$/) })

    expect(await cli(['remove', hash, '--daemon', address])).toMatchObject({ code: 0, stdout: `removed (target data untouched) ${hash}\n` })
    expect(await statusJson(address)).toEqual([])
    expect((await cli(['status', '--daemon', address])).stdout).toBe(`no torrents in the daemon at ${address}\n`)
    expect(extentDigest(image.torrent, await readFile(target))).toBe(extentDigest(image.torrent, image.bytes))

    expect(await cli(['shutdown', '--daemon', address])).toMatchObject({ code: 0, stdout: `the daemon at ${address} is shutting down\n` })
    expect(await waitExit(daemon.child, 20_000)).toBe(0)
    const gone = await cli(['status', '--daemon', address])
    expect(gone.code).toBe(1)
    expect(gone.stderr).toContain(`cannot reach the blockswarm daemon at ${address}`)
  })

  it('serves a protoc-generated Python client from the daemon process and exits 0 on its Shutdown', async () => {
    const dir = await tempDir()
    const image = await makeImage(dir, 'sdb1', MiB)
    const address = `127.0.0.1:${await freePort()}`
    const daemon = await startDaemonProcess(['--listen', address, '--port', '0', '--bind', '127.0.0.1', '--status-interval', '0', '--log-level', 'warn'], address)
    const stubs = join(dir, 'stubs')
    expect(await python(stubs, address, 'add', image.torrentFile, image.path, '--seeding')).toEqual({ result: true })
    const status = await python(stubs, address, 'status')
    expect(status.hashes).toEqual([image.torrent.infoHash])
    expect(status.torrents[image.torrent.infoHash]).toMatchObject({ state: 5, is_finished: true, progress: 1, total: image.torrent.totalLength, save_path: image.path })
    expect(await python(stubs, address, 'shutdown')).toEqual({ shutdown: true })
    expect(await waitExit(daemon.child, 20_000)).toBe(0)
  })

  it('says which daemon it cannot reach, and how to start one', async () => {
    const address = `127.0.0.1:${await freePort()}`
    for (const args of [['status'], ['version'], ['shutdown'], ['pause', 'ab'.repeat(20)]]) {
      const r = await cli([...args, '--daemon', address])
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(new RegExp(`^blockswarm: cannot reach the blockswarm daemon at ${address} \\(.+\\); start one with \`blockswarm daemon\``))
    }
    const bad = await cli(['status', '--daemon', 'nowhere'])
    expect(bad).toMatchObject({ code: 1, stderr: 'blockswarm: daemon address "nowhere" is neither host:port nor unix:/path\n' })
  })
})
