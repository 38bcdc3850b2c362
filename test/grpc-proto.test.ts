/**
 * The control protos as loaded at run time: the codec against another
 * toolchain (protoc + Python protobuf), reflection descriptors against what
 * protoc itself makes of the same files, and the status mapping.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import protobuf from 'protobufjs'
import descriptor from 'protobufjs/ext/descriptor.js'
import { BlockswarmService } from '../src/control/blockswarm-wire.js'
import { fileDescriptorBytes } from '../src/control/descriptors.js'
import { EzioService, type EzioTorrent } from '../src/control/ezio-wire.js'
import { loadProto, PROTO_DIR } from '../src/control/proto-loader.js'
import { ezioState, toEzioTorrent, toTorrentInfo } from '../src/control/status-mapping.js'
import type { TorrentStatus } from '../src/swarm/status.js'
import { cleanupAll, ROOT, sh, tempDir } from './helpers/sys.js'

const PY = '/usr/bin/python3'
const PY_CLIENT = join(ROOT, 'test/helpers/python-ezio-client.py')

afterAll(cleanupAll)

const GiB = 2 ** 30

/** A status; `complete` follows the pieces unless given (every piece verified and the finish step done). */
function status(over: Partial<TorrentStatus> = {}): TorrentStatus {
  return {
    complete: (over.piecesDone ?? 160) === 320 && over.state !== 'finishing',
    infoHash: 'ab'.repeat(20),
    name: 'sda1',
    target: '/dev/loop7',
    state: 'downloading',
    progress: 0.5,
    total: 5 * GiB,
    totalDone: 2.5 * GiB,
    piecesDone: 160,
    pieceCount: 320,
    downloadRate: 1234.4,
    uploadRate: 10.6,
    totalDownloaded: 2.5 * GiB + 16384,
    totalUploaded: 7,
    totalReused: 0,
    totalChecked: 0,
    checkPending: 0,
    webSeeds: [],
    totalFromWebSeeds: 0,
    peers: 3,
    seeds: 1,
    startedAt: 1_000_000,
    paused: false,
    done: false,
    bans: [],
    hashFailures: 0,
    peerList: [],
    ...over,
  }
}

describe('ezio codec', () => {
  it('has the service paths EZIO clients call', () => {
    expect(Object.values(EzioService).map((m) => m.path)).toEqual([
      '/ezio.EZIO/Shutdown',
      '/ezio.EZIO/GetTorrentStatus',
      '/ezio.EZIO/AddTorrent',
      '/ezio.EZIO/PauseTorrent',
      '/ezio.EZIO/ResumeTorrent',
      '/ezio.EZIO/GetVersion',
    ])
    expect(BlockswarmService.WatchTorrents.responseStream).toBe(true)
    expect(BlockswarmService.ListTorrents.path).toBe('/blockswarm.v1.Blockswarm/ListTorrents')
  })

  it('round-trips int64 as JS numbers (negative and above 2^32) and fills defaults', () => {
    const m = EzioService.GetTorrentStatus
    const t = toEzioTorrent(status({ lastUpload: undefined }), 1_000_000 + 90_500)
    const back = m.responseDeserialize(m.responseSerialize({ hashes: [t.hash], torrents: { [t.hash]: t } }))
    expect(back.torrents[t.hash]).toEqual(t)
    expect(back.torrents[t.hash].lastUpload).toBe(-1)
    expect(back.torrents[t.hash].total).toBe(5 * GiB)
    const empty = EzioService.AddTorrent.requestDeserialize(EzioService.AddTorrent.requestSerialize({}))
    expect(empty).toEqual({ torrent: Buffer.alloc(0), savePath: '', seedingMode: false, maxUploads: 0, maxConnections: 0, sequentialDownload: false })
  })

  it('writes UpdateStatus bytes that protoc-generated Python code reads field for field', async () => {
    const dir = await tempDir()
    const t = toEzioTorrent(status({ state: 'seeding', piecesDone: 320, progress: 1, totalDone: 5 * GiB, finishedAt: 1_030_000, lastDownload: 1_020_000 }), 1_100_000)
    const other = toEzioTorrent(status({ infoHash: 'cd'.repeat(20), name: 'sda2', state: 'checking' }), 1_100_000)
    const bytes = EzioService.GetTorrentStatus.responseSerialize({ hashes: [t.hash, other.hash], torrents: { [t.hash]: t, [other.hash]: other } })
    await writeFile(join(dir, 'status.bin'), bytes)
    const out = JSON.parse(await sh(PY, [PY_CLIENT, '--stubs', join(dir, 'stubs'), '--proto-dir', PROTO_DIR, '-', 'decode-status', join(dir, 'status.bin')]))
    expect(out.hashes).toEqual([t.hash, other.hash])
    const snake = (o: EzioTorrent) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v]))
    expect(out.torrents[t.hash]).toEqual(snake(t))
    expect(out.torrents[t.hash]).toMatchObject({ state: 5, total: 5 * GiB, is_finished: true, last_upload: -1, last_download: 80, finished_time: 70 })
    expect(out.torrents[other.hash].state).toBe(1)
  })
})

describe('reflection descriptors', () => {
  /** The parts of a FileDescriptorProto that tools rely on (protoc adds json_name; protobufjs does not always). */
  function normalize(file: descriptor.IFileDescriptorProto) {
    const obj = descriptor.FileDescriptorProto.toObject(descriptor.FileDescriptorProto.fromObject(file), { enums: String, defaults: false }) as Record<string, unknown>
    const strip = (v: unknown): unknown => {
      if (Array.isArray(v)) return v.map(strip)
      if (v && typeof v === 'object') {
        return Object.fromEntries(
          Object.entries(v)
            .filter(([k]) => k !== 'jsonName' && k !== 'sourceCodeInfo')
            .map(([k, x]) => [k, strip(x)]),
        )
      }
      return v
    }
    return strip(obj)
  }

  it.each(['ezio.proto', 'blockswarm.proto'])('match what protoc makes of %s', async (file) => {
    const dir = await tempDir()
    await sh('protoc', ['-I', PROTO_DIR, `--descriptor_set_out=${join(dir, 'set.pb')}`, file])
    const theirs = descriptor.FileDescriptorSet.decode(await readFile(join(dir, 'set.pb'))).file[0]
    const ours = descriptor.FileDescriptorProto.decode(fileDescriptorBytes(loadProto(file, { keepCase: true }), file)) as descriptor.IFileDescriptorProto
    expect(normalize(ours)).toEqual(normalize(theirs))
  })
})

describe('the hand-written wire types follow the .proto', () => {
  it('every field of ezio.Torrent and blockswarm.v1.TorrentInfo is filled by the mapping, and nothing else', () => {
    const fields = (file: string, type: string) => Object.keys(loadProto(file).lookupType(type).fields).sort()
    const full = status({ error: 'x', finishedAt: 1_030_000, lastUpload: 1_020_000, lastDownload: 1_020_000, checkRate: 5, doneReason: 'r' })
    expect(Object.keys(toEzioTorrent(full, 1_100_000)).sort()).toEqual(fields('ezio.proto', 'ezio.Torrent'))
    expect(Object.keys(toTorrentInfo(full, { peers: true })).sort()).toEqual(fields('blockswarm.proto', 'blockswarm.v1.TorrentInfo'))
  })
})

describe('web seeds on blockswarm.v1', () => {
  it('TorrentInfo carries each web seed (rate rounded, no error = empty) and the bytes from web seeds; AddTorrentRequest its URLs', () => {
    const s = status({
      totalFromWebSeeds: 3 * GiB,
      webSeeds: [
        { url: 'http://10.0.0.1/', kind: 'extents', state: 'active', downloadRate: 99.6, totalDownloaded: 2 * GiB, inFlight: 4, spoiled: 0, failures: 0 },
        { url: 'http://10.0.0.2/golden.img', kind: 'image', state: 'backoff', downloadRate: 0, totalDownloaded: GiB, inFlight: 0, spoiled: 2, failures: 3, lastError: 'HTTP 503 Service Unavailable for http://10.0.0.2/golden.img' },
      ],
    })
    const info = toTorrentInfo(s)
    expect(info.totalFromWebSeeds).toBe(3 * GiB)
    expect(info.webSeeds).toEqual([
      { url: 'http://10.0.0.1/', kind: 'extents', state: 'active', downloadRate: 100, totalDownloaded: 2 * GiB, spoiledPieces: 0, faults: 0, lastError: '' },
      { url: 'http://10.0.0.2/golden.img', kind: 'image', state: 'backoff', downloadRate: 0, totalDownloaded: GiB, spoiledPieces: 2, faults: 3, lastError: 'HTTP 503 Service Unavailable for http://10.0.0.2/golden.img' },
    ])
    const m = BlockswarmService.GetTorrent
    expect(m.responseDeserialize(m.responseSerialize(info))).toEqual(info)
    const add = BlockswarmService.AddTorrent
    const req = add.requestDeserialize(add.requestSerialize({ target: '/dev/sda', webSeeds: ['http://a/', 'https://b/'], webSeedImages: ['http://c/x.img'] }))
    expect(req).toMatchObject({ target: '/dev/sda', webSeeds: ['http://a/', 'https://b/'], webSeedImages: ['http://c/x.img'], peers: [] })
    expect(add.requestDeserialize(add.requestSerialize({}))).toMatchObject({ webSeeds: [], webSeedImages: [] })
  })
})

describe('status mapping', () => {
  const now = 1_000_000 + 3_600_000

  it('gives EZIO state codes; a paused torrent keeps its code and sets is_paused', () => {
    expect(ezioState(status({ state: 'checking' }))).toBe(1)
    expect(ezioState(status({ state: 'downloading' }))).toBe(3)
    expect(ezioState(status({ state: 'finished', piecesDone: 320 }))).toBe(4)
    expect(ezioState(status({ state: 'seeding', piecesDone: 320 }))).toBe(5)
    const pausedSeed = toEzioTorrent(status({ state: 'paused', paused: true, piecesDone: 320, progress: 1 }), now)
    expect(pausedSeed).toMatchObject({ state: 5, isPaused: true, isFinished: true })
    const pausedLeech = toEzioTorrent(status({ state: 'paused', paused: true }), now)
    expect(pausedLeech).toMatchObject({ state: 3, isPaused: true, isFinished: false })
  })

  it('finishing (every piece verified, not yet flushed): EZIO reads still downloading, below 100%; blockswarm.v1 reads FINISHING', () => {
    const s = status({ state: 'finishing', piecesDone: 320, progress: 1, totalDone: 5 * GiB })
    expect(s.complete).toBe(false)
    const t = toEzioTorrent(s, now)
    expect(t).toMatchObject({ state: 3, isFinished: false, finishedTime: 0, seedingTime: 0, totalDone: 5 * GiB - 1, numPieces: 319 })
    expect(t.progress).toBeLessThan(1)
    expect(toTorrentInfo(s)).toMatchObject({ state: 'TORRENT_STATE_FINISHING', complete: false, piecesDone: 320 })
    // an error during the finish step leaves it incomplete: never finished, on either wire
    const failed = toEzioTorrent(status({ state: 'error', piecesDone: 320, progress: 1, complete: false }), now)
    expect(failed).toMatchObject({ state: 3, isFinished: false })
    expect(failed.progress).toBeLessThan(1)
    expect(toEzioTorrent(status({ state: 'seeding', piecesDone: 320, progress: 1 }), now)).toMatchObject({ state: 5, isFinished: true, progress: 1, numPieces: 320 })
  })

  it('keeps total while seeding and counts seconds since the last transfer', () => {
    const t = toEzioTorrent(status({ state: 'seeding', piecesDone: 320, totalDone: 5 * GiB, finishedAt: now - 61_000, lastUpload: now - 2_500 }), now)
    expect(t).toMatchObject({ total: 5 * GiB, totalDone: 5 * GiB, numPieces: 320, lastUpload: 2, lastDownload: -1, finishedTime: 61, seedingTime: 61, activeTime: 3600 })
    expect(t.downloadRate).toBe(1234)
    expect(t.uploadRate).toBe(11)
  })

  it('shows errors, done and the peer list on the blockswarm side', () => {
    const s = status({
      state: 'error',
      error: '/dev/loop7: EIO at offset 4096',
      peerList: [{ address: '127.0.0.1:6881', peerId: '2d', downloadRate: 5.5, uploadRate: 0, isSeed: true, choked: true, interested: false, direction: 'out' }],
      bans: [{ peer: '127.0.0.2:6881', reason: 'sent 3 pieces that failed the hash check' }],
    })
    expect(toTorrentInfo(s)).toMatchObject({ state: 'TORRENT_STATE_ERROR', error: '/dev/loop7: EIO at offset 4096', peers: [], bans: s.bans })
    expect(toTorrentInfo(s, { peers: true }).peers).toEqual([
      { address: '127.0.0.1:6881', peerId: '2d', client: '', downloadRate: 6, uploadRate: 0, isSeed: true, choked: true, interested: false },
    ])
    expect(toTorrentInfo(status({ paused: true, state: 'paused' }))).toMatchObject({ state: 'TORRENT_STATE_PAUSED', paused: true, done: false })
    const done = status({ paused: true, state: 'finished', piecesDone: 320, done: true, doneReason: 'seed ratio' })
    expect(toTorrentInfo(done)).toMatchObject({ state: 'TORRENT_STATE_FINISHED', paused: true, done: true, doneReason: 'seed ratio' })
    expect(toEzioTorrent(done, now)).toMatchObject({ state: 4, isPaused: true, isFinished: true })
  })
})
