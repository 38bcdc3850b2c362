/**
 * Who may download from us, decided once a round (choking.ts runs the rounds).
 *
 * Two policies:
 * - 'fleet' (the default): a deployment is one trusted team with one goal,
 *   the last node's finish, not a market. Every interested peer is unchoked
 *   (TCP shares the uplink among them); when a slot cap is set and more peers
 *   want data than there are slots, the slots go round-robin: those that
 *   waited longest since they last had one first, so that every peer gets a
 *   share and none is starved by a faster one. EZIO measured round-robin seed
 *   choking 9% faster than fastest-first.
 * - 'tit-for-tat' (BitTorrent's own, for swarms of strangers): the slots go to
 *   the interested peers that give the most — while downloading, those we
 *   download from fastest; while seeding, those that take our uploads fastest.
 *   When more peers want data than there are slots, one slot is optimistic: a
 *   random other peer, rotated every third round, so that new peers get a
 *   first piece to trade and a faster partner can be found.
 */
export type ChokingPolicy = 'fleet' | 'tit-for-tat'
export const CHOKING_POLICIES: readonly ChokingPolicy[] = ['fleet', 'tit-for-tat']

export interface ChokeCandidate<P> {
  readonly peer: P
  readonly interested: boolean
  readonly isSeed: boolean
  /** Payload bytes/s we receive from it. */
  readonly downloadRate: number
  /** Payload bytes/s we send it. */
  readonly uploadRate: number
  /** Whether it is unchoked now. */
  readonly unchoked?: boolean
  /** When it last lost (or, if unchoked, got) its slot, in any monotonic unit; 0 or absent: never had one. For 'fleet' round-robin. */
  readonly slotChangedAt?: number
}

export interface ChokeDecision<P> {
  readonly unchoke: Set<P>
  readonly optimistic?: P
}

export interface ChokeOptions<P> {
  readonly slots: number
  readonly seeding: boolean
  /** Default 'tit-for-tat' here (the engine passes its configured policy). */
  readonly policy?: ChokingPolicy
  /** The optimistic peer of the previous round. */
  readonly optimistic?: P
  /** Pick a new optimistic peer this round. */
  readonly rotate: boolean
  readonly random?: () => number
}

export function chooseUnchoked<P>(peers: readonly ChokeCandidate<P>[], opts: ChokeOptions<P>): ChokeDecision<P> {
  const wanting = peers.filter((p) => p.interested && !p.isSeed)
  if (opts.slots <= 0) return { unchoke: new Set() }
  if (wanting.length <= opts.slots) return { unchoke: new Set(wanting.map((p) => p.peer)) }
  return opts.policy === 'fleet' ? roundRobin(wanting, opts.slots) : titForTat(wanting, opts)
}

/** The `slots` peers that waited longest: never-served first, then by when they lost their slot; the unchoked keep theirs only where room is left, longest-held giving way first. */
function roundRobin<P>(wanting: readonly ChokeCandidate<P>[], slots: number): ChokeDecision<P> {
  const waitedSince = (c: ChokeCandidate<P>) => (c.unchoked ? Infinity : (c.slotChangedAt ?? 0))
  const order = [...wanting].sort((a, b) => waitedSince(a) - waitedSince(b) || (b.unchoked ? b.slotChangedAt ?? 0 : 0) - (a.unchoked ? a.slotChangedAt ?? 0 : 0))
  return { unchoke: new Set(order.slice(0, slots).map((c) => c.peer)) }
}

function titForTat<P>(wanting: readonly ChokeCandidate<P>[], opts: ChokeOptions<P>): ChokeDecision<P> {
  const random = opts.random ?? Math.random
  const rate = (c: ChokeCandidate<P>) => (opts.seeding ? c.uploadRate : c.downloadRate)
  const ranked = [...wanting].sort((a, b) => rate(b) - rate(a))
  const regular = ranked.slice(0, opts.slots - 1).map((c) => c.peer)
  const unchoke = new Set(regular)
  const others = ranked.slice(opts.slots - 1).map((c) => c.peer)
  let optimistic = opts.optimistic
  if (opts.rotate || optimistic === undefined || !others.includes(optimistic)) {
    optimistic = others[Math.floor(random() * others.length)]
  }
  unchoke.add(optimistic)
  return { unchoke, optimistic }
}
