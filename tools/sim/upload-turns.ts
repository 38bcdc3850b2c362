/**
 * Depth-first serving, the candidate engine policy the simulator tries
 * (`npm run sim -- --turns N`): which of the peers waiting for a node's
 * uplink is served now. A node re-serves only verified pieces, so a fresh
 * piece spreads as fast as its copies complete; an uplink split among every
 * peer asking makes each copy take many piece-times before its receiver can
 * pass it on. Serving a few peers at a time, a piece per turn, was to make
 * each copy forwardable after about one piece-time. Written as
 * upload-server.ts would apply it (TurnGate: asked before each block, a
 * monotonic ms clock; a version of it was wired into upload-server.ts and
 * taken out again); the engine does not use it: it helps in the simulator
 * only with a saturation test the engine cannot make (README, "Depth-first
 * serving"), so it stays here.
 *
 * A turn is one peer's requests for one piece, in its queue's order: it ends
 * when the next request is for another piece, when the queue is empty, or
 * after TURN_MAX_BYTES (a 16 MiB piece on a slow uplink must not hold the
 * others for long). Then the free turns go to the waiting peers: those
 * waiting longest first ('age'), those we sent the most of their next piece
 * already ('completion'), or those whose next piece the fewest of our peers
 * have ('rarest'), ties by age. A peer never waits more than
 * MAX_TURN_WAIT_MS: one waiting that long gets a turn even when every turn
 * is taken (far from the 30 s request timeout).
 *
 * Behind kernel send buffers, "sent" means "in the buffer", so an engine
 * would have to hold a turn's slot until the receiver announces the piece
 * (`holdUntilHave`, at most MAX_TURN_WAIT_MS), and could judge saturation
 * only from what it measured (uplink-gauge.ts), not from its line rate.
 */

/** While peers wait and a saturation test is given, it is asked again at least this often (ms). */
export const SATURATION_RECHECK_MS = 100
/** A turn ends after this many bytes even within one piece. */
export const TURN_MAX_BYTES = 4 * 1024 * 1024
/** No peer with queued requests waits longer than this for a turn. */
export const MAX_TURN_WAIT_MS = 2000

export type TurnOrder = 'age' | 'completion' | 'rarest'
export const TURN_ORDERS: readonly TurnOrder[] = ['age', 'completion', 'rarest']

export interface TurnCandidate<P> {
  readonly peer: P
  /** When it started waiting (its first request while it had no turn, or the end of its last turn), ms on a monotonic clock. */
  readonly waitingSince: number
  /** Bytes of its next request's piece we have sent it already. */
  readonly sent: number
  /** How many of our peers have that piece (the picker's availability). */
  readonly copies?: number
}

export interface TurnOptions {
  /** Turns free now (the cap less the turns held). */
  readonly free: number
  readonly order: TurnOrder
  readonly now: number
  /** Default MAX_TURN_WAIT_MS. */
  readonly maxWaitMs?: number
}

/** The waiting peers to give a turn now, in the order to start them: every one waiting `maxWaitMs` or more, then as many as `free` allows. */
export function grantTurns<P>(waiting: readonly TurnCandidate<P>[], opts: TurnOptions): P[] {
  if (waiting.length === 0) return []
  const maxWait = opts.maxWaitMs ?? MAX_TURN_WAIT_MS
  const overdue = (c: TurnCandidate<P>) => opts.now - c.waitingSince >= maxWait
  const key = (c: TurnCandidate<P>) => (opts.order === 'completion' ? -c.sent : opts.order === 'rarest' ? (c.copies ?? 0) : 0)
  const rank = (a: TurnCandidate<P>, b: TurnCandidate<P>) => key(a) - key(b) || a.waitingSince - b.waitingSince
  const sorted = [...waiting].sort((a, b) => Number(overdue(b)) - Number(overdue(a)) || rank(a, b))
  const out: P[] = []
  for (const c of sorted) {
    if (out.length >= opts.free && !overdue(c)) break
    out.push(c.peer)
  }
  return out
}

/** Whether a turn that has sent `bytes` of piece `piece` ends before the request for `next` (undefined: the queue is empty). */
export function turnEnds(piece: number, bytes: number, next: number | undefined, maxBytes = TURN_MAX_BYTES): boolean {
  return next === undefined || next !== piece || bytes >= maxBytes
}

/** What the gate needs to know of a waiting peer beyond its wait: for the 'completion' and 'rarest' orders. */
export type TurnInfo<P> = (peer: P, piece: number) => { readonly sent: number; readonly copies?: number }

export interface TurnGateOptions<P> {
  /** Turns at a time (a draining turn counts). */
  readonly slots: number
  readonly order?: TurnOrder
  /** A monotonic ms clock. */
  readonly now: () => number
  /** One more turn whenever this says the uplink is not saturated (uplink-gauge.ts); absent: `slots` strictly. */
  readonly saturated?: () => boolean
  /**
   * A turn keeps its slot after its piece is all sent until the peer
   * announces the piece (HAVE), at most maxWaitMs: what an engine must do
   * behind kernel send buffers, where "sent" only means "in the buffer".
   * While nobody waits, a turn runs on into the peer's next piece.
   */
  readonly holdUntilHave?: boolean
  readonly maxWaitMs?: number
  readonly info?: TurnInfo<P>
  /** A draining turn's piece was announced: its bytes are known delivered (what uplink-gauge.ts should count: "sent" bytes only went into a buffer). */
  readonly delivered?: (bytes: number) => void
}

interface TurnState {
  /** The piece of its turn, and bytes sent in the turn. */
  turn?: { piece: number; bytes: number }
  /** A turn whose piece is all sent, holding its slot until HAVE (piece, since). */
  drain?: { piece: number; since: number; bytes: number }
  /** Waiting for a turn for this piece, since. */
  wait?: { piece: number; since: number }
}

/**
 * Depth-first serving for one uplink: which of the peers with requests may
 * send now. The caller asks `mayServe` before each block; a peer refused is
 * waiting, and is named by a later `admit()` (the caller resumes it then).
 * The caller runs `admit()` after `idle`, `peerHas`, `forget`, and at
 * `nextDeadline()`.
 */
export class TurnGate<P> {
  private readonly peers = new Map<P, TurnState>()
  private waiters = 0
  private held = 0
  private readonly maxWait: number

  constructor(private readonly o: TurnGateOptions<P>) {
    this.maxWait = o.maxWaitMs ?? MAX_TURN_WAIT_MS
  }

  private state(p: P): TurnState {
    let s = this.peers.get(p)
    if (!s) this.peers.set(p, (s = {}))
    return s
  }

  /** Peers waiting for a turn. */
  get waiting(): number {
    return this.waiters
  }

  /** Turns held now, draining ones included. */
  get turns(): number {
    return this.held
  }

  /** Whether `p` may send `bytes` of piece `piece` now; if not, it waits for a turn. */
  mayServe(p: P, piece: number, bytes: number): boolean {
    const s = this.state(p)
    const t = s.turn
    if (t) {
      if (!turnEnds(t.piece, t.bytes, piece)) {
        t.bytes += bytes
        return true
      }
      if (this.waiters === 0 && this.o.holdUntilHave) {
        s.turn = { piece, bytes }
        return true
      }
      this.endTurn(s)
    }
    if (s.wait) return false
    if (this.waiters === 0 && (this.held < this.o.slots || this.o.saturated?.() === false)) {
      s.turn = { piece, bytes }
      this.held++
      return true
    }
    s.wait = { piece, since: this.o.now() }
    this.waiters++
    return false
  }

  /** `p` has nothing more to send now (its queue is empty): its turn ends. */
  idle(p: P): void {
    const s = this.peers.get(p)
    if (s?.turn) this.endTurn(s)
  }

  private endTurn(s: TurnState): void {
    const t = s.turn!
    s.turn = undefined
    if (this.o.holdUntilHave && t.bytes > 0 && !s.drain) {
      s.drain = { piece: t.piece, since: this.o.now(), bytes: t.bytes }
      return // the slot stays held
    }
    this.held--
  }

  /** `p` announced `piece`: a turn draining for it frees its slot. */
  peerHas(p: P, piece: number): void {
    const s = this.peers.get(p)
    const d = s?.drain
    if (d?.piece !== piece) return
    s!.drain = undefined
    this.held--
    this.o.delivered?.(d.bytes)
  }

  /** `p` is gone, choked, or cancelled all it asked: no turn, no wait. */
  forget(p: P): void {
    const s = this.peers.get(p)
    if (!s) return
    if (s.turn) this.held--
    if (s.drain) this.held--
    if (s.wait) this.waiters--
    this.peers.delete(p)
  }

  /** The waiting peers that get a turn now (their `mayServe` for the piece they waited with now says yes). */
  admit(): P[] {
    const now = this.o.now()
    for (const s of this.peers.values()) {
      if (s.drain && now - s.drain.since >= this.maxWait) {
        s.drain = undefined // no HAVE came (a client that does not send one to a seed): the slot is not held forever
        this.held--
      }
    }
    if (this.waiters === 0) return []
    const waiting: TurnCandidate<P>[] = []
    for (const [peer, s] of this.peers) {
      if (!s.wait) continue
      const i = this.o.info?.(peer, s.wait.piece)
      waiting.push({ peer, waitingSince: s.wait.since, sent: i?.sent ?? 0, copies: i?.copies })
    }
    let free = this.o.slots - this.held
    if (free <= 0 && this.o.saturated?.() === false) free = 1
    const out = grantTurns(waiting, { free, order: this.o.order ?? 'age', now, maxWaitMs: this.maxWait })
    for (const p of out) {
      const s = this.peers.get(p)!
      s.turn = { piece: s.wait!.piece, bytes: 0 }
      s.wait = undefined
      this.waiters--
      this.held++
    }
    return out
  }

  /** When `admit()` must run next at the latest (a wait or a drain reaches maxWaitMs; the saturation test while peers wait), or undefined. */
  nextDeadline(): number | undefined {
    let at: number | undefined = this.waiters > 0 && this.o.saturated ? this.o.now() + SATURATION_RECHECK_MS : undefined
    for (const s of this.peers.values()) {
      for (const since of [s.wait?.since, s.drain?.since]) {
        if (since !== undefined && (at === undefined || since + this.maxWait < at)) at = since + this.maxWait
      }
    }
    return at
  }
}
