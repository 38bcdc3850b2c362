/**
 * The whole engine on MemoryStores (SessionOptions.openStore): a seeder and a
 * leecher Session over real TCP on 127.0.0.1, no device, no file.
 */
import { createHash } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { StoreOpener } from '../src/session/session.js'
import { MemoryStore } from '../src/storage/memory-store.js'
import { gapsOf } from '../src/torrent/extents.js'
import { buildTorrent } from '../src/torrent/metainfo.js'
import { memorySeederAndLeecher, waitStatus } from './helpers/grpc-fixtures.js'
import { cleanupAll, pseudoRandom } from './helpers/sys.js'

const KiB = 1024

afterEach(cleanupAll)

describe('Session on MemoryStores', () => {
  it("a seeder and a leecher complete a transfer; the leecher's bytes equal the source at the extents, its gaps zeroed", async () => {
    const size = 1024 * KiB
    const source = pseudoRandom(size, 401)
    const extents = [
      { offset: 4 * KiB + 1, length: 200 * KiB },
      { offset: 300 * KiB, length: 7 },
      { offset: 512 * KiB, length: size - 512 * KiB - 3 * KiB },
    ]
    const pieceLength = 64 * KiB
    const stream = Buffer.concat(extents.map((e) => source.subarray(e.offset, e.offset + e.length)))
    const hashes: Buffer[] = []
    for (let at = 0; at < stream.length; at += pieceLength) hashes.push(createHash('sha1').update(stream.subarray(at, at + pieceLength)).digest())
    const { buffer: raw, torrent } = buildTorrent({ name: 'mem', pieceLength, pieces: Buffer.concat(hashes), extents, meta: { gaps: 'zero', targetSize: size } })

    // the targets: names for the session, bytes for the stores
    const disks = new Map([
      ['memory:golden', Buffer.from(source)],
      ['memory:node', pseudoRandom(size, 402)],
    ])
    const opened: string[] = []
    const openStore: StoreOpener = async (t, target, opts) => {
      const bytes = disks.get(target)
      if (!bytes) throw new Error(`no memory target ${target}`)
      opened.push(`${target} ${opts.mode}`)
      return new MemoryStore(t, bytes, { mode: opts.mode, target })
    }
    const { leecher } = await memorySeederAndLeecher(raw, openStore)
    await leecher.add(raw, { target: 'memory:node', seedIdle: 0 })
    const s = await waitStatus(leecher, torrent.infoHash, (x) => x.done, 'leecher done')
    expect(s.state).toBe('finished')
    expect(s.piecesDone).toBe(torrent.pieceCount)
    expect(s.totalDownloaded).toBeGreaterThanOrEqual(torrent.totalLength)
    expect(opened).toEqual(['memory:golden read', 'memory:node write'])

    const node = disks.get('memory:node')!
    for (const e of extents) expect(node.subarray(e.offset, e.offset + e.length).equals(source.subarray(e.offset, e.offset + e.length))).toBe(true)
    for (const g of gapsOf(torrent.extents, size)) expect(node.subarray(g.offset, g.offset + g.length).equals(Buffer.alloc(g.length))).toBe(true)
  })
})
