/**
 * The golden-image seeder's uplink is the scarcest thing in a deployment
 * swarm: every byte enters the swarm through it, so the last node cannot
 * finish before the seeder has sent every piece once, and every piece it
 * sends twice delays that. Left to themselves, nodes that pick rarest-first
 * collide: two nodes ask the seeder for the same piece because neither has
 * yet heard the other's HAVE (measured: a 16 KiB block was sent 1.5 times on
 * average at N = 8, some to every node).
 *
 * So a seeding-mode torrent reveals its pieces in stripes (BEP 16's idea of
 * super-seeding, without its gating): each peer is shown, by HAVE messages,
 * a stripe of consecutive pieces no other peer has been shown, kept about
 * STRIPE_BYTES ahead of what the peer has asked for, so its requests never
 * wait. Every other peer gets those pieces from the one that was shown them.
 * Once every piece has been shown to someone, a peer that has asked for all
 * it was shown is shown what another peer was shown and has not asked for
 * yet, so the seeder keeps sending pieces nobody holds. When every piece is
 * held by a peer, or REVEAL_ALL_AFTER_MS have passed without a piece being
 * shown or first asked for (in the simulator: showing everything 3 s after the last
 * piece was first shown, while a fifth of the pieces sat shown and unasked,
 * had the seeder sending a third of its bytes twice for the last 15 s of a
 * 32-node swarm, and its first round ending at 1.12 × T*), every peer is
 * shown everything: the tail, late joiners and peers whose stripe-holder
 * left are served like from any seed. A stripe shown to a peer that leaves
 * before asking for it goes to the next peer.
 *
 * Nothing here is new on the wire (a bitfield, HAVEs): libtorrent,
 * transmission, aria2 and EZIO download from a striping seeder unchanged.
 */
import { PieceSet } from './piece-set.js'

/** Pieces kept shown-but-not-asked-for per peer, in bytes (at least two pieces): enough that its requests never wait (a new stripe piece is shown the moment it asks for one), little enough that at the end of the first round few pieces sit shown and unasked. */
export const STRIPE_BYTES = 1024 * 1024
/** Once every piece was shown, show everything at the latest this long after a piece was last shown or first asked for. */
export const REVEAL_ALL_AFTER_MS = 3000

/** What the seeder tells a peer: HAVE for these pieces, or its whole bitfield. */
export type Reveal = { readonly have: readonly number[] } | { readonly all: true; readonly except?: PieceSet }

export interface SeedStripesOptions {
  readonly pieceCount: number
  readonly pieceBytes: (index: number) => number
  /** Some connected peer has announced the piece. */
  readonly held: (index: number) => boolean
  readonly now?: () => number
  readonly stripeBytes?: number
}

interface PeerStripe {
  /** Pieces shown to it. */
  readonly shown: PieceSet
  /** Shown and not yet asked for, and their bytes. */
  readonly ahead: Set<number>
  aheadBytes: number
}

export class SeedStripes<P> {
  /** The next piece never shown to anyone. */
  private cursor = 0
  /** Pieces shown to a peer that left before it had them: shown to the next peer first. */
  private readonly returned: number[] = []
  private readonly peers = new Map<P, PeerStripe>()
  private lastProgress = 0
  private allShown = false
  private readonly now: () => number
  private readonly stripeBytes: number

  constructor(private readonly o: SeedStripesOptions) {
    this.now = o.now ?? (() => performance.now())
    this.stripeBytes = Math.max(o.stripeBytes ?? STRIPE_BYTES, 1)
  }

  /** Every peer sees every piece now (also what a new peer is sent: the whole bitfield). */
  get revealingAll(): boolean {
    return this.allShown
  }

  /** A peer connected: what to show it first. `has`: the pieces it has (from its bitfield, if any yet). */
  attach(peer: P, has: (index: number) => boolean): Reveal {
    if (this.allShown) return { all: true }
    const s: PeerStripe = { shown: new PieceSet(this.o.pieceCount), ahead: new Set(), aheadBytes: 0 }
    this.peers.set(peer, s)
    return { have: this.topUp(s, has) }
  }

  /** The peer asked for a block of `index`: the stripe moves on. What more to show it. */
  requested(peer: P, index: number, has: (index: number) => boolean): Reveal | undefined {
    const s = this.peers.get(peer)
    if (!s || this.allShown) return undefined
    const moved = s.ahead.delete(index)
    if (moved) {
      s.aheadBytes -= this.o.pieceBytes(index)
      this.lastProgress = this.now()
    }
    // Only a stripe that moved may steal: a request for a further block of a
    // piece asked for before changes nothing, and comes once per block.
    const have = this.topUp(s, has, moved)
    return have.length > 0 ? { have } : undefined
  }

  /** The peer has `index` (its bitfield or a HAVE): a piece shown to it that it need not ask for no longer holds its stripe up. */
  peerHas(peer: P, index: number, has: (index: number) => boolean): Reveal | undefined {
    const s = this.peers.get(peer)
    if (!s || !s.ahead.delete(index)) return undefined
    s.aheadBytes -= this.o.pieceBytes(index)
    const have = this.topUp(s, has)
    return have.length > 0 ? { have } : undefined
  }

  /** The peer has every piece: show it everything (it asks for nothing, and learns that we are a seed, which its done policy counts). */
  peerComplete(peer: P): Reveal {
    const s = this.peers.get(peer)
    this.peers.delete(peer)
    return { all: true, except: s?.shown }
  }

  /**
   * The peer left: what it was shown and nobody holds goes to the next peer.
   * (A piece it asked for but never announced is not known to be anywhere
   * but here either.)
   */
  detach(peer: P): void {
    const s = this.peers.get(peer)
    if (!s) return
    this.peers.delete(peer)
    if (this.allShown) return
    for (let i = 0; i < this.o.pieceCount; i++) {
      if (s.shown.has(i) && !this.o.held(i) && !this.shownElsewhere(i)) this.returned.push(i)
    }
  }

  /**
   * Once a tick: top up every peer (one that asked for nothing meanwhile may
   * have lost its stripe to a departed peer's returns), and decide whether it
   * is time to show everything. Returns what to send to whom.
   */
  tick(hasOf: (peer: P) => (index: number) => boolean): Map<P, Reveal> {
    const out = new Map<P, Reveal>()
    if (this.allShown) return out
    for (let k = this.returned.length - 1; k >= 0; k--) if (this.o.held(this.returned[k])) this.returned.splice(k, 1)
    if (this.cursor >= this.o.pieceCount && this.returned.length === 0) {
      let everyHeld = true
      for (let i = 0; i < this.o.pieceCount && everyHeld; i++) everyHeld = this.o.held(i)
      if (everyHeld || this.now() - this.lastProgress >= REVEAL_ALL_AFTER_MS) {
        this.allShown = true
        for (const [p, s] of this.peers) out.set(p, { all: true, except: s.shown })
        this.peers.clear()
        return out
      }
    }
    for (const [p, s] of this.peers) {
      const have = this.topUp(s, hasOf(p))
      if (have.length > 0) out.set(p, { have })
    }
    return out
  }

  private shownElsewhere(index: number): boolean {
    for (const s of this.peers.values()) if (s.shown.has(index)) return true
    return false
  }

  /**
   * Show `s` new pieces until it has stripeBytes (at least two pieces) shown
   * and not asked for; with `maySteal`, one from another peer's stripe once
   * none are left to show.
   */
  private topUp(s: PeerStripe, has: (index: number) => boolean, maySteal = true): number[] {
    const out: number[] = []
    const minAhead = 2
    while (s.aheadBytes < this.stripeBytes || s.ahead.size < minAhead) {
      const i = this.nextFor(s, has)
      if (i === undefined) break
      s.shown.add(i)
      s.ahead.add(i)
      s.aheadBytes += this.o.pieceBytes(i)
      out.push(i)
    }
    if (maySteal && s.ahead.size === 0) {
      const i = this.steal(s, has)
      if (i !== undefined) {
        s.shown.add(i)
        s.ahead.add(i)
        s.aheadBytes += this.o.pieceBytes(i)
        out.push(i)
      }
    }
    return out
  }

  /**
   * Every piece has been shown and this peer has asked for all it was shown:
   * show it a piece another peer was shown and has not asked for yet (from
   * the peer with the most such, the one it would ask for last), so that
   * the seeder's uplink keeps going to pieces nobody holds instead of that
   * stripe waiting behind its holder's other downloads. The other peer may
   * still ask for it as well; once this one announces it, it can get it
   * from here instead.
   */
  private steal(s: PeerStripe, has: (index: number) => boolean): number | undefined {
    if (this.cursor < this.o.pieceCount || this.returned.length > 0) return undefined
    const victims = [...this.peers.values()].filter((v) => v !== s && v.ahead.size > 0).sort((a, b) => b.ahead.size - a.ahead.size)
    for (const v of victims) {
      const i = [...v.ahead].reverse().find((x) => !has(x) && !s.shown.has(x) && !this.o.held(x))
      if (i === undefined) continue
      v.ahead.delete(i)
      v.aheadBytes -= this.o.pieceBytes(i)
      this.lastProgress = this.now()
      return i
    }
    return undefined
  }

  /** A returned piece it lacks, else the next never-shown piece it lacks (one it has needs no showing: it can serve it). */
  private nextFor(s: PeerStripe, has: (index: number) => boolean): number | undefined {
    for (let k = 0; k < this.returned.length; ) {
      const i = this.returned[k]
      if (this.o.held(i)) {
        this.returned.splice(k, 1) // a peer has it now: it spreads from there
        continue
      }
      if (has(i) || s.shown.has(i)) {
        k++
        continue
      }
      this.returned.splice(k, 1)
      this.lastProgress = this.now()
      return i
    }
    while (this.cursor < this.o.pieceCount) {
      const i = this.cursor++
      if (has(i)) continue
      this.lastProgress = this.now()
      return i
    }
    return undefined
  }
}
