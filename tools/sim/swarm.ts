/**
 * A discrete-event model of one torrent's swarm that runs the engine's own
 * policies: each node has the engine's PiecePicker (src/swarm/piece-picker.ts)
 * and PieceSet, chooses whom to unchoke with chooseUnchoked (choker.ts, under
 * the engine's default choking policy unless told otherwise) on the cadence
 * of choking.ts (CHOKE_TICKS), keeps its addresses in a PeerDialer
 * (peer-dialer.ts), measures rates with RateMeter, decides when it is done
 * seeding with doneReason (done-policy.ts), and a seeder under the fleet
 * policy shows its pieces in stripes with SeedStripes (seed-stripes.ts) — the
 * modules themselves, driven by a simulated clock. What the engine does around them with sockets is
 * modelled here, message by message, each message arriving one one-way delay
 * later: requests as piece-downloader.ts makes them (open pieces first, then
 * the picker's rarest new piece within the memory budget, then endgame
 * duplicates; from a seed, nothing another peer can send now; its depth,
 * refill and endgame numbers), choke/interest/have and connections as
 * peers.ts and choking.ts handle them (outgoing ones within peers.ts's
 * dialLimit), request and idle timeouts as peer-connection.ts's.
 *
 * Data moves in units of a few 16 KiB blocks (one request per unit): a unit
 * is on the wire from its sender's upload queue at the flow's max-min fair
 * rate (network.ts), then arrives one one-way delay later. A piece can be
 * served once all its units are in (no hashing or disk time is modelled).
 * Rates are recomputed for every flow at most once per `epoch` after the set
 * of flows changed; in between, a new flow gets what is left of its links.
 */
import { DEFAULT_CHOKING, DEFAULT_MEMORY } from '../../src/session/session.js'
import { chooseUnchoked, type ChokeCandidate, type ChokingPolicy } from '../../src/swarm/choker.js'
import { CHOKE_TICKS } from '../../src/swarm/choking.js'
import { type DonePolicy, doneReason } from '../../src/swarm/done-policy.js'
import { IDLE_TIMEOUT_MS, REQUEST_TIMEOUT_MS, STALL_TIMEOUT_MS } from '../../src/swarm/peer-connection.js'
import type { PeerAddress } from '../../src/swarm/peer-dialer.js'
import { DEPTH_MAX, DEPTH_MIN, DEPTH_SECONDS, ENDGAME_ASKERS, REFILL_MAX } from '../../src/swarm/piece-downloader.js'
import { CONNECT_TIMEOUT_MS, dialLimit, HAVE_HOLD_MIN_HOLDERS, HAVE_HOLD_MS } from '../../src/swarm/peers.js'
import { type Reveal, SeedStripes } from '../../src/swarm/seed-stripes.js'
import { UplinkGauge } from './uplink-gauge.js'
import { type TurnOrder, TurnGate } from './upload-turns.js'
import { requestToMove } from './request-move.js'
import { BLOCK_SIZE } from '../../src/swarm/wire-messages.js'
import { mulberry32 } from '../lib/random.js'
import { EventQueue, TimedHeap } from './events.js'
import { Network } from './network.js'
import { Active, Conn, type Half, SimNode, Tracker } from './parts.js'

/** torrent-swarm.ts TICK_MS (not exported there): one tick a second (dial, retune, choke rounds, done policy). */
const TICK_S = 1
/** bittorrent-tracker's client: peers asked for in an announce. */
const NUMWANT = 50

export interface NodeSpec {
  /** Uplink and downlink, payload bytes/s. */
  readonly up: number
  readonly down: number
  /** One-way delay of its access link, seconds (two nodes are latency + latency apart). */
  readonly latency?: number
  /** Seconds after the start at which it starts (announces, dials). */
  readonly joinAt?: number
  /** Seconds after the start at which it dies (not counted in the results). */
  readonly dieAt?: number
  /** Holds every piece from the start and seeds until the end. */
  readonly seeder?: boolean
}

export interface SimOptions {
  /** Torrent bytes and piece size. */
  readonly size: number
  readonly pieceSize: number
  /** Bytes per request (a multiple of 16 KiB); default: an eighth of a piece, at least one block. */
  readonly unit?: number
  readonly nodes: readonly NodeSpec[]
  /** Unchoke slots (--max-uploads) and connections (--max-connections) per node. */
  readonly slots: number
  readonly maxConnections: number
  /** Who gets the slots (--choking); default the engine's (DEFAULT_CHOKING). */
  readonly choking?: ChokingPolicy
  /** Seconds between announces (the tracker's interval). */
  readonly announceInterval?: number
  /** Done policy of the downloading nodes (seeders never stop); default seed-idle 5 s as bench:swarm. */
  readonly policy?: DonePolicy
  /** Piece buffers per node (--memory): at most memory / pieceSize pieces in progress. */
  readonly memory?: number
  /** How a node dies: 'silent' (power cut: peers find out by timeouts), 'reset' (its connections close at once). */
  readonly death?: 'silent' | 'reset'
  /** Rates are recomputed at most this often (seconds); default from the unit's transfer time. */
  readonly epoch?: number
  /**
   * Depth-first serving (upload-turns.ts): each node's uplink serves `slots`
   * peers at a time, a piece a turn, in `order`; `saturatedOnly`: one more
   * whenever the turns leave a tenth of the uplink idle. Absent: every
   * requester at once, sharing the uplink as TCP does.
   */
  readonly turns?: {
    readonly slots: number
    readonly order: TurnOrder
    readonly saturatedOnly?: boolean
    /** A turn holds its slot until the receiver announces the piece (HAVE), as an engine behind kernel send buffers must; while nobody waits, it runs on into the next piece. */
    readonly endOnHave?: boolean
    /** The saturation test against the node's measured peak (uplink-gauge.ts), not its true capacity. */
    readonly measured?: boolean
    /** Only the seeders' uplinks serve in turns. */
    readonly seederOnly?: boolean
  }
  /** A receiver with nothing new to ask of a peer moves to it the request that the peer with the longest backlog (over this many seconds at its rate) would serve last (request-move.ts); absent: never. */
  readonly moveBacklog?: number
  /** Seconds a HAVE to a peer that lacks the piece is held (peers.ts HAVE_HOLD_MS, the default: the longest it waits for another message to ride with). */
  readonly haveHold?: number
  /** Stop here (seconds) whatever is left. */
  readonly until?: number
  readonly seed?: number
}

export interface NodeResult {
  readonly seeder: boolean
  readonly joinAt: number
  /** When it died, if it did. */
  readonly diedAt?: number
  /** When it held every piece. */
  readonly finishedAt?: number
  /** When its done policy held and it left. */
  readonly leftAt?: number
  readonly pieces: number
  readonly downloaded: number
  readonly uploaded: number
  /** Bytes it received from seeders. */
  readonly fromSeeders: number
}

export interface SimResult {
  readonly nodes: NodeResult[]
  readonly size: number
  readonly pieceCount: number
  /** Bytes the seeders had sent when the last downloading node finished. */
  readonly seederBytesAtLast: number
  /** Simulated seconds at the end. */
  readonly end: number
  /** Actions and unit transfers processed, rate recomputations. */
  readonly events: number
  readonly reallocations: number
  /** Bytes that arrived and were not used (endgame duplicates, answers to cancelled requests). */
  readonly wasted: number
  /** The run stopped at `until` with nodes unfinished. */
  readonly timedOut: boolean
}

export function simulate(opts: SimOptions): SimResult {
  return new Swarm(opts).run()
}

class Swarm {
  private now = 0
  private readonly q = new EventQueue()
  private readonly transfers = new TimedHeap<Half>()
  private readonly net: Network
  private readonly nodes: SimNode[]
  private readonly tracker: Tracker
  private readonly pieceCount: number
  private readonly unitBlocks: number
  private readonly unitBytes: number
  private readonly unitShift: number
  private readonly maxActive: number
  private readonly epoch: number
  private readonly announceInterval: number
  private readonly policy: DonePolicy
  private readonly choking: ChokingPolicy
  private reallocAt = -Infinity
  private reallocPending = false
  private reallocations = 0
  private events = 0
  private wasted = 0
  /** Downloading nodes neither finished nor dead. */
  private pending = 0
  private seederBytesAtLast = 0
  private readonly clockMs = () => this.now * 1000

  constructor(private readonly opts: SimOptions) {
    if (!(opts.size > 0) || !(opts.pieceSize > 0) || opts.pieceSize % BLOCK_SIZE !== 0) {
      throw new Error(`size ${opts.size} and piece size ${opts.pieceSize}: both positive, the piece size a multiple of ${BLOCK_SIZE}`)
    }
    this.pieceCount = Math.ceil(opts.size / opts.pieceSize)
    const blocksPerPiece = opts.pieceSize / BLOCK_SIZE
    this.unitBlocks = Math.max(1, Math.min(blocksPerPiece, Math.round((opts.unit ?? opts.pieceSize / 8) / BLOCK_SIZE)))
    this.unitBytes = this.unitBlocks * BLOCK_SIZE
    this.unitShift = Math.ceil(Math.log2(Math.ceil(blocksPerPiece / this.unitBlocks) + 1))
    if (this.pieceCount >= 2 ** (31 - this.unitShift)) throw new Error(`${this.pieceCount} pieces of ${opts.pieceSize} bytes: too many for the simulator's unit keys`)
    this.maxActive = Math.max(1, Math.floor((opts.memory ?? DEFAULT_MEMORY) / opts.pieceSize))
    this.choking = opts.choking ?? DEFAULT_CHOKING
    this.announceInterval = opts.announceInterval ?? 5
    this.policy = opts.policy ?? { seedIdle: 5 }
    const rng = mulberry32(opts.seed ?? 1)
    const seedOf = () => Math.floor(rng() * 2 ** 32)
    this.nodes = opts.nodes.map((spec, i) => new SimNode(i, spec, this.pieceCount, seedOf(), this.clockMs))
    this.tracker = new Tracker(this.nodes.length, mulberry32(seedOf()))
    this.net = new Network(Float64Array.from(opts.nodes, (n) => n.up), Float64Array.from(opts.nodes, (n) => n.down))
    const rates = opts.nodes.map((n) => Math.min(n.up, n.down)).sort((a, b) => a - b)
    this.epoch = opts.epoch ?? Math.min(0.05, Math.max(0.0005, this.unitBytes / rates[rates.length >> 1] / 2))
  }

  run(): SimResult {
    const until = this.opts.until ?? Infinity
    for (const n of this.nodes) {
      if (n.seeder) {
        for (let i = 0; i < this.pieceCount; i++) {
          n.have.add(i)
          n.picker.setDone(i)
        }
        n.finishedAt = 0
        // the golden image's seeder under the fleet policy (torrent-swarm.ts): every piece out once before any twice
        if (this.choking === 'fleet') {
          n.stripes = new SeedStripes({ pieceCount: this.pieceCount, pieceBytes: (i) => this.pieceLength(i), held: (i) => n.picker.availability(i) > 0, now: this.clockMs })
        }
      } else {
        this.pending++
      }
      this.q.at(n.spec.joinAt ?? 0, () => this.join(n))
      if (n.spec.dieAt !== undefined) this.q.at(n.spec.dieAt, () => this.die(n))
    }
    if (!this.nodes.some((n) => n.seeder)) throw new Error('no seeder: nobody has the pieces')
    while (this.pending > 0) {
      const tq = this.q.peekTime()
      const tf = this.transfers.peekTime()
      const t = Math.min(tq, tf)
      if (t === Infinity || t > until) break
      this.now = t
      this.events++
      if (tf <= tq) this.sent(this.transfers.pop())
      else this.q.runNext()
    }
    return {
      nodes: this.nodes.map((n) => ({
        seeder: n.seeder,
        joinAt: n.spec.joinAt ?? 0,
        diedAt: n.diedAt,
        finishedAt: n.finishedAt,
        leftAt: n.leftAt,
        pieces: n.have.count,
        downloaded: n.downloaded,
        uploaded: n.uploaded,
        fromSeeders: n.fromSeeders,
      })),
      size: this.opts.size,
      pieceCount: this.pieceCount,
      seederBytesAtLast: this.seederBytesAtLast,
      end: this.now,
      events: this.events,
      reallocations: this.reallocations,
      wasted: this.wasted,
      timedOut: this.pending > 0,
    }
  }

  // ---------------------------------------------------------------------------
  // Sizes and messages

  private pieceLength(i: number): number {
    return i === this.pieceCount - 1 ? this.opts.size - i * this.opts.pieceSize : this.opts.pieceSize
  }

  private unitsOf(i: number): number {
    return Math.ceil(this.pieceLength(i) / this.unitBytes)
  }

  private unitLength(key: number): number {
    const i = key >>> this.unitShift
    const u = key & ((1 << this.unitShift) - 1)
    return Math.min(this.unitBytes, this.pieceLength(i) - u * this.unitBytes)
  }

  /** Deliver a message from `from` to `to` one one-way delay from now, if `to` is still alive then. */
  private send(from: SimNode, to: SimNode, what: () => void): void {
    this.q.at(this.now + from.latency + to.latency, what, to)
  }

  // ---------------------------------------------------------------------------
  // Life of a node

  private join(n: SimNode): void {
    if (!n.alive) return
    n.online = true
    this.tracker.add(n.id, n.complete)
    this.announce(n)
    this.tick(n)
  }

  private announce(n: SimNode): void {
    if (!n.online) return
    const peers = this.tracker.sample(n.id, NUMWANT)
    const incomplete = this.tracker.incomplete
    const host = this.nodes[0]
    this.q.at(this.now + 2 * (n.latency + host.latency), () => {
      if (!n.online) return
      n.trackerIncomplete = incomplete
      for (const p of peers) n.dialer.add(this.nodes[p].address, 'tracker')
      this.dial(n)
    })
    this.q.at(this.now + this.announceInterval, () => this.announce(n))
  }

  /** torrent-swarm.ts tick(): dial, retune depths, (request timeouts,) choke rounds, fill, the done policy. */
  private tick(n: SimNode): void {
    if (!n.online) return
    n.ticks++
    this.dial(n)
    if (n.stripes && !n.stripes.revealingAll) for (const [c, r] of n.stripes.tick((c) => c.into(n).has)) if (c.open) this.reveal(c, n, r)
    for (const c of n.conns) this.retune(c.into(n))
    this.requestTimeouts(n)
    if (n.ticks % CHOKE_TICKS === 1) this.chokeRound(n, n.ticks % (CHOKE_TICKS * 3) === 1)
    this.fillAll(n)
    this.checkDone(n)
    this.q.at(this.now + TICK_S, () => this.tick(n))
  }

  private checkDone(n: SimNode): void {
    if (n.seeder || !n.complete || !n.online) return
    let leechers = n.dialer.unfinished
    for (const c of n.conns) if (!c.into(n).known.complete) leechers++
    const why = doneReason(this.policy, {
      now: this.clockMs(),
      size: this.opts.size,
      uploaded: n.uploaded,
      seedingSince: n.seedingSince * 1000,
      lastUpload: n.lastUploadMs || undefined,
      seeds: n.seedsSeen.size,
      leechers,
      trackerLeechers: n.trackerIncomplete,
    })
    if (why === undefined) return
    n.online = false
    n.left = true
    n.leftAt = this.now
    this.tracker.remove(n.id, true)
    for (const c of [...n.conns]) this.close(c)
  }

  private die(n: SimNode): void {
    if (!n.alive) return
    const wasPending = !n.seeder && !n.complete
    n.alive = false
    n.online = false
    n.diedAt = this.now
    if (wasPending) this.pending--
    for (const c of n.conns) {
      this.stopFlow(c.into(n))
      this.stopFlow(c.outOf(n))
    }
    if (this.opts.death === 'reset') {
      for (const c of [...n.conns]) this.q.at(this.now + 2 * n.latency, () => this.close(c))
    } else {
      // nothing more comes from it: its peers' request timeouts, or at the latest the idle timeout, close the connections
      for (const c of n.conns) this.q.at(this.now + IDLE_TIMEOUT_MS / 1000, () => this.close(c))
    }
  }

  private becomeComplete(n: SimNode): void {
    n.finishedAt = this.now
    n.seedingSince = this.now
    this.pending--
    this.seederBytesAtLast = this.nodes.reduce((s, x) => s + (x.seeder ? x.uploaded : 0), 0)
    this.tracker.complete++
    for (const c of [...n.conns]) {
      const h = c.into(n)
      if (h.known.complete) this.close(c)
      else this.updateInterest(h)
    }
  }

  // ---------------------------------------------------------------------------
  // Connections (peers.ts)

  /** peers.ts dial(): within the connection limit, and outgoing connections (the dialer is a connection's `a`) within dialLimit, the rest kept for peers that dial us; after DIAL_SETTLE_MS, more if few dialed us. */
  private dial(n: SimNode): void {
    if (!n.online) return
    const max = this.opts.maxConnections
    let outgoing = 0
    for (const c of n.conns) if (c.a === n) outgoing++
    if (n.firstDialAt < 0) n.firstDialAt = this.now
    const limit = dialLimit(max, n.conns.length - outgoing, (this.now - n.firstDialAt) * 1000)
    const room = Math.min(max - n.conns.length, limit - outgoing) - n.connecting
    if (room <= 0) return
    const due = n.dialer.due(room, (a) => (n.complete && a.seed) || n.connectedTo(Number(a.host)))
    for (const a of due) {
      const b = this.nodes[Number(a.host)]
      n.connecting++
      const silent = !b.alive && this.opts.death !== 'reset'
      const wait = silent ? CONNECT_TIMEOUT_MS / 1000 : 2 * (n.latency + b.latency)
      this.q.at(this.now + wait, () => this.connected(n, b, a))
    }
  }

  /** A dial's answer: both sides online with room, or a failure (refused, timed out, too many connections). */
  private connected(n: SimNode, b: SimNode, a: PeerAddress): void {
    n.connecting--
    if (!n.alive) return
    const max = this.opts.maxConnections
    if (!n.online || !b.online || !b.alive || b.conns.length >= max || n.conns.length >= max || n.connectedTo(b.id)) {
      n.dialer.closed(a, n.online && !n.connectedTo(b.id))
      return
    }
    n.dialer.connected(a)
    const c = new Conn(n, b, this.pieceCount, this.clockMs)
    n.conns.push(c)
    b.conns.push(c)
    for (const x of [n, b]) {
      c.outOf(x).lastBlockAt = this.now
      if (x.stripes && !x.stripes.revealingAll) this.reveal(c, x, x.stripes.attach(c, c.into(x).has))
      else if (x.have.count > 0) this.tellPieces(c, x, this.held(x))
    }
    this.fillSlots(n)
    this.fillSlots(b)
  }

  private held(x: SimNode): number[] {
    const out: number[] = []
    for (let i = 0; i < this.pieceCount; i++) if (x.have.has(i)) out.push(i)
    return out
  }

  /** A bitfield or HAVEs from `x` over `c`: the other side learns these pieces one one-way delay from now. */
  private tellPieces(c: Conn, x: SimNode, pieces: readonly number[]): void {
    if (pieces.length === 0) return
    const h = c.outOf(x)
    this.send(x, h.to, () => {
      if (!c.open) return
      const gained = pieces.filter((i) => this.gained(h, i))
      this.afterPieces(h, gained)
    })
  }

  /** What a striping seeder (seed-stripes.ts) shows a peer: HAVEs, or everything (all but what it was shown already). */
  private reveal(c: Conn, x: SimNode, r: Reveal): void {
    if ('have' in r) return this.tellPieces(c, x, r.have)
    const except = r.except
    this.tellPieces(c, x, except ? this.held(x).filter((i) => !except.has(i)) : this.held(x))
  }

  /** peers.ts detach(), on both sides at once. */
  private close(c: Conn): void {
    if (!c.open) return
    c.open = false
    for (const x of [c.a, c.b]) {
      const at = x.conns.indexOf(c)
      if (at >= 0) x.conns.splice(at, 1)
      const h = c.into(x)
      this.dropAll(h)
      for (let i = 0; i < this.pieceCount; i++) if (h.known.has(i)) x.picker.peerLost(i)
      this.stopFlow(c.outOf(x))
      this.release(c.outOf(x))
      x.stripes?.detach(c)
      if (x.optimistic === c) x.optimistic = undefined
    }
    c.a.dialer.closed(c.b.address, false)
    for (const x of [c.a, c.b]) {
      if (!x.online) continue
      this.fillSlots(x)
      this.fillAll(x)
    }
  }

  // ---------------------------------------------------------------------------
  // What peers have, and interest (peers.ts)

  /** The receiver of `h` learns that its sender has piece `i`; false if it knew. */
  private gained(h: Half, i: number): boolean {
    if (h.known.has(i)) return false
    h.known.add(i)
    h.to.picker.peerHas(i)
    if (!h.to.have.has(i)) h.wanted++
    return true
  }

  private afterPieces(h: Half, gained: readonly number[]): void {
    const r = h.to
    if (r.gate && r.gate.turns > 0) {
      // the peer announced pieces: a turn held for one of them frees its slot
      const out = h.conn.outOf(r)
      for (const i of gained) r.gate.peerHas(out, i)
      this.admit(r)
    }
    const stripes = r.stripes
    if (stripes && !stripes.revealingAll) {
      for (const i of gained) {
        const more = stripes.peerHas(h.conn, i, h.has)
        if (more) this.reveal(h.conn, r, more)
      }
    }
    if (h.known.complete) {
      r.dialer.markSeed(h.from.address)
      r.seedsSeen.add(h.from.id)
      // a striping seeder shows a peer that completed the rest, and lets it close
      if (stripes && !stripes.revealingAll) return this.reveal(h.conn, r, stripes.peerComplete(h.conn))
      if (r.complete) return this.close(h.conn)
    }
    this.updateInterest(h)
    this.fill(h)
  }

  private updateInterest(h: Half): void {
    const want = h.wanted > 0 && !h.to.complete
    if (want === h.amInterested) return
    h.amInterested = want
    this.send(h.to, h.from, () => {
      if (!h.conn.open) return
      h.peerInterested = want
      // as choking.ts: losing interest frees the slot, not the unchoke; gaining it over a full set of slots chokes
      if (want && !h.amChoking && this.slotsUsed(h.from, h) >= this.opts.slots) this.choke(h)
      this.fillSlots(h.from)
    })
  }

  private pieceDone(r: SimNode, ap: Active): void {
    const i = ap.index
    r.active.delete(i)
    r.open.delete(ap)
    r.have.add(i)
    r.picker.setDone(i)
    const hold = r.picker.availability(i) >= HAVE_HOLD_MIN_HOLDERS ? (this.opts.haveHold ?? HAVE_HOLD_MS / 1000) : 0
    for (const c of r.conns) {
      const hin = c.into(r)
      const theirs = hin.known.has(i)
      if (theirs && --hin.wanted === 0) this.updateInterest(hin)
      // peers.ts havePiece(): a seed hears at once; a peer that lacks the piece within HAVE_HOLD_MS (the worst case: in
      // the engine it rides with the next request or block to that peer if one comes sooner); one that has it, at once here
      if (theirs || hin.known.complete || hold === 0) this.tellPieces(c, r, [i])
      else this.q.at(this.now + hold, () => c.open && this.tellPieces(c, r, [i]), r)
    }
    if (r.complete) this.becomeComplete(r)
    else if (r.memoryStarved) {
      r.memoryStarved = false
      this.fillAll(r)
    }
  }

  // ---------------------------------------------------------------------------
  // Choking (choking.ts's rounds around choker.ts's decision)

  private chokeRound(s: SimNode, rotate: boolean): void {
    const cands: ChokeCandidate<Conn>[] = s.conns.map((c) => {
      const out = c.outOf(s)
      const inn = c.into(s)
      return {
        peer: c,
        interested: out.peerInterested,
        isSeed: inn.known.complete,
        downloadRate: inn.meter.rate(),
        uploadRate: out.meter.rate(),
        unchoked: !out.amChoking,
        slotChangedAt: out.slotChangedAt,
      }
    })
    const d = chooseUnchoked(cands, { slots: this.opts.slots, policy: this.choking, seeding: s.complete, optimistic: s.optimistic, rotate, random: s.random })
    s.optimistic = d.optimistic
    for (const c of s.conns) {
      if (d.unchoke.has(c)) this.unchoke(c.outOf(s))
      else if (c.outOf(s).peerInterested) this.choke(c.outOf(s)) // an uninterested peer holds no slot and stays unchoked (choking.ts)
    }
  }

  /** Unchoked peers that want data (choking.ts's used slots). */
  private slotsUsed(s: SimNode, except?: Half): number {
    let used = 0
    for (const c of s.conns) {
      const h = c.outOf(s)
      if (h !== except && !h.amChoking && h.peerInterested && !c.into(s).known.complete) used++
    }
    return used
  }

  private fillSlots(s: SimNode): void {
    if (!s.online) return
    let used = this.slotsUsed(s)
    for (const c of s.conns) {
      if (used >= this.opts.slots) return
      const h = c.outOf(s)
      if (h.amChoking && h.peerInterested && !c.into(s).known.complete) {
        this.unchoke(h)
        used++
      }
    }
  }

  private unchoke(h: Half): void {
    if (!h.amChoking) return
    h.amChoking = false
    h.slotChangedAt = this.clockMs()
    this.send(h.from, h.to, () => {
      if (!h.conn.open || h.amChoking) return
      h.peerChoking = false
      this.fill(h)
    })
  }

  /** Choke: the sender voids what was asked (the unit on the wire included); the receiver, told, drops its requests. */
  private choke(h: Half): void {
    if (h.amChoking) return
    h.amChoking = true
    h.slotChangedAt = this.clockMs()
    h.queue = []
    h.qHead = 0
    this.stopFlow(h)
    this.release(h)
    this.send(h.from, h.to, () => {
      if (!h.conn.open || !h.amChoking) return
      h.peerChoking = true
      this.dropAll(h)
      this.scheduleFill(h.to)
    })
  }

  // ---------------------------------------------------------------------------
  // Requesting (piece-downloader.ts, per unit)

  private retune(h: Half): void {
    const want = Math.ceil((h.meter.rate() * DEPTH_SECONDS) / BLOCK_SIZE)
    h.depthBlocks = Math.max(DEPTH_MIN, Math.min(DEPTH_MAX, want))
  }

  private fillAll(r: SimNode): void {
    for (const c of r.conns) this.fill(c.into(r))
  }

  private scheduleFill(r: SimNode): void {
    if (r.fillScheduled) return
    r.fillScheduled = true
    this.q.at(this.now, () => {
      r.fillScheduled = false
      if (r.alive) this.fillAll(r)
    })
  }

  /** Keep the depth's worth of units requested, topped up in batches (an eighth of the depth, at most REFILL_MAX blocks). */
  private fill(h: Half): void {
    const r = h.to
    if (!r.online || r.complete || !h.conn.open || !h.amInterested || h.peerChoking) return
    const depthBlocks = h.snubbed ? 1 : h.depthBlocks
    const depth = Math.ceil(depthBlocks / this.unitBlocks)
    const n = h.outstanding.size
    const batch = Math.max(1, Math.ceil(Math.min(REFILL_MAX, depthBlocks >> 3) / this.unitBlocks))
    if (n > 0 && depth - n < batch) return
    let keys: number[] | undefined
    const fromSeed = h.known.complete
    while (h.outstanding.size < depth) {
      const key = this.nextUnit(r, h, fromSeed)
      if (key < 0) break
      if (h.outstanding.size === 0) h.lastBlockAt = this.now
      h.outstanding.add(key)
      ;(keys ??= []).push(key)
    }
    if (keys) {
      const sent = keys
      this.send(r, h.from, () => this.requested(h, sent))
    }
  }

  /**
   * piece-downloader.ts peerCanServe(): a connected peer of `r` that is not
   * a seed can send piece `i` now: it has it, does not choke `r` and is not
   * snubbed (a dead peer is, after its request timeout), its connection open.
   */
  private peerCanServe(r: SimNode, i: number): boolean {
    for (const c of r.conns) {
      const h = c.into(r)
      if (c.open && !h.known.complete && !h.peerChoking && !h.snubbed && h.known.has(i)) return true
    }
    return false
  }

  /**
   * The next unit to ask of `h`'s sender: open pieces first, then the
   * picker's rarest new piece (memory allowing), then endgame duplicates;
   * from a seed, no unit of a piece that a peer which is not a seed can send
   * now (piece-downloader.ts nextBlock).
   */
  private nextUnit(r: SimNode, h: Half, fromSeed: boolean): number {
    for (const ap of r.open) {
      if (!h.known.has(ap.index)) continue
      if (fromSeed && this.peerCanServe(r, ap.index)) continue
      const u = ap.nextMissing()
      if (u >= 0) return this.take(r, ap, u, h)
    }
    if (r.picker.missing > 0) {
      const index = r.picker.pick(h.has)
      if (index === undefined) return this.opts.moveBacklog !== undefined && !fromSeed ? this.moveUnit(r, h, this.opts.moveBacklog) : -1
      if (r.active.size >= this.maxActive) {
        r.memoryStarved = true
        return -1
      }
      const ap = new Active(index, this.unitsOf(index))
      r.active.set(index, ap)
      r.open.add(ap)
      r.picker.setActive(index)
      return this.take(r, ap, ap.nextMissing(), h)
    }
    for (const ap of r.active.values()) {
      if (!h.known.has(ap.index)) continue
      if (fromSeed && this.peerCanServe(r, ap.index)) continue
      const u = ap.nextDuplicate(h, ENDGAME_ASKERS)
      if (u >= 0) return this.take(r, ap, u, h)
    }
    return -1
  }

  /** `h` has nothing new for `r`: it takes over the unit that the most backed-up sender would send last (request-move.ts), cancelled there. */
  private moveUnit(r: SimNode, h: Half, minSeconds: number): number {
    const m = requestToMove<Half, number>(
      r.conns.map((c) => c.into(r)),
      h,
      (o) => ({
        requests: o.outstanding.size,
        backlogSeconds: (o.outstanding.size * this.unitBytes) / Math.max(o.meter.rate(), 1),
        lastMovable: () => {
          let key: number | undefined
          for (const k of o.outstanding) if (o.current !== k && h.known.has(k >>> this.unitShift)) key = k
          return key
        },
      }),
      minSeconds,
    )
    const ap = m && r.active.get(m.key >>> this.unitShift)
    if (!m || !ap) return -1
    const from = m.from
    const key = m.key
    from.outstanding.delete(key)
    ap.dropRequest(key & ((1 << this.unitShift) - 1), from)
    this.send(r, from.from, () => this.cancelled(from, key))
    return this.take(r, ap, key & ((1 << this.unitShift) - 1), h)
  }

  private take(r: SimNode, ap: Active, u: number, h: Half): number {
    ap.markRequested(u, h)
    if (ap.missing === 0) r.open.delete(ap)
    return (ap.index << this.unitShift) | u
  }

  /** The receiver gives up a request (choke, timeout, cancel, close): the unit is missing again unless someone else was asked. */
  private dropKey(h: Half, key: number): void {
    const ap = h.to.active.get(key >>> this.unitShift)
    if (ap?.dropRequest(key & ((1 << this.unitShift) - 1), h)) h.to.open.add(ap)
  }

  private dropAll(h: Half): void {
    if (h.outstanding.size === 0) return
    for (const key of h.outstanding) this.dropKey(h, key)
    h.outstanding.clear()
  }

  /**
   * peer-connection.ts's request timer, checked once a tick: no requested
   * unit for STALL_TIMEOUT_MS while unchoked → the oldest request is
   * dropped and the peer snubbed (every request taken back, one kept); no
   * unit from the snubbed peer for REQUEST_TIMEOUT_MS more closes the
   * connection.
   */
  private requestTimeouts(r: SimNode): void {
    for (const c of [...r.conns]) {
      const h = c.into(r)
      const timeoutMs = h.snubbed ? REQUEST_TIMEOUT_MS : STALL_TIMEOUT_MS
      if (h.outstanding.size === 0 || h.peerChoking || this.now - h.lastBlockAt < timeoutMs / 1000) continue
      h.lastBlockAt = this.now
      const [oldest] = h.outstanding
      h.outstanding.delete(oldest)
      this.dropKey(h, oldest)
      if (h.snubbed) {
        this.close(c)
        continue
      }
      h.snubbed = true
      for (const key of h.outstanding) this.send(r, h.from, () => this.cancelled(h, key))
      this.dropAll(h)
      this.fillAll(r)
    }
  }

  // ---------------------------------------------------------------------------
  // Serving (upload-server.ts) and the transfers

  /** Requests reach the sender; ignored if it chokes the receiver meanwhile. */
  private requested(h: Half, keys: number[]): void {
    if (!h.conn.open || h.amChoking || !h.to.alive) return
    for (const k of keys) h.queue.push(k)
    const stripes = h.from.stripes
    if (stripes && !stripes.revealingAll) {
      for (const k of keys) {
        const more = stripes.requested(h.conn, k >>> this.unitShift, h.conn.into(h.from).has)
        if (more) this.reveal(h.conn, h.from, more)
      }
    }
    if (h.current < 0) this.nextTransfer(h) // on the wire now, or (depth-first) waiting for a turn
  }

  /** Whether the node's uplink serves in turns (all nodes, or only seeders under `seederOnly`). */
  private gated(s: SimNode): boolean {
    const t = this.opts.turns
    return t !== undefined && (!t.seederOnly || s.seeder)
  }

  /** The node's depth-first gate (upload-turns.ts TurnGate), made on first use. */
  private gateOf(s: SimNode): TurnGate<Half> {
    if (s.gate) return s.gate
    const t = this.opts.turns!
    const measured = t.measured ? new UplinkGauge(this.clockMs) : undefined
    s.gauge = measured
    const trueSaturation = () => {
      let used = 0
      for (const c of s.conns) used += c.outOf(s).rate
      return used >= 0.9 * s.spec.up
    }
    const info = (h: Half, piece: number) => ({ sent: piece === h.lastPiece ? h.lastPieceSent : 0, copies: s.picker.availability(piece) })
    s.gate = new TurnGate<Half>({
      slots: t.slots,
      order: t.order,
      now: this.clockMs,
      saturated: t.saturatedOnly ? (measured ? () => measured.saturated() : trueSaturation) : undefined,
      holdUntilHave: t.endOnHave,
      info,
      // as the engine: bytes count once the receiver announced their piece (the engine's "sent" is only "in a kernel buffer")
      delivered: measured && t.endOnHave ? (b) => measured.add(b) : undefined,
    })
    return s.gate
  }

  /** TurnGate.admit(): the flows granted a turn go on the wire; the next deadline is scheduled. */
  private admit(s: SimNode): void {
    const g = s.gate
    if (!g || !s.online) return
    for (const h of g.admit()) if (h.current < 0) this.nextTransfer(h)
    const at = g.nextDeadline()
    if (at !== undefined && !(s.admitAt > this.now && s.admitAt <= at / 1000)) {
      s.admitAt = Math.max(this.now + 1e-6, at / 1000) // never at once: a deadline a rounding error short would come back forever
      this.q.at(s.admitAt, () => this.admit(s), s)
    }
  }

  /** The flow's requests are void (choke, close): it holds no turn and waits for none. */
  private release(h: Half): void {
    const g = h.from.gate
    if (!g) return
    g.forget(h)
    this.admit(h.from)
  }

  private cancelled(h: Half, key: number): void {
    if (!h.conn.open) return
    const i = h.queue.indexOf(key, h.qHead)
    if (i >= 0) h.queue.splice(i, 1)
  }

  /** Put the next queued unit on the wire, or end the flow when none is left. */
  private nextTransfer(h: Half): void {
    if (h.qHead >= h.queue.length) {
      this.stopFlow(h)
      if (this.gated(h.from)) {
        this.gateOf(h.from).idle(h)
        this.admit(h.from)
      }
      return
    }
    if (this.gated(h.from)) {
      const key = h.queue[h.qHead]
      if (!this.gateOf(h.from).mayServe(h, key >>> this.unitShift, this.unitLength(key))) {
        this.stopFlow(h)
        this.admit(h.from)
        return
      }
    }
    h.current = h.queue[h.qHead++]
    if (h.qHead > 256 && 2 * h.qHead > h.queue.length) {
      h.queue = h.queue.slice(h.qHead)
      h.qHead = 0
    }
    h.remaining = this.unitLength(h.current)
    h.lastT = this.now
    if (h.flowAt < 0) {
      this.net.add(h)
      this.ratesChanged()
    }
    this.schedule(h)
  }

  private stopFlow(h: Half): void {
    h.current = -1
    if (h.flowAt < 0) return
    this.net.remove(h)
    this.transfers.remove(h)
    this.ratesChanged()
  }

  private schedule(h: Half): void {
    if (h.rate > 0) this.transfers.set(h, this.now + Math.max(0, h.remaining) / h.rate)
    else this.transfers.remove(h)
  }

  /** The unit on the wire has left the sender: it arrives one one-way delay later. */
  private sent(h: Half): void {
    const key = h.current
    const len = this.unitLength(key)
    const s = h.from
    s.uploaded += len
    s.lastUploadMs = this.clockMs()
    h.remaining = 0
    const piece = key >>> this.unitShift
    if (piece !== h.lastPiece) {
      h.lastPiece = piece
      h.lastPieceSent = 0
    }
    h.lastPieceSent += len
    if (!this.opts.turns?.endOnHave) s.gauge?.add(len)
    this.send(s, h.to, () => this.arrived(h, key, len))
    this.nextTransfer(h)
    if (this.opts.turns?.saturatedOnly && !this.opts.turns.endOnHave && s.gate && s.gate.waiting > 0) this.admit(s)
  }

  private arrived(h: Half, key: number, len: number): void {
    const r = h.to
    if (!h.conn.open) return
    h.meter.add(len)
    r.downloaded += len
    if (h.from.seeder) r.fromSeeders += len
    if (!h.outstanding.delete(key)) {
      this.wasted += len
      return
    }
    h.lastBlockAt = this.now
    h.snubbed = false
    const ap = r.active.get(key >>> this.unitShift)
    const others = ap?.receive(key & ((1 << this.unitShift) - 1), h)
    if (!ap || !others) {
      this.wasted += len
      this.fill(h)
      return
    }
    for (const o of others) if (o.outstanding.delete(key)) this.send(r, o.from, () => this.cancelled(o, key))
    if (ap.complete) this.pieceDone(r, ap)
    this.fill(h)
  }

  /** The flows changed: recompute every rate, at most once an epoch. */
  private ratesChanged(): void {
    if (this.reallocPending) return
    this.reallocPending = true
    this.q.at(Math.max(this.now, this.reallocAt + this.epoch), () => this.reallocate())
  }

  private reallocate(): void {
    this.reallocPending = false
    this.reallocAt = this.now
    this.reallocations++
    const flows = this.net.flows
    for (const f of flows) {
      const h = f as Half
      h.remaining -= h.rate * (this.now - h.lastT)
      h.lastT = this.now
    }
    this.net.allocate()
    for (const f of flows) this.schedule(f as Half)
  }
}
