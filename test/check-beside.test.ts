/**
 * The resume check beside the download (resume-check.ts, the picker's
 * unchecked pieces): a fresh disk pays only the probe; a target that holds
 * part of the image has every piece checked, and no piece found on it is
 * fetched; the download does not wait for the check. TargetCheck on
 * MemoryStores, then whole Sessions over real TCP on 127.0.0.1.
 */
import { createHash } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryBudget } from '../src/services/memory-budget.js'
import { PieceVerifier } from '../src/services/piece-verifier.js'
import type { StoreOpener } from '../src/session/session.js'
import { MemoryStore } from '../src/storage/memory-store.js'
import { PiecePicker } from '../src/swarm/piece-picker.js'
import { probePieces, TargetCheck } from '../src/swarm/resume-check.js'
import type { TorrentState } from '../src/swarm/status.js'
import { buildTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { mapPieceRange } from '../src/torrent/piece-map.js'
import { memorySeederAndLeecher, waitStatus } from './helpers/grpc-fixtures.js'
import { cleanupAll, cli, pseudoRandom } from './helpers/sys.js'

const KiB = 1024
const PIECE = 16 * KiB
const PIECES = 200
const SIZE = PIECE * PIECES + 64 * KiB

afterEach(cleanupAll)

/** A torrent of PIECES pieces over one extent of a random SIZE-byte source. */
function image(seed: number): { raw: Buffer; torrent: ExtentTorrent; source: Buffer } {
  const source = pseudoRandom(SIZE, seed)
  const extents = [{ offset: 32 * KiB, length: PIECE * PIECES }]
  const stream = source.subarray(32 * KiB, 32 * KiB + PIECE * PIECES)
  const hashes: Buffer[] = []
  for (let at = 0; at < stream.length; at += PIECE) hashes.push(createHash('sha1').update(stream.subarray(at, at + PIECE)).digest())
  const { buffer: raw, torrent } = buildTorrent({ name: 'beside', pieceLength: PIECE, pieces: Buffer.concat(hashes), extents, meta: { gaps: 'dont-care', targetSize: SIZE } })
  return { raw, torrent, source }
}

/** Stale bytes with these pieces of the source copied in: a target that holds part of the image. */
function partTarget(t: ExtentTorrent, source: Buffer, pieces: Iterable<number>, seed: number): Buffer {
  const disk = pseudoRandom(SIZE, seed)
  for (const i of pieces) for (const s of mapPieceRange(t.layout, i, 0, PIECE)) source.copy(disk, s.diskOffset, s.diskOffset, s.diskOffset + s.length)
  return disk
}

/** Every k-th piece that the probe does not read. */
function outsideProbe(t: ExtentTorrent, k: number): number[] {
  const probe = new Set(probePieces(t))
  return Array.from({ length: t.pieceCount }, (_, i) => i).filter((i) => !probe.has(i) && i % k === 0)
}

describe('TargetCheck', () => {
  const run = async (t: ExtentTorrent, disk: Buffer, probe: boolean, before?: (c: TargetCheck) => void) => {
    const order: number[] = []
    const verifier = new PieceVerifier(0)
    const check = new TargetCheck(t, new MemoryStore(t, disk, { mode: 'read' }), verifier, new MemoryBudget(1024 * KiB), {
      probe,
      onChecked: (i) => order.push(i),
    })
    before?.(check)
    return { result: await check.run(), order }
  }

  it('a fresh disk: the probe reads its few spread pieces, finds none intact, and the check stops there', async () => {
    const { torrent } = image(1)
    const probe = probePieces(torrent)
    expect(probe.length).toBe(64)
    expect(probe.length).toBeLessThan(PIECES / 2)
    expect(probe[0]).toBeLessThan(PIECES / probe.length)
    expect(probe.at(-1)).toBeGreaterThan(PIECES - PIECES / probe.length - 1)
    const { result, order } = await run(torrent, pseudoRandom(SIZE, 2), true)
    expect(result).toMatchObject({ fresh: true, valid: 0, checked: probe.length, bytesValid: 0 })
    expect(order.sort((a, b) => a - b)).toEqual(probe)
  })

  it('a probe that finds one piece intact goes on to check every piece, and finds all that are there', async () => {
    const { torrent, source } = image(3)
    const held = [...outsideProbe(torrent, 7), probePieces(torrent)[5]]
    const { result, order } = await run(torrent, partTarget(torrent, source, held, 4), true)
    expect(result).toMatchObject({ fresh: false, checked: PIECES, valid: held.length, bytesValid: held.length * PIECE })
    expect(new Set(order).size).toBe(PIECES)
  })

  it('without the probe (--check-first) every piece is checked, even when the spread ones are all stale', async () => {
    const { torrent, source } = image(5)
    const held = outsideProbe(torrent, 5)
    const { result } = await run(torrent, partTarget(torrent, source, held, 6), false)
    expect(result).toMatchObject({ fresh: false, checked: PIECES, valid: held.length })
  })

  it('a hurried piece (the downloader is about to start it) is read before the probe', async () => {
    const { torrent } = image(7)
    const wanted = outsideProbe(torrent, 3)[4]
    const { order } = await run(torrent, pseudoRandom(SIZE, 8), true, (c) => c.hurry(wanted))
    expect(order[0]).toBe(wanted)
  })
})

describe('PiecePicker with unchecked pieces', () => {
  it('offers only checked pieces; pickUnchecked names the one to check next; clearUnchecked ends it', () => {
    const p = new PiecePicker(4, false, () => 0)
    for (let i = 0; i < 4; i++) p.peerHas(i)
    p.markAllUnchecked()
    const all = () => true
    expect(p.pick(all)).toBeUndefined()
    expect(p.pickUnchecked(all)).toBeDefined()
    p.setChecked(2)
    expect(p.pick(all)).toBe(2)
    expect(p.pickUnchecked((i) => i !== 2 && i !== 0)).toBeOneOf([1, 3])
    expect(p.uncheckedPieces).toBe(3)
    p.clearUnchecked()
    expect(p.uncheckedPieces).toBe(0)
    expect(p.pickUnchecked(all)).toBeUndefined()
    expect(p.pick((i) => i === 0)).toBe(0)
  })
})

describe('a deploy with the check beside the download (Sessions on MemoryStores, real TCP)', () => {
  /** A leecher store that logs every read ('r') and piece written ('w'), each read taking a little while (a disk). */
  class LoggedStore extends MemoryStore {
    readonly events: string[] = []
    override async read(index: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
      this.events.push('r')
      await new Promise((r) => setTimeout(r, 3))
      return super.read(index, offset, length, into)
    }
    override async writePiece(index: number, data: Buffer): Promise<void> {
      this.events.push('w')
      return super.writePiece(index, data)
    }
  }

  const deploy = async (seed: number, held: (t: ExtentTorrent) => number[]) => {
    const { raw, torrent, source } = image(seed)
    const pieces = held(torrent)
    const disk = partTarget(torrent, source, pieces, seed + 1)
    let store: LoggedStore | undefined
    const openStore: StoreOpener = async (t, target, opts) => {
      if (target === 'memory:golden') return new MemoryStore(t, Buffer.from(source), { mode: opts.mode, target })
      store = new LoggedStore(t, disk, { mode: opts.mode, target })
      return store
    }
    const { leecher } = await memorySeederAndLeecher(raw, openStore)
    const states = new Set<TorrentState>()
    leecher.on('change', (s: { state: TorrentState }) => states.add(s.state))
    const added = await leecher.add(raw, { target: 'memory:node', seedIdle: 0 })
    states.add(added.state)
    const s = await waitStatus(leecher, torrent.infoHash, (x) => x.done, 'leecher done')
    const region = (b: Buffer) => b.subarray(32 * KiB, 32 * KiB + PIECE * PIECES)
    expect(region(disk).equals(region(source))).toBe(true)
    return { s, states, events: store!.events, held: pieces, torrent }
  }

  it('half the image on the target: downloading starts before the check ends, every piece held is re-used and none of them fetched', async () => {
    const { s, states, events, held } = await deploy(11, (t) => Array.from({ length: t.pieceCount }, (_, i) => i).filter((i) => i % 2 === 1))
    expect(states.has('checking')).toBe(false)
    expect(s.totalReused).toBe(held.length * PIECE)
    // one seeder, so no endgame duplicates: what came over the wire is exactly what was not on the target
    expect(s.totalDownloaded).toBe(PIECES * PIECE - s.totalReused)
    expect(events.filter((e) => e === 'r').length).toBe(PIECES)
    expect(events.indexOf('w')).toBeLessThan(events.lastIndexOf('r'))
  })

  it('a fresh target: only the probe (and the pieces about to be fetched) are read back, everything is downloaded', async () => {
    const { s, events, torrent } = await deploy(21, () => [])
    expect(s.totalReused).toBe(0)
    expect(s.totalDownloaded).toBe(PIECES * PIECE)
    const reads = events.filter((e) => e === "r").length
    expect(reads).toBeGreaterThanOrEqual(probePieces(torrent).length)
    expect(reads).toBeLessThan(PIECES * 0.75)
  })

  it('the whole image already on the target: nothing is downloaded', async () => {
    const { s } = await deploy(31, (t) => Array.from({ length: t.pieceCount }, (_, i) => i))
    expect(s.totalDownloaded).toBe(0)
    expect(s.totalReused).toBe(PIECES * PIECE)
  })
})

describe('deploy --check-first', () => {
  it('with --skip-check is refused, naming both', async () => {
    const r = await cli(['deploy', 'x.torrent', 'y.img', '--check-first', '--skip-check'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/--check-first.*cannot be used with.*--skip-check|--skip-check.*cannot be used with.*--check-first/)
  })
})
