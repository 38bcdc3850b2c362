/**
 * The fleet model (src/dashboard/fleet-model.ts) from made-up announces and
 * observations at chosen times: each node state (with and without a
 * tracker), the rates, the fleet's counts, T*, the pieces' holders (complete
 * nodes hold every piece, also after they left; silent ones none); the
 * dashboard's address rules; the terminal view's text.
 */
import { describe, expect, it } from 'vitest'
import { fleetApiUrl, fleetText, pieceStrip } from '../src/cli/fleet.js'
import { type AnnounceFact, FleetModel, lastFinishBound, type TorrentFacts } from '../src/dashboard/fleet-model.js'
import { checkDashboardHost, parseDashboardAddress } from '../src/dashboard/fleet-server.js'

const PIECE = 1000
const PIECES = 10
const S = PIECE * PIECES
const SEEDER = 'ff'.repeat(20)
const id = (n: number) => String(n).padStart(2, '0').repeat(20)
const T0 = 1_000_000

function facts(over: Partial<TorrentFacts> = {}): TorrentFacts {
  return { infoHash: 'ab'.repeat(20), name: 'golden', size: S, pieceCount: PIECES, pieceLength: PIECE, seederPeerId: SEEDER, seederUploadLimit: 0, announceInterval: 5, tracker: true, ...over }
}

function announce(n: number, at: number, over: Partial<AnnounceFact> = {}): AnnounceFact {
  return { peerId: id(n), ip: '127.0.0.1', port: 7000 + n, uploaded: 0, downloaded: 0, left: S, event: 'update', at, ...over }
}

/** A bitfield holding the first `count` pieces. */
function bits(count: number): { bits: Uint8Array; count: number } {
  const b = new Uint8Array(Math.ceil(PIECES / 8))
  for (let i = 0; i < count; i++) b[i >> 3] |= 0x80 >> (i & 7)
  return { bits: b, count }
}

describe('fleet model', () => {
  it('gives each node its state: downloading, finishing, seeding, done, error, silent', () => {
    const m = new FleetModel(facts())
    for (let n = 1; n <= 6; n++) m.announce(announce(n, T0, { event: 'started' }))
    // 1 downloads; 2 holds everything but has not announced 'completed' (finishing); 3 announced it (seeding)
    m.announce(announce(3, T0 + 1000, { left: 0, event: 'completed' }))
    // 4 left finished, 5 left unfinished, 6 went quiet
    m.announce(announce(4, T0 + 1000, { left: 0, event: 'completed' }))
    m.announce(announce(4, T0 + 2000, { left: 0, event: 'stopped' }))
    m.announce(announce(5, T0 + 2000, { left: S / 2, event: 'stopped' }))
    const at = T0 + 11_000
    m.observe({ at, seederUploadRate: 0, seederUploaded: 0, peers: [1, 2, 3].map((n) => ({ peerId: id(n), address: `127.0.0.1:${7000 + n}`, ...bits(n === 1 ? 3 : PIECES) })) })
    const snap = m.snapshot(at)
    const state = Object.fromEntries(snap.nodes.map((n) => [n.id, n.state]))
    expect(state).toEqual({ [id(1)]: 'downloading', [id(2)]: 'finishing', [id(3)]: 'seeding', [id(4)]: 'done', [id(5)]: 'error', [id(6)]: 'silent' })
    expect(snap.silentAfter).toBe(10)
    expect(snap.nodes.find((n) => n.id === id(6))!.reason).toMatch(/not heard from for 11 s/)
    expect(snap.nodes.find((n) => n.id === id(5))!.reason).toMatch(/unfinished.*50%/)
    expect(snap.fleet).toMatchObject({ nodes: 6, done: 2, byState: { downloading: 1, finishing: 1, seeding: 1, done: 1, error: 1, silent: 1 } })
    // a node seen 10 s ago (= two intervals) is not silent yet
    expect(m.snapshot(T0 + 10_000).nodes.find((n) => n.id === id(6))!.state).toBe('downloading')
  })

  it('ignores the seeder\'s own announces and announces with a malformed peer id', () => {
    const m = new FleetModel(facts())
    expect(m.announce(announce(1, T0, { peerId: SEEDER, left: 0 }))).toBe(false)
    expect(m.announce(announce(1, T0, { peerId: 'xyz' }))).toBe(false)
    expect(m.announce(announce(1, T0))).toBe(true)
    expect(m.snapshot(T0).nodes.map((n) => n.id)).toEqual([id(1)])
  })

  it('measures down rates from pieces gained, up rates from announces, and the fleet totals, ETA and share from peers', () => {
    const m = new FleetModel(facts())
    m.announce(announce(1, T0, { event: 'started' }))
    m.announce(announce(2, T0, { event: 'started' }))
    // over 2 s node 1 gains 4 pieces (2000 B/s), node 2 gains 2 (1000 B/s)
    for (const [dt, a, b] of [[0, 0, 0], [1000, 2, 1], [2000, 4, 2]]) {
      m.observe({ at: T0 + dt, seederUploadRate: 3000, seederUploaded: 0, peers: [{ peerId: id(1), address: 'a', ...bits(a) }, { peerId: id(2), address: 'b', ...bits(b) }] })
    }
    m.announce(announce(1, T0 + 2000, { uploaded: 2000, downloaded: 4000, left: S - 4 * PIECE }))
    m.announce(announce(2, T0 + 2000, { uploaded: 0, downloaded: 2000, left: S - 2 * PIECE }))
    const snap = m.snapshot(T0 + 2000)
    const [n1, n2] = snap.nodes
    expect(n1.downloadRate).toBeCloseTo(2000)
    expect(n2.downloadRate).toBeCloseTo(1000)
    expect(n1.uploadRate).toBeCloseTo(1000)
    expect(n1.uploaded).toBe(2000)
    expect(n1.progress).toBeCloseTo(0.4)
    expect(snap.fleet.downloadRate).toBeCloseTo(3000)
    expect(snap.fleet.uploadRate).toBeCloseTo(1000)
    // 2000 of the 6000 bytes downloaded came from another node
    expect(snap.fleet.fromPeers).toBeCloseTo(1 / 3)
    // node 2 is the last: 8000 bytes left at 1000 B/s
    expect(snap.fleet.eta).toBeCloseTo(8)
    expect(snap.pieces).toEqual([2, 2, 1, 1, 0, 0, 0, 0, 0, 0])
    // T* from the observed peaks: C_seed 3000, C 2000, N 2 → max(10000/3000, 10000/2000, 20000/7000) = 5 s
    expect(snap.bound).toMatchObject({ seederRate: 3000, nodeRate: 2000, nodes: 2, seederRateFrom: 'observed peak' })
    expect(snap.bound.seconds).toBeCloseTo(5)
    expect(snap.history.length).toBe(3)
    expect(snap.history.at(-1)!.progress).toBeCloseTo(0.3)
  })

  it('a node that makes no progress leaves the ETA unknown; --upload-rate is C_seed when given', () => {
    const m = new FleetModel(facts({ seederUploadLimit: 500 }))
    m.announce(announce(1, T0, { event: 'started' }))
    m.observe({ at: T0 + 1000, seederUploadRate: 400, seederUploaded: 0, peers: [{ peerId: id(1), address: 'a', ...bits(0) }] })
    const snap = m.snapshot(T0 + 1000)
    expect(snap.fleet.eta).toBeNull()
    expect(snap.bound).toMatchObject({ seederRate: 500, seederRateFrom: 'upload-rate', seconds: null })
  })

  it('the piece strip counts a complete node as holding every piece, connected or not, and a silent or failed one for none', () => {
    const m = new FleetModel(facts())
    for (let n = 1; n <= 5; n++) m.announce(announce(n, T0, { event: 'started' }))
    // 2 finished and left (done); 3 finished and still announces, not connected (seeding); 4 finished and then went quiet (silent)
    for (const n of [2, 3, 4]) m.announce(announce(n, T0 + 1000, { left: 0, event: 'completed' }))
    m.announce(announce(2, T0 + 2000, { left: 0, event: 'stopped' }))
    m.announce(announce(3, T0 + 10_000, { left: 0 }))
    // 5 held 6 pieces while connected, then left unfinished (error)
    m.observe({ at: T0 + 1000, seederUploadRate: 0, seederUploaded: 0, peers: [{ peerId: id(5), address: 'e', ...bits(6) }] })
    m.announce(announce(5, T0 + 2000, { left: S - 6 * PIECE, event: 'stopped' }))
    m.observe({ at: T0 + 11_000, seederUploadRate: 0, seederUploaded: 0, peers: [{ peerId: id(1), address: 'a', ...bits(3) }] })
    // node 1's three pieces, and all of them on nodes 2, 3 and 4 (heard from 10 s ago: not silent yet)
    let snap = m.snapshot(T0 + 11_000)
    expect(snap.nodes.map((n) => n.state)).toEqual(['downloading', 'done', 'seeding', 'seeding', 'error'])
    expect(snap.pieces).toEqual([4, 4, 4, 3, 3, 3, 3, 3, 3, 3])
    // once 4 is silent it counts for none
    snap = m.snapshot(T0 + 12_000)
    expect(snap.nodes.map((n) => n.state)).toEqual(['downloading', 'done', 'seeding', 'silent', 'error'])
    expect(snap.pieces).toEqual([3, 3, 3, 2, 2, 2, 2, 2, 2, 2])
  })

  it('without a tracker: a node seen complete is done once it leaves, never silent, also when it finished and left between two observations', () => {
    const m = new FleetModel(facts({ tracker: false }))
    const peer = (n: number, count: number) => ({ peerId: id(n), address: `127.0.0.1:${7000 + n}`, ...bits(count) })
    m.observe({ at: T0, seederUploadRate: 0, seederUploaded: 0, peers: [peer(1, 2), peer(2, 5), peer(3, 1)] })
    // 1 finishes while connected; 2 finishes and leaves before the next look (a seed closes its connection to the seeder at once); 3 leaves unfinished
    m.observe({ at: T0 + 1000, seederUploadRate: 0, seederUploaded: 0, peers: [peer(1, PIECES)], seeds: [{ peerId: id(1), address: '127.0.0.1:7001', at: T0 + 900 }, { peerId: id(2), address: '127.0.0.1:7002', at: T0 + 600 }] })
    let snap = m.snapshot(T0 + 1000)
    expect(snap.nodes.map((n) => [n.state, n.progress, n.connected])).toEqual([['seeding', 1, true], ['done', 1, false], ['downloading', 0.1, false]])
    expect(snap.nodes[1].completedAt).toBe(T0 + 600)
    // 1 and 2 hold every piece; what 3 holds now is not known (it is not connected)
    expect(snap.pieces).toEqual(new Array(PIECES).fill(2))
    // 1 leaves too; long after (past two announce intervals) both are still done and hold everything, 3 is silent and holds nothing here
    const seeds = [{ peerId: id(1), address: '127.0.0.1:7001', at: T0 + 900 }, { peerId: id(2), address: '127.0.0.1:7002', at: T0 + 600 }]
    m.observe({ at: T0 + 2000, seederUploadRate: 0, seederUploaded: 0, peers: [], seeds })
    const later = T0 + 2000 + (snap.silentAfter + 1) * 1000
    m.observe({ at: later, seederUploadRate: 0, seederUploaded: 0, peers: [], seeds })
    snap = m.snapshot(later)
    expect(snap.nodes.map((n) => n.state)).toEqual(['done', 'done', 'silent'])
    expect(snap.fleet).toMatchObject({ nodes: 3, done: 2 })
    expect(snap.fleet.lastFinish).toBeCloseTo(0.9)
    expect(snap.pieces).toEqual(new Array(PIECES).fill(2))
    // the seeder's own id among the seeds is not a node
    m.observe({ at: later, seederUploadRate: 0, seederUploaded: 0, peers: [], seeds: [...seeds, { peerId: SEEDER, address: 'x', at: later }] })
    expect(m.snapshot(later).fleet.nodes).toBe(3)
  })

  it('T* = max(S/C_seed, S/C, N·S/(C_seed + N·C))', () => {
    expect(lastFinishBound(100, 10, 50, 1)).toBe(10)
    expect(lastFinishBound(100, 50, 10, 1)).toBe(10)
    expect(lastFinishBound(100, 10, 10, 100)).toBe(10)
    expect(lastFinishBound(1000, 100, 10, 1)).toBe(100)
    expect(lastFinishBound(100, 0, 10, 3)).toBeNull()
  })
})

describe('dashboard address rules', () => {
  it('a bare port is loopback; other addresses keep their host', () => {
    expect(parseDashboardAddress('8080')).toEqual({ host: '127.0.0.1', port: 8080 })
    expect(parseDashboardAddress('0.0.0.0:9000')).toEqual({ host: '0.0.0.0', port: 9000 })
    expect(parseDashboardAddress('[::1]:9000')).toEqual({ host: '::1', port: 9000 })
    expect(() => parseDashboardAddress('here')).toThrow(/--dashboard "here" is not \[ADDR:\]PORT/)
  })

  it('off loopback: refused without TLS or token, a token alone only with --insecure', () => {
    expect(checkDashboardHost('127.0.0.1', {})).toBeUndefined()
    expect(() => checkDashboardHost('0.0.0.0', {})).toThrow(/refusing to serve the dashboard on 0.0.0.0 without TLS or a token/)
    expect(() => checkDashboardHost('0.0.0.0', { token: 't' })).toThrow(/plaintext/)
    expect(checkDashboardHost('0.0.0.0', { token: 't', insecure: true })).toMatch(/plaintext/)
    expect(checkDashboardHost('0.0.0.0', { insecure: true })).toMatch(/open to anyone/)
    expect(checkDashboardHost('0.0.0.0', { tls: { cert: Buffer.from(''), key: Buffer.from('') }, token: 't' })).toBeUndefined()
  })
})

describe('blockswarm fleet: the terminal view', () => {
  it('prints the fleet line, T*, a row per node and who holds each piece', () => {
    const m = new FleetModel(facts())
    m.announce(announce(1, T0, { event: 'started' }))
    m.announce(announce(2, T0, { left: 0, event: 'stopped' }))
    m.observe({ at: T0, seederUploadRate: 0, seederUploaded: 0, peers: [{ peerId: id(1), address: '127.0.0.1:7001', ...bits(4) }] })
    const text = fleetText(m.snapshot(T0), 60)
    expect(text).toMatch(/^golden \(9\.77 KiB, 10 pieces, (ab){20}\)$/m)
    expect(text).toMatch(/^nodes done 1\/2 \(1 downloading, 1 done\)/m)
    expect(text).toMatch(/^T\* - /m)
    expect(text).toMatch(/^127\.0\.0\.1:7001 +\[########-+\] +40\.0% +downloading/m)
    expect(text).toMatch(/^127\.0\.0\.1:7002 +\[#{20}\] 100\.0% +done/m)
    // node 2 is done: it holds every piece
    expect(text).toMatch(/^pieces {2}2222111111$/m)
    expect(pieceStrip([3, 1, 12, 12], 2)).toBe('1+')
    expect(fleetApiUrl('127.0.0.1:8080').href).toBe('http://127.0.0.1:8080/api/fleet')
    expect(fleetApiUrl('https://h:1/?torrent=ab&token=x').href).toBe('https://h:1/api/fleet?torrent=ab&token=x')
  })
})
