/**
 * A drop-in for the EZIO daemon, as an EZIO installation meets it: the
 * daemon started with EZIO's command line, and the same program run under the
 * name `ezio` (a symlink), driven over a real socket by a Python grpcio
 * client generated from proto/ezio.proto — with what EZIO forgave forgiven
 * and real errors still precise. Bytes are compared exactly.
 */
import { readFile, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { connectControl } from '../src/control/client.js'
import { makeImage, python, startDaemonProcess } from './helpers/grpc-fixtures.js'
import { extentFileProblems } from './helpers/interop.js'
import { cleanupAll, CLI, cli, freePort, run, tempDir, waitExit } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024

/** The program under the name `ezio`, as the README's one line makes it. */
async function ezioLink(dir: string): Promise<string> {
  const link = join(dir, 'ezio')
  await symlink(CLI, link)
  return link
}

/** The daemon's JSON log lines with this message. */
function logLines(output: string, msg: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === msg)
}

describe("EZIO's command line", () => {
  it('ezio -v, --version and -h answer without starting anything; conflicting spellings of one setting are refused', async () => {
    const dir = await tempDir()
    const ezio = await ezioLink(dir)
    for (const flag of ['-v', '--version']) expect(await run(ezio, [flag])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\d+\.\d+\.\d+\n$/) })
    expect(await cli(['daemon', '-v'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\d+\.\d+\.\d+\n$/) })
    const help = await run(ezio, ['-h'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/^Usage: ezio \[options\]/)
    for (const flag of ['-l, --listen', '-p, --port', '-F, --file', '--cache-size', '--aio-threads', '--slow-start-period', '-v, --version', '-h, --help', '--lsd']) {
      expect(help.stdout).toContain(flag)
    }
    expect(await run(ezio, ['--cache-size', '64', '--memory', '32M'])).toMatchObject({ code: 1, stderr: 'ezio: --cache-size and --memory set the same memory budget: give one of them\n' })
    expect(await cli(['daemon', '--aio-threads', '2', '--hash-threads', '1'])).toMatchObject({
      code: 1,
      stderr: 'blockswarm: --aio-threads and --hash-threads set the same hashing workers: give one of them\n',
    })
    expect((await cli(['daemon', '--cache-size', '0'])).stderr).toBe('blockswarm: --cache-size "0" must be a whole number from 1 to 1048576\n')
  })

  it('-l -p -F --cache-size 64 --aio-threads 2, driven by a Python grpcio client: seed and download, forgiving adds, filters, pause/resume; exact bytes', async () => {
    const dir = await tempDir()
    const stubs = join(dir, 'stubs')
    const sda1 = await makeImage(dir, 'sda1', 4 * MiB, 3)
    const sda2 = await makeImage(dir, 'sda2', 8 * MiB, 11)
    const [grpcPort, btPort, ezioGrpcPort, ezioBtPort] = [await freePort(), await freePort(), await freePort(), await freePort()]
    const d = `127.0.0.1:${grpcPort}`
    const e = `127.0.0.1:${ezioGrpcPort}`

    // the node daemon, with EZIO's command line exactly
    const daemon = await startDaemonProcess(['-l', d, '-p', String(btPort), '-F', '--cache-size', '64', '--aio-threads', '2'], d)
    // the other end: the same program run as `ezio` (its BitTorrent side on loopback, dialing the node)
    const other = await startDaemonProcess(['-l', e, '-p', String(ezioBtPort), '-F', '--bind', '127.0.0.1', '--peer', `127.0.0.1:${btPort}`], e, [await ezioLink(dir)])

    const control = connectControl(d)
    try {
      expect(await control.blockswarm.GetDaemonInfo({})).toMatchObject({ memory: 64 * MiB, btPort, listen: [d] })
    } finally {
      control.close()
    }
    expect(logLines(daemon.output(), 'session started')).toEqual([expect.objectContaining({ memory: 64 * MiB, hashThreads: 2, port: btPort, lsd: false })])
    expect(await python(stubs, d, 'version')).toEqual({ version: expect.stringMatching(/^blockswarm \d+\.\d+\.\d+/) })

    // seeding mode on the node, download on the other end; download on the node into a directory -F creates
    const nodeTarget = join(dir, 'node', 'sda2')
    const otherTarget = join(dir, 'other', 'sda1')
    expect(await python(stubs, d, 'add', sda1.torrentFile, sda1.path, '--seeding')).toEqual({ result: true })
    expect(await python(stubs, d, 'add', sda2.torrentFile, nodeTarget)).toEqual({ result: true })
    expect(await python(stubs, e, 'add', sda2.torrentFile, sda2.path, '--seeding')).toEqual({ result: true })
    expect(await python(stubs, e, 'add', sda1.torrentFile, otherTarget)).toEqual({ result: true })
    const h1 = sda1.torrent.infoHash
    const h2 = sda2.torrent.infoHash
    for (const [addr, hash] of [[d, h2], [e, h1]]) {
      const waited = await python(stubs, addr, 'wait-finished', hash, '60')
      expect(waited.timeout, `${daemon.output()}\n${other.output()}`).toBeUndefined()
    }
    expect(await extentFileProblems(nodeTarget, sda2.torrent, sda2.path)).toEqual([])
    expect(await extentFileProblems(otherTarget, sda1.torrent, sda1.path)).toEqual([])

    // the same add again: nothing to do, success (also by another spelling of the same path); another path: an error naming both
    expect(await python(stubs, d, 'add', sda1.torrentFile, sda1.path, '--seeding')).toEqual({ result: true })
    expect(await python(stubs, d, 'add', sda2.torrentFile, nodeTarget)).toEqual({ result: true })
    expect(await python(stubs, d, 'add', sda2.torrentFile, join(dir, 'node', '..', 'node', 'sda2'))).toEqual({ result: true })
    const elsewhere = join(dir, 'elsewhere')
    const moved = await python(stubs, d, 'add', sda2.torrentFile, elsewhere)
    expect(moved.error.code).toBe('ALREADY_EXISTS')
    expect(moved.error.details).toContain(`save_path ${nodeTarget}`)
    expect(moved.error.details).toContain(`save_path ${elsewhere}`)
    expect(logLines(daemon.output(), 'AddTorrent of a torrent already here on the same save_path: nothing to do')).toHaveLength(3)

    // real errors keep their precise codes: nothing to seed from, a relative path, no torrent
    const sda3 = await makeImage(dir, 'sda3', MiB, 5)
    const noSource = await python(stubs, d, 'add', sda3.torrentFile, join(dir, 'no-such-source.img'), '--seeding')
    expect(noSource.error).toEqual({ code: 'FAILED_PRECONDITION', details: expect.stringContaining(`${join(dir, 'no-such-source.img')} does not exist`) })
    expect((await python(stubs, d, 'add', sda3.torrentFile, 'relative/sda3')).error.code).toBe('INVALID_ARGUMENT')

    // status: every torrent; unknown hashes absent; entries that are not info-hashes ignored, none left = every torrent
    const both = [h1, h2].sort()
    const hashesOf = async (...entries: string[]) => (await python(stubs, d, 'status', ...entries)).hashes.sort()
    expect(await hashesOf()).toEqual(both)
    const unknown = 'ef'.repeat(20)
    expect(await python(stubs, d, 'status', unknown)).toEqual({ hashes: [], torrents: {} })
    expect(await hashesOf('sda1', 'xyz', '', h1.slice(0, 39))).toEqual(both)
    // EZIO's own client script sends one entry per character of --hash
    expect(await hashesOf(...h1.split(''))).toEqual(both)
    expect(await hashesOf(h1.toUpperCase())).toEqual([h1])
    expect(await hashesOf('sda1', unknown, h2, h2)).toEqual([h2])
    const status = await python(stubs, d, 'status', h2)
    expect(status.torrents[h2]).toMatchObject({ hash: h2, name: 'sda2', is_finished: true, progress: 1, total_done: sda2.torrent.totalLength, save_path: nodeTarget })

    // pause/resume of a torrent not here: success, nothing done, logged; a torrent here still pauses and resumes
    for (const hash of [unknown, 'sda1']) {
      expect(await python(stubs, d, 'pause', hash)).toEqual({ paused: hash })
      expect(await python(stubs, d, 'resume', hash)).toEqual({ resumed: hash })
    }
    const noOps = logLines(daemon.output(), 'PauseTorrent of a torrent not in this daemon: nothing to do (EZIO forgives it)')
    expect(noOps.map((l) => [l.hash, l.why])).toEqual([
      [unknown, 'no such torrent in this daemon'],
      ['sda1', 'not an info-hash'],
    ])
    expect(logLines(daemon.output(), 'ResumeTorrent of a torrent not in this daemon: nothing to do (EZIO forgives it)')).toHaveLength(2)
    const unpaused = await python(stubs, d, 'status')
    expect([h1, h2].map((h) => unpaused.torrents[h].is_paused)).toEqual([false, false])
    expect(await python(stubs, d, 'pause', h1)).toEqual({ paused: h1 })
    expect((await python(stubs, d, 'status', h1)).torrents[h1].is_paused).toBe(true)
    expect(await python(stubs, d, 'resume', h1)).toEqual({ resumed: h1 })
    expect((await python(stubs, d, 'status', h1)).torrents[h1].is_paused).toBe(false)

    for (const [addr, proc] of [[d, daemon], [e, other]] as const) {
      expect(await python(stubs, addr, 'shutdown')).toEqual({ shutdown: true })
      expect(await waitExit(proc.child, 30_000), proc.output()).toBe(0)
    }
    // the seeding-mode sources were only read
    for (const image of [sda1, sda2]) expect((await readFile(image.path)).equals(image.bytes)).toBe(true)
  })
})
