/**
 * The upload read cache (src/services/read-cache.ts) over a MemoryStore:
 * every block it hands out holds the source's bytes, blocks of one chunk
 * share its buffer, and however many blocks of distinct chunks are out at
 * once (many peers unchoked together), no more chunk buffers exist than fit
 * in its capacity.
 */
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { CHUNK_SIZE, ReadCache } from '../src/services/read-cache.js'
import { MemoryStore } from '../src/storage/memory-store.js'
import { buildTorrent } from '../src/torrent/metainfo.js'
import { pseudoRandom } from './helpers/sys.js'

const MiB = 1024 * 1024
const PIECE = 4 * MiB
const BLOCK = 16 * 1024

function fixture() {
  const bytes = pseudoRandom(4 * PIECE, 7)
  const pieces = Buffer.concat(Array.from({ length: 4 }, (_, i) => createHash('sha1').update(bytes.subarray(i * PIECE, (i + 1) * PIECE)).digest()))
  const { torrent } = buildTorrent({ name: 'cache', pieceLength: PIECE, pieces, extents: [{ offset: 0, length: bytes.length }], meta: { gaps: 'dont-care' } })
  return { bytes, store: new MemoryStore(torrent, bytes, { mode: 'read' }) }
}

describe('ReadCache', () => {
  it('blocks of 16 distinct chunks out at once: at most capacity / 1 MiB chunk buffers, every block right', async () => {
    const { bytes, store } = fixture()
    const cache = new ReadCache(4 * CHUNK_SIZE)
    const asked = Array.from({ length: 16 }, (_, i) => ({ index: i % 4, offset: Math.floor(i / 4) * CHUNK_SIZE + 3 * BLOCK }))
    const blocks = await Promise.all(asked.map((a) => cache.read(store, a.index, a.offset, BLOCK)))
    expect(cache.chunkBuffers).toBeLessThanOrEqual(4)
    for (const [i, a] of asked.entries()) {
      const at = a.index * PIECE + a.offset
      expect(blocks[i].data.equals(bytes.subarray(at, at + BLOCK)), `block ${i}`).toBe(true)
    }
    for (const b of blocks) b.release()

    // then one piece read in order, block by block, with other chunks' blocks still out: the buffers are reused
    const held = await cache.read(store, 3, 3 * CHUNK_SIZE, BLOCK)
    for (let offset = 0; offset < PIECE; offset += BLOCK) {
      const b = await cache.read(store, 1, offset, BLOCK)
      expect(b.data.equals(bytes.subarray(PIECE + offset, PIECE + offset + BLOCK)), `offset ${offset}`).toBe(true)
      b.release()
    }
    held.release()
    expect(cache.chunkBuffers).toBeLessThanOrEqual(4)
  })

  it('blocks of one chunk are views of one buffer (read once)', async () => {
    const { store } = fixture()
    const cache = new ReadCache(4 * CHUNK_SIZE)
    const a = await cache.read(store, 2, 0, BLOCK)
    const b = await cache.read(store, 2, BLOCK, BLOCK)
    expect(a.data.buffer).toBe(b.data.buffer)
    a.release()
    b.release()
  })
})
