/**
 * `blockswarm daemon` with torrents given on the command line: one daemon
 * seeds (--seed), another deploys (--add) onto a file, finishes by its done
 * policy, and both stop cleanly (exit 0) on SIGTERM; logs are JSON lines.
 */
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { buildTorrent } from '../src/torrent/metainfo.js'
import { captureOutput, cleanupAll, CLI, freePort, pseudoRandom, startProcess, tempDir, waitExit, waitFor } from './helpers/sys.js'

const KiB = 1024

afterEach(cleanupAll)

describe('blockswarm daemon', () => {
  it('seeds and deploys torrents given on the command line, logs JSON, and stops cleanly on SIGTERM', async () => {
    const dir = await tempDir('bsw-daemon-')
    const size = 2048 * KiB
    const image = pseudoRandom(size, 21)
    const extents = [
      { offset: 0, length: 700 * KiB },
      { offset: 1024 * KiB, length: 1000 * KiB },
    ]
    const stream = Buffer.concat(extents.map((e) => image.subarray(e.offset, e.offset + e.length)))
    const pieceLength = 128 * KiB
    const hashes: Buffer[] = []
    for (let at = 0; at < stream.length; at += pieceLength) hashes.push(createHash('sha1').update(stream.subarray(at, at + pieceLength)).digest())
    const { buffer, torrent } = buildTorrent({ name: 'disk', pieceLength, pieces: Buffer.concat(hashes), extents, meta: { gaps: 'dont-care' } })
    const torrentFile = join(dir, 'disk.torrent')
    await writeFile(torrentFile, buffer)
    await writeFile(join(dir, 'gold.img'), image)
    await writeFile(join(dir, 'target.img'), Buffer.alloc(size, 0x33))

    const seedPort = await freePort()
    const seeder = startProcess(process.execPath, [
      CLI,
      'daemon',
      '--listen',
      `127.0.0.1:${await freePort()}`,
      '--port',
      String(seedPort),
      '--seed',
      `${torrentFile}=${join(dir, 'gold.img')}`,
    ])
    const seederOut = captureOutput(seeder)
    await waitFor('the seeding daemon', () => seederOut.text().includes('"torrent added"') || seeder.exitCode !== null, 30_000, seederOut.text)

    const leecher = startProcess(process.execPath, [
      CLI,
      'daemon',
      '--listen',
      `127.0.0.1:${await freePort()}`,
      '--port',
      String(await freePort()),
      '--peer',
      `127.0.0.1:${seedPort}`,
      '--seed-idle',
      '0',
      '--add',
      `${torrentFile}=${join(dir, 'target.img')}`,
    ])
    const leecherOut = captureOutput(leecher)
    await waitFor('the deploy to be done', () => leecherOut.text().includes('"done seeding"') || leecher.exitCode !== null, 60_000, leecherOut.text)
    expect(leecher.exitCode, leecherOut.text()).toBe(null)

    const target = await readFile(join(dir, 'target.img'))
    for (const e of torrent.extents) expect(target.subarray(e.offset, e.offset + e.length).equals(image.subarray(e.offset, e.offset + e.length))).toBe(true)
    expect(target.subarray(700 * KiB, 1024 * KiB).equals(Buffer.alloc(324 * KiB, 0x33))).toBe(true)

    for (const child of [leecher, seeder]) child.kill('SIGTERM')
    expect(await waitExit(leecher, 15_000)).toBe(0)
    expect(await waitExit(seeder, 15_000)).toBe(0)
    const lines = leecherOut
      .text()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string })
    expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['session started', 'torrent added', 'resume check done', 'done seeding', 'shutting down', 'daemon stopped']))
  })

  it('refuses a malformed --add with a message that shows the expected form', async () => {
    const child = startProcess(process.execPath, [CLI, 'daemon', '--add', 'no-equals-sign', '--port', String(await freePort())])
    const out = captureOutput(child)
    expect(await waitExit(child, 15_000)).toBe(1)
    expect(out.text()).toContain('--add "no-equals-sign" is not TORRENT=PATH')
  })
})
