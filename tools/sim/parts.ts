/**
 * The simulator's state, one class per thing the engine has: a piece in
 * progress at a node (its units missing, requested or received: ActivePiece's
 * bookkeeping per unit), one direction of a connection (what each side knows,
 * wants and has asked, and the flow carrying it), a connection, a node (the
 * engine's PiecePicker, PieceSet and PeerDialer, and its counters), and the
 * tracker. What they do to each other is swarm.ts's.
 */
import type { UplinkGauge } from './uplink-gauge.js'
import type { TurnGate } from './upload-turns.js'
import { PeerDialer, type PeerAddress } from '../../src/swarm/peer-dialer.js'
import { DEPTH_MIN } from '../../src/swarm/piece-downloader.js'
import { PiecePicker } from '../../src/swarm/piece-picker.js'
import { PieceSet } from '../../src/swarm/piece-set.js'
import { RateMeter } from '../../src/swarm/rate-meter.js'
import type { SeedStripes } from '../../src/swarm/seed-stripes.js'
import { mulberry32 } from '../lib/random.js'
import type { Timed } from './events.js'
import type { Flow } from './network.js'
import type { NodeSpec } from './swarm.js'

const PORT = 6881

const NOBODY: readonly never[] = []
const U_MISSING = 0
const U_REQUESTED = 1
const U_RECEIVED = 2

/** A piece in progress at one node: for each unit, missing, requested (of whom) or received (ActivePiece's bookkeeping, per unit). */
export class Active {
  private readonly state: Uint8Array
  private readonly askers: (Half | Half[] | undefined)[]
  missing: number
  private received = 0
  private cursor = 0

  constructor(
    readonly index: number,
    readonly units: number,
  ) {
    this.state = new Uint8Array(units)
    this.askers = new Array(units)
    this.missing = units
  }

  get complete(): boolean {
    return this.received === this.units
  }

  nextMissing(): number {
    if (this.missing === 0) return -1
    while (this.cursor < this.units && this.state[this.cursor] !== U_MISSING) this.cursor++
    return this.cursor < this.units ? this.cursor : -1
  }

  nextDuplicate(h: Half, maxAskers: number): number {
    for (let u = 0; u < this.units; u++) {
      if (this.state[u] !== U_REQUESTED) continue
      const a = this.askers[u]
      const many = Array.isArray(a)
      if ((many ? a.length : 1) < maxAskers && !(many ? a.includes(h) : a === h)) return u
    }
    return -1
  }

  markRequested(u: number, h: Half): void {
    if (this.state[u] === U_MISSING) {
      this.state[u] = U_REQUESTED
      this.missing--
      this.askers[u] = h
      return
    }
    const a = this.askers[u]
    if (Array.isArray(a)) a.push(h)
    else if (a !== h) this.askers[u] = [a!, h]
  }

  /** `h` will not deliver unit `u`; true if nobody else is asked for it now. */
  dropRequest(u: number, h: Half): boolean {
    if (this.state[u] !== U_REQUESTED) return false
    const a = this.askers[u]
    if (Array.isArray(a)) {
      const i = a.indexOf(h)
      if (i < 0) return false
      a.splice(i, 1)
      if (a.length > 0) return false
    } else if (a !== h) {
      return false
    }
    this.state[u] = U_MISSING
    this.askers[u] = undefined
    this.missing++
    if (u < this.cursor) this.cursor = u
    return true
  }

  /** Unit `u` came from `h`: the others asked for it (to cancel), or undefined if it was already in. */
  receive(u: number, h: Half): readonly Half[] | undefined {
    if (this.state[u] === U_RECEIVED) return undefined
    if (this.state[u] === U_MISSING) this.missing--
    const a = this.askers[u]
    const others = Array.isArray(a) ? a.filter((x) => x !== h) : a === undefined || a === h ? NOBODY : [a]
    this.state[u] = U_RECEIVED
    this.askers[u] = undefined
    this.received++
    return others
  }
}

/**
 * One direction of a connection: `from` sends pieces to `to`. Holds what each
 * side knows and wants (the receiver's view of the sender's pieces, interest,
 * choking), the receiver's outstanding requests, the sender's queue of
 * requests it has received, and the flow carrying them.
 */
export class Half implements Flow, Timed {
  readonly src: number
  readonly dst: number
  rate = 0
  flowAt = -1
  due = Infinity
  heapAt = -1
  /** The receiver's view of the sender's pieces, and how many of them it lacks. */
  readonly known: PieceSet
  wanted = 0
  readonly has: (i: number) => boolean
  /** Receiver: interested in the sender; sender: its view of that. */
  amInterested = false
  peerInterested = false
  /** Sender: choking the receiver; receiver: its view of that. */
  amChoking = true
  peerChoking = true
  /** Sender: when (simulated ms) the receiver last got or lost its slot (choking.ts, for round-robin). */
  slotChangedAt?: number
  /** Receiver: unit keys requested and not yet received, in request order. */
  readonly outstanding = new Set<number>()
  /** Sender: requests received, served in order from `qHead`. */
  queue: number[] = []
  qHead = 0
  /** Sender: the unit on the wire (-1: none) and its bytes left at `lastT`. */
  current = -1
  remaining = 0
  lastT = 0
  /** Payload bytes/s over this direction (the receiver's download rate from the sender, the sender's upload rate to it). */
  readonly meter: RateMeter
  /** Receiver: request depth in blocks (retuned each tick), snubbed after a request timeout. */
  depthBlocks = DEPTH_MIN
  snubbed = false
  lastBlockAt = 0
  /** Sender, depth-first serving (upload-turns.ts): the piece it was last sent and how much of it. */
  lastPiece = -1
  lastPieceSent = 0

  constructor(
    readonly conn: Conn,
    readonly from: SimNode,
    readonly to: SimNode,
    pieceCount: number,
    clock: () => number,
  ) {
    this.src = from.id
    this.dst = to.id
    this.known = new PieceSet(pieceCount)
    this.has = (i) => this.known.has(i)
    this.meter = new RateMeter(clock)
  }
}

export class Conn {
  open = true
  readonly ab: Half
  readonly ba: Half

  constructor(
    readonly a: SimNode,
    readonly b: SimNode,
    pieceCount: number,
    clock: () => number,
  ) {
    this.ab = new Half(this, a, b, pieceCount, clock)
    this.ba = new Half(this, b, a, pieceCount, clock)
  }

  other(x: SimNode): SimNode {
    return x === this.a ? this.b : this.a
  }

  /** The direction in which `x` receives. */
  into(x: SimNode): Half {
    return x === this.a ? this.ba : this.ab
  }

  /** The direction in which `x` sends. */
  outOf(x: SimNode): Half {
    return x === this.a ? this.ab : this.ba
  }
}

export class SimNode {
  readonly have: PieceSet
  readonly picker: PiecePicker
  readonly random: () => number
  readonly dialer: PeerDialer
  readonly conns: Conn[] = []
  connecting = 0
  readonly active = new Map<number, Active>()
  /** Pieces in progress with units nobody has been asked for, oldest first. */
  readonly open = new Set<Active>()
  memoryStarved = false
  fillScheduled = false
  optimistic?: Conn
  /** A seeder's stripes (seed-stripes.ts), under the fleet policy. */
  stripes?: SeedStripes<Conn>
  ticks = 0
  /** When it first dialed, simulated seconds (peers.ts firstDialAt; -1: not yet). */
  firstDialAt = -1
  online = false
  alive = true
  left = false
  finishedAt?: number
  diedAt?: number
  leftAt?: number
  seedingSince = 0
  uploaded = 0
  downloaded = 0
  fromSeeders = 0
  /** Last upload, ms on the simulated clock (0: none). */
  lastUploadMs = 0
  readonly seedsSeen = new Set<number>()
  trackerIncomplete?: number
  /** Depth-first serving: which of its flows may send (upload-turns.ts), when it must next decide, its uplink's use against its recent peak (with a measured capacity). */
  gate?: TurnGate<Half>
  admitAt = -1
  gauge?: UplinkGauge
  readonly address: PeerAddress

  constructor(
    readonly id: number,
    readonly spec: NodeSpec,
    pieceCount: number,
    seed: number,
    clockMs: () => number,
  ) {
    this.have = new PieceSet(pieceCount)
    this.random = mulberry32(seed)
    this.picker = new PiecePicker(pieceCount, false, this.random)
    this.dialer = new PeerDialer(clockMs)
    this.address = { host: String(id), port: PORT }
  }

  get seeder(): boolean {
    return this.spec.seeder === true
  }

  get latency(): number {
    return this.spec.latency ?? 0.0005
  }

  get complete(): boolean {
    return this.have.complete
  }

  connectedTo(other: number): boolean {
    for (const c of this.conns) if (c.other(this).id === other) return true
    return false
  }
}

/** The tracker: who announced (and did not stop), random peers for each announce, seed and leecher counts. */
export class Tracker {
  private readonly members: number[] = []
  private readonly at: Int32Array
  complete = 0

  constructor(
    nodes: number,
    private readonly random: () => number,
  ) {
    this.at = new Int32Array(nodes).fill(-1)
  }

  get incomplete(): number {
    return this.members.length - this.complete
  }

  add(id: number, complete: boolean): void {
    if (this.at[id] >= 0) return
    this.at[id] = this.members.length
    this.members.push(id)
    if (complete) this.complete++
  }

  remove(id: number, complete: boolean): void {
    const i = this.at[id]
    if (i < 0) return
    const last = this.members.pop()!
    if (last !== id) {
      this.members[i] = last
      this.at[last] = i
    }
    this.at[id] = -1
    if (complete) this.complete--
  }

  /**
   * Up to `want` members other than `self`, at random and in random order
   * (as bittorrent-tracker's server and opentracker answer: the dialer dials
   * in that order, and members in join order would have every node dial the
   * first ones up).
   */
  sample(self: number, want: number): number[] {
    const m = this.members
    if (m.length - 1 <= want) {
      const all = m.filter((x) => x !== self)
      for (let i = all.length - 1; i > 0; i--) {
        const j = Math.floor(this.random() * (i + 1))
        ;[all[i], all[j]] = [all[j], all[i]]
      }
      return all
    }
    const out = new Set<number>()
    while (out.size < want) {
      const x = m[Math.floor(this.random() * m.length)]
      if (x !== self) out.add(x)
    }
    return [...out]
  }
}
