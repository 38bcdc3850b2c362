/**
 * Progress moves with the bytes, as libtorrent's (and so EZIO's) does: a
 * deploy of three 16 MiB pieces, polled over ezio.EZIO by the Python grpcio
 * client, reads many values between 0 and 1, not three steps; num_pieces
 * stays the verified pieces. (A piece that fails its hash check counting 0
 * again: test/hostile-peers.test.ts.)
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createTorrent } from '../src/create/create.js'
import { extentDigest, makeTarget, python, startDaemonProcess, startSeeder } from './helpers/grpc-fixtures.js'
import { cleanupAll, freePort, pseudoRandom, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024
const PIECE = 16 * MiB

interface Poll {
  state: number
  progress: number
  total: number
  total_done: number
  num_pieces: number
}

describe('live progress', () => {
  it('a deploy of 3 × 16 MiB pieces reads more than 10 distinct progress values over ezio.EZIO; num_pieces counts verified pieces only', async () => {
    const dir = await tempDir()
    const stubs = join(dir, 'stubs')
    const path = join(dir, 'disk.img')
    const bytes = pseudoRandom(3 * PIECE, 21)
    await writeFile(path, bytes)
    const made = await createTorrent({ source: path, name: 'disk', mode: 'all', pieceLength: PIECE })
    expect(made.torrent.pieceCount).toBe(3)
    const torrentFile = join(dir, 'disk.torrent')
    await writeFile(torrentFile, made.buffer)
    // 6 MiB/s from the only seeder: about 8 s, polled every 0.2 s
    const seeder = await startSeeder({ path, size: bytes.length, bytes, torrent: made.torrent, torrentFile }, 6 * MiB)
    const address = `127.0.0.1:${await freePort()}`
    const daemon = await startDaemonProcess(['-l', address, '-p', '0', '--bind', '127.0.0.1', '--peer', seeder.peer, '--status-interval', '0'], address)
    const target = await makeTarget(dir, 'target.img', bytes.length)
    const hash = made.torrent.infoHash

    expect(await python(stubs, address, 'add', torrentFile, target)).toEqual({ result: true })
    const waited = await python(stubs, address, 'wait-finished', hash, '90')
    expect(waited.timeout, daemon.output()).toBeUndefined()
    const polls = waited.polls as Poll[]
    const moving = polls.filter((p) => p.progress > 0 && p.progress < 1)
    expect(new Set(moving.map((p) => p.progress)).size).toBeGreaterThan(10)
    // within pieces: some reads fall between whole pieces
    expect(moving.some((p) => p.total_done % PIECE !== 0)).toBe(true)
    for (const p of polls) {
      expect(p.progress).toBeCloseTo(p.total_done / p.total, 12)
      expect(p.num_pieces * PIECE).toBeLessThanOrEqual(p.total_done)
      if (p.progress < 1) expect(p.num_pieces).toBeLessThan(3)
    }
    // no piece failed, so it never went back
    const done = polls.map((p) => p.total_done)
    expect(done).toEqual([...done].sort((a, b) => a - b))
    expect(waited.final.torrents[hash]).toMatchObject({ progress: 1, total_done: 3 * PIECE, num_pieces: 3, is_finished: true })
    expect(extentDigest(made.torrent, await readFile(target))).toBe(extentDigest(made.torrent, bytes))
  })
})
