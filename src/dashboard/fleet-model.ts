/**
 * The fleet as the seeder sees it: every node that announced to its embedded
 * tracker or is connected to it, folded into one snapshot (FleetSnapshot, the
 * `/api/fleet` JSON). Pure: facts go in with their times, snapshots come out;
 * no timers, no sockets.
 *
 * Glossary (this module's words):
 * - node: a peer of the torrent other than this seeder, known by its peer id.
 * - seen: a node is seen when it announces, and at every observation while it
 *   is connected to the seeder.
 * - silent: not seen for two announce intervals (and it did not say goodbye).
 *   Without a tracker a complete node is never silent: once it is not
 *   connected it is done (nothing more would be heard of it).
 * - complete: the node holds every piece (its announce says left = 0, or the
 *   seeder saw every piece in its bitfield and HAVEs); "done" counts the
 *   complete nodes (state seeding or done).
 * - T*: the lower bound of the last finish,
 *   max(S/C_seed, S/C, N·S/(C_seed + N·C)).
 */

/** Where a node stands, in the order an operator reads them. */
export type NodeState = 'downloading' | 'finishing' | 'seeding' | 'done' | 'error' | 'silent'

export type AnnounceEvent = 'started' | 'completed' | 'stopped' | 'update'

/** One announce the embedded tracker answered. */
export interface AnnounceFact {
  /** 40 hex digits. */
  readonly peerId: string
  readonly ip: string
  readonly port: number
  readonly uploaded: number
  readonly downloaded: number
  readonly left: number
  readonly event: AnnounceEvent
  /** ms since the epoch. */
  readonly at: number
}

/** A peer connected to the seeder, with what its bitfield and HAVEs say it holds. */
export interface ConnectedFact {
  readonly peerId: string
  readonly address: string
  readonly bits: Uint8Array
  readonly count: number
}

/** A peer the seeder saw hold every piece, connected now or not (a seed closes its connection to another seed at once). */
export interface SeedFact {
  readonly peerId: string
  readonly address: string
  /** When it was first seen complete, ms since the epoch. */
  readonly at: number
}

/** What the seeder sees of itself and its peers at one moment. */
export interface Observation {
  readonly at: number
  /** The seeder's payload upload rate now, bytes/s, and its total. */
  readonly seederUploadRate: number
  readonly seederUploaded: number
  readonly peers: readonly ConnectedFact[]
  /** Every peer it ever saw complete (those that left too). */
  readonly seeds?: readonly SeedFact[]
}

export interface TorrentFacts {
  readonly infoHash: string
  readonly name: string
  /** S: bytes of the image the torrent covers. */
  readonly size: number
  readonly pieceCount: number
  readonly pieceLength: number
  /** The seeder's own peer id (its announces are not a node's). */
  readonly seederPeerId: string
  /** The seeder's --upload-rate, bytes/s (0: none). */
  readonly seederUploadLimit: number
  /** The announce interval the tracker asks for, seconds. */
  readonly announceInterval: number
  /** Whether announces reach this model (an embedded tracker); without, nodes are known by their connections only. */
  readonly tracker: boolean
}

export interface FleetNode {
  /** The node's peer id, 40 hex digits. */
  readonly id: string
  /** "ip:port" (its BitTorrent listen port). */
  readonly address: string
  readonly state: NodeState
  /** Why, for error and silent. */
  readonly reason?: string
  /** 0..1: verified bytes held / S. */
  readonly progress: number
  /** Verified bytes held. */
  readonly have: number
  /** Payload bytes/s it downloads (from its pieces over the last seconds) and uploads (between its last two announces). */
  readonly downloadRate: number
  readonly uploadRate: number
  /** Bytes it served to others and downloaded, as it last announced. */
  readonly uploaded: number
  readonly downloaded: number
  /** Connected to the seeder now. */
  readonly connected: boolean
  /** ms since the epoch; and seconds since then at the snapshot. */
  readonly lastSeen: number
  readonly lastSeenAgo: number
  /** When it became complete (ms since the epoch), when known. */
  readonly completedAt?: number
}

export interface FleetBound {
  /** T* in seconds, or null while a rate is unknown. */
  readonly seconds: number | null
  readonly size: number
  readonly nodes: number
  /** C_seed and C, bytes/s (0: not known yet). */
  readonly seederRate: number
  readonly nodeRate: number
  /** Where C_seed came from: the seeder's --upload-rate, or the highest upload rate it was seen to reach. */
  readonly seederRateFrom: 'upload-rate' | 'observed peak'
  /** C is the highest download rate a node was seen to reach. */
  readonly nodeRateFrom: 'observed peak'
}

export interface FleetTotals {
  readonly nodes: number
  /** Complete nodes (seeding or done). */
  readonly done: number
  readonly byState: Readonly<Record<NodeState, number>>
  /** Sum of the nodes' download and upload rates, bytes/s. */
  readonly downloadRate: number
  readonly uploadRate: number
  /** Share of the nodes' downloaded bytes that other nodes uploaded (0..1), null before any download. */
  readonly fromPeers: number | null
  /** Seconds until the last downloading node is complete at today's rates; null when a node makes no progress. */
  readonly eta: number | null
  /** Seconds since the first node was seen, and (once every node but the silent and failed ones is complete) until the last became complete. */
  readonly elapsed: number
  readonly lastFinish: number | null
  readonly seederUploaded: number
  readonly seederUploadRate: number
}

export interface FleetSample {
  /** ms since the epoch. */
  readonly t: number
  /** Bytes held by all nodes / (nodes × S), 0..1. */
  readonly progress: number
  readonly done: number
  readonly nodes: number
}

export interface FleetSnapshot {
  readonly version: 1
  readonly at: number
  readonly torrent: { readonly infoHash: string; readonly name: string; readonly size: number; readonly pieceCount: number; readonly pieceLength: number }
  readonly announceInterval: number
  readonly silentAfter: number
  readonly tracker: boolean
  readonly fleet: FleetTotals
  readonly bound: FleetBound
  readonly nodes: readonly FleetNode[]
  /**
   * For each piece, how many nodes hold it: a connected node by its bitfield
   * and HAVEs; a complete node (seeding or done, as `have` = S) holds every
   * piece, connected or not; a silent node counts for none (it may be gone),
   * nor does an incomplete node not connected (what it holds is not known).
   */
  readonly pieces: readonly number[]
  readonly history: readonly FleetSample[]
}

/** T* = max(S/C_seed, S/C, N·S/(C_seed + N·C)), seconds; null when a rate is unknown. */
export function lastFinishBound(size: number, seederRate: number, nodeRate: number, nodes: number): number | null {
  if (seederRate <= 0 || nodeRate <= 0 || nodes <= 0) return null
  return Math.max(size / seederRate, size / nodeRate, (nodes * size) / (seederRate + nodes * nodeRate))
}

/** Seconds a node's download rate is measured over. */
const RATE_WINDOW_MS = 5_000
/** Samples of fleet progress kept (older ones are thinned, so the chart spans the whole run). */
const HISTORY_MAX = 600

interface NodeRecord {
  readonly id: string
  address: string
  lastAnnounce?: AnnounceFact
  prevAnnounce?: AnnounceFact
  completedSeen: boolean
  incompleteSeen: boolean
  stopped?: AnnounceFact
  firstSeen: number
  lastSeen: number
  connected: boolean
  bits?: Uint8Array
  bitCount: number
  /** The seeder saw it hold every piece (SeedFact). */
  seenComplete: boolean
  /** (time, bytes held) over the rate window. */
  samples: { t: number; have: number }[]
  completedAt?: number
  peakDownloadRate: number
}

const ALL_STATES: readonly NodeState[] = ['downloading', 'finishing', 'seeding', 'done', 'error', 'silent']

export class FleetModel {
  private readonly nodes = new Map<string, NodeRecord>()
  private seederRate = 0
  private seederPeak = 0
  private seederUploaded = 0
  private history: FleetSample[] = []
  private lastSampleAt = 0

  constructor(private readonly torrent: TorrentFacts) {}

  /** Seconds without being seen after which a node is silent: two announce intervals. */
  get silentAfter(): number {
    return 2 * this.torrent.announceInterval
  }

  private record(id: string, address: string, at: number): NodeRecord {
    let r = this.nodes.get(id)
    if (!r) {
      r = { id, address, completedSeen: false, incompleteSeen: false, firstSeen: at, lastSeen: at, connected: false, bitCount: 0, seenComplete: false, samples: [], peakDownloadRate: 0 }
      this.nodes.set(id, r)
    }
    return r
  }

  /** An announce the tracker answered; the seeder's own and a malformed one are ignored. Returns whether it was a node's. */
  announce(a: AnnounceFact): boolean {
    const id = a.peerId.toLowerCase()
    if (id === this.torrent.seederPeerId.toLowerCase() || !/^[0-9a-f]{40}$/.test(id)) return false
    const address = `${a.ip.includes(':') ? `[${a.ip}]` : a.ip}:${a.port}`
    const r = this.record(id, address, a.at)
    r.address = address
    r.prevAnnounce = r.lastAnnounce
    r.lastAnnounce = a
    r.lastSeen = Math.max(r.lastSeen, a.at)
    if (a.left > 0) r.incompleteSeen = true
    if (a.event === 'completed') r.completedSeen = true
    if (a.event === 'stopped') r.stopped = a
    else r.stopped = undefined
    this.sampleHave(r, a.at)
    return true
  }

  /** What the seeder sees now: its own upload, and each connected peer's pieces. */
  observe(o: Observation): void {
    this.seederRate = o.seederUploadRate
    this.seederPeak = Math.max(this.seederPeak, o.seederUploadRate)
    this.seederUploaded = o.seederUploaded
    const connected = new Set<string>()
    for (const p of o.peers) {
      const id = p.peerId.toLowerCase()
      if (id === this.torrent.seederPeerId.toLowerCase()) continue
      connected.add(id)
      const r = this.record(id, p.address, o.at)
      if (r.lastAnnounce === undefined) r.address = p.address
      r.connected = true
      r.lastSeen = o.at
      r.bits = p.bits
      r.bitCount = p.count
      if (p.count < this.torrent.pieceCount) r.incompleteSeen = true
      this.sampleHave(r, o.at)
    }
    for (const r of this.nodes.values()) if (!connected.has(r.id)) r.connected = false
    for (const s of o.seeds ?? []) {
      const id = s.peerId.toLowerCase()
      if (id === this.torrent.seederPeerId.toLowerCase()) continue
      const r = this.record(id, s.address, s.at)
      if (r.seenComplete) continue
      r.seenComplete = true
      r.lastSeen = Math.max(r.lastSeen, s.at)
      // the swarm noted the moment; an observation only the second it looked
      r.completedAt = Math.min(r.completedAt ?? s.at, s.at)
      this.sampleHave(r, o.at)
    }
    if (o.at - this.lastSampleAt >= 1000) {
      this.lastSampleAt = o.at
      this.addSample(o.at)
    }
  }

  /** Verified bytes a node holds, by the freshest word: its bitfield while connected, else its last announce. */
  private have(r: NodeRecord): number {
    const fromBits = r.bits ? Math.min(this.torrent.size, r.bitCount * this.torrent.pieceLength) : 0
    const fromAnnounce = r.lastAnnounce ? Math.max(0, this.torrent.size - r.lastAnnounce.left) : 0
    if (r.seenComplete || r.bitCount === this.torrent.pieceCount) return this.torrent.size
    return Math.max(fromBits, fromAnnounce)
  }

  private sampleHave(r: NodeRecord, at: number): void {
    const have = this.have(r)
    r.samples.push({ t: at, have })
    while (r.samples.length > 2 && r.samples[1].t <= at - RATE_WINDOW_MS) r.samples.shift()
    r.peakDownloadRate = Math.max(r.peakDownloadRate, this.downloadRate(r))
    if (have >= this.torrent.size && r.completedAt === undefined) r.completedAt = at
  }

  private downloadRate(r: NodeRecord): number {
    const first = r.samples[0]
    const last = r.samples[r.samples.length - 1]
    if (!first || last.t - first.t < 500) return 0
    return Math.max(0, (last.have - first.have) / ((last.t - first.t) / 1000))
  }

  private stateOf(r: NodeRecord, now: number): { state: NodeState; reason?: string } {
    const complete = this.have(r) >= this.torrent.size
    if (r.stopped) {
      if (r.stopped.left === 0) return { state: 'done' }
      return { state: 'error', reason: `left the swarm unfinished (a stopped announce with ${Math.round((100 * this.have(r)) / Math.max(1, this.torrent.size))}% held)` }
    }
    // without a tracker nothing more is heard of a node once it leaves: complete, it is done (it closed its connection to the seeder as seeds do)
    if (!this.torrent.tracker && complete && !r.connected) return { state: 'done' }
    const ago = (now - r.lastSeen) / 1000
    if (!r.connected && ago > this.silentAfter) return { state: 'silent', reason: `not heard from for ${Math.round(ago)} s (two announce intervals are ${this.silentAfter} s)` }
    if (!complete) return { state: 'downloading' }
    // with a tracker, complete means a 'completed' announce (sent once the target is flushed); a node first heard from complete was complete before
    if (this.torrent.tracker && !r.completedSeen && r.incompleteSeen) return { state: 'finishing' }
    return { state: 'seeding' }
  }

  private node(r: NodeRecord, now: number): FleetNode {
    const { state, reason } = this.stateOf(r, now)
    const moving = state === 'downloading' || state === 'finishing' || state === 'seeding'
    const a = r.lastAnnounce
    const p = r.prevAnnounce
    const up = moving && a && p && a.at > p.at ? Math.max(0, (a.uploaded - p.uploaded) / ((a.at - p.at) / 1000)) : 0
    const have = this.have(r)
    return {
      id: r.id,
      address: r.address,
      state,
      reason,
      progress: this.torrent.size > 0 ? have / this.torrent.size : 1,
      have,
      downloadRate: state === 'downloading' ? this.downloadRate(r) : 0,
      uploadRate: up,
      uploaded: a?.uploaded ?? 0,
      downloaded: a?.downloaded ?? 0,
      connected: r.connected,
      lastSeen: r.lastSeen,
      lastSeenAgo: Math.max(0, (now - r.lastSeen) / 1000),
      completedAt: r.completedAt,
    }
  }

  private addSample(at: number): void {
    const nodes = [...this.nodes.values()]
    const held = nodes.reduce((s, r) => s + this.have(r), 0)
    const done = nodes.filter((r) => this.have(r) >= this.torrent.size).length
    this.history.push({ t: at, progress: nodes.length > 0 && this.torrent.size > 0 ? held / (nodes.length * this.torrent.size) : 0, done, nodes: nodes.length })
    if (this.history.length > HISTORY_MAX) this.history = this.history.filter((_, i) => i % 2 === 0 || i === this.history.length - 1)
  }

  snapshot(now: number): FleetSnapshot {
    const t = this.torrent
    const records = [...this.nodes.values()].sort((a, b) => a.firstSeen - b.firstSeen || a.id.localeCompare(b.id))
    const nodes = records.map((r) => this.node(r, now))
    const byState = Object.fromEntries(ALL_STATES.map((s) => [s, 0])) as Record<NodeState, number>
    for (const n of nodes) byState[n.state]++
    const done = byState.seeding + byState.done
    const downloaded = nodes.reduce((s, n) => s + n.downloaded, 0)
    const uploaded = nodes.reduce((s, n) => s + n.uploaded, 0)
    const active = nodes.filter((n) => n.state === 'downloading')
    let eta: number | null = 0
    for (const n of active) {
      if (n.downloadRate <= 0) {
        eta = null
        break
      }
      eta = Math.max(eta, (t.size - n.have) / n.downloadRate)
    }
    const firstSeen = records.length > 0 ? records[0].firstSeen : now
    // the last finish of the nodes still in the fleet (a silent or failed node will not finish)
    const completions = nodes.filter((n) => n.state !== 'silent' && n.state !== 'error').map((n) => n.completedAt)
    if (completions.length === 0) completions.push(undefined)
    const lastFinish = nodes.length > 0 && completions.every((c) => c !== undefined) ? (Math.max(...(completions as number[])) - firstSeen) / 1000 : null
    const seederRate = t.seederUploadLimit > 0 ? t.seederUploadLimit : this.seederPeak
    const nodeRate = records.reduce((m, r) => Math.max(m, r.peakDownloadRate), 0)
    let holdAll = 0
    const pieces = new Array<number>(t.pieceCount).fill(0)
    records.forEach((r, k) => {
      const n = nodes[k]
      if (n.state === 'silent') return
      if (n.have >= t.size) holdAll++
      else if (r.connected && r.bits) for (let i = 0; i < t.pieceCount; i++) if (r.bits[i >> 3] & (0x80 >> (i & 7))) pieces[i]++
    })
    if (holdAll > 0) for (let i = 0; i < t.pieceCount; i++) pieces[i] += holdAll
    return {
      version: 1,
      at: now,
      torrent: { infoHash: t.infoHash, name: t.name, size: t.size, pieceCount: t.pieceCount, pieceLength: t.pieceLength },
      announceInterval: t.announceInterval,
      silentAfter: this.silentAfter,
      tracker: t.tracker,
      fleet: {
        nodes: nodes.length,
        done,
        byState,
        downloadRate: nodes.reduce((s, n) => s + n.downloadRate, 0),
        uploadRate: nodes.reduce((s, n) => s + n.uploadRate, 0),
        fromPeers: downloaded > 0 ? Math.min(1, uploaded / downloaded) : null,
        eta,
        elapsed: Math.max(0, (now - firstSeen) / 1000),
        lastFinish,
        seederUploaded: this.seederUploaded,
        seederUploadRate: this.seederRate,
      },
      bound: {
        seconds: lastFinishBound(t.size, seederRate, nodeRate, nodes.length),
        size: t.size,
        nodes: nodes.length,
        seederRate,
        nodeRate,
        seederRateFrom: t.seederUploadLimit > 0 ? 'upload-rate' : 'observed peak',
        nodeRateFrom: 'observed peak',
      },
      nodes,
      pieces,
      history: this.history,
    }
  }
}
