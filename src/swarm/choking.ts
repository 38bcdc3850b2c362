/**
 * Choking for one torrent: who may download from us, applied to the
 * connected peers. The decision of a round is chooseUnchoked's (choker.ts,
 * under the configured policy); here are the rounds (every CHOKE_TICKS
 * ticks, the optimistic slot rotating every third), when each peer last got
 * or lost a slot (for round-robin), the free slots given at once to a newly
 * interested peer, and what choking a peer means for its queued requests.
 * A peer that loses interest is left unchoked and holds no slot.
 */
import { chooseUnchoked, type ChokingPolicy } from './choker.js'
import type { PeerConnection } from './peer-connection.js'
import type { UploadServer } from './upload-server.js'

/** Rechoke every this many ticks; the optimistic slot rotates every third rechoke. */
export const CHOKE_TICKS = 10

export class Choking {
  private optimistic?: PeerConnection
  /** When each peer last got or lost its slot (for round-robin). */
  private readonly slotChangedAt = new WeakMap<PeerConnection, number>()

  constructor(
    private readonly peers: () => Iterable<PeerConnection>,
    private readonly uploads: UploadServer,
    private readonly opts: { readonly slots: number; readonly policy: ChokingPolicy; readonly seeding: () => boolean },
  ) {}

  /** Once a tick: a full round every CHOKE_TICKS ticks. */
  tick(ticks: number): void {
    if (ticks % CHOKE_TICKS === 1) this.round(ticks % (CHOKE_TICKS * 3) === 1)
  }

  private round(rotate: boolean): void {
    const all = [...this.peers()]
    const decision = chooseUnchoked(
      all.map((p) => ({
        peer: p,
        interested: p.peerInterested,
        isSeed: p.isSeed,
        downloadRate: p.download.rate(),
        uploadRate: p.upload.rate(),
        unchoked: !p.amChoking,
        slotChangedAt: this.slotChangedAt.get(p),
      })),
      { slots: this.opts.slots, policy: this.opts.policy, seeding: this.opts.seeding(), optimistic: this.optimistic, rotate },
    )
    this.optimistic = decision.optimistic
    for (const p of all) {
      if (decision.unchoke.has(p)) this.unchoke(p)
      else if (p.peerInterested) this.choke(p)
    }
  }

  private unchoke(p: PeerConnection): void {
    if (!p.amChoking) return
    p.unchoke()
    this.slotChangedAt.set(p, performance.now())
  }

  /** Slots in use: unchoked peers that want data (an uninterested one asks for nothing: it holds no slot). */
  private used(except?: PeerConnection): number {
    let used = 0
    for (const p of this.peers()) if (p !== except && !p.amChoking && p.peerInterested && !p.isSeed) used++
    return used
  }

  /**
   * A peer became interested. One still unchoked (a peer that lost interest
   * is not choked for it: see lostInterest) keeps its slot if one is free,
   * else it is choked now, before we serve any request; free slots go to
   * interested peers.
   */
  gainedInterest(p: PeerConnection): void {
    if (!p.amChoking && this.used(p) >= this.opts.slots) this.choke(p)
    this.fillSlots()
  }

  /**
   * A peer lost interest: its slot is free for another, and it stays
   * unchoked (it asks for nothing). Choking it would race its next
   * INTERESTED: requests it sends before our CHOKE reaches it are dropped on
   * its side and answered on ours, then asked again — every block twice.
   */
  lostInterest(): void {
    this.fillSlots()
  }

  /** Give free slots to interested peers at once rather than at the next round. */
  fillSlots(): void {
    let used = this.used()
    for (const p of this.peers()) {
      if (used >= this.opts.slots) return
      if (p.amChoking && p.peerInterested && !p.isSeed) {
        this.unchoke(p)
        used++
      }
    }
  }

  /** Choke a peer: what it asked for is void. */
  choke(p: PeerConnection): void {
    if (p.amChoking) return
    p.choke()
    this.slotChangedAt.set(p, performance.now())
    this.uploads.clear(p)
  }

  /** A peer left. */
  forget(p: PeerConnection): void {
    if (this.optimistic === p) this.optimistic = undefined
  }
}
