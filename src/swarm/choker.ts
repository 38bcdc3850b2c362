/**
 * Who may download from us. Every round (10 s) the unchoke slots go to the
 * interested peers that give the most: while downloading, those we download
 * from fastest (tit-for-tat); while seeding, those that take our uploads
 * fastest. When more peers want data than there are slots, one slot is
 * optimistic: a random other peer, rotated every third round, so that new
 * peers get a first piece to trade and a faster partner can be found.
 */
export interface ChokeCandidate<P> {
  readonly peer: P
  readonly interested: boolean
  readonly isSeed: boolean
  /** Payload bytes/s we receive from it. */
  readonly downloadRate: number
  /** Payload bytes/s we send it. */
  readonly uploadRate: number
}

export interface ChokeDecision<P> {
  readonly unchoke: Set<P>
  readonly optimistic?: P
}

export interface ChokeOptions<P> {
  readonly slots: number
  readonly seeding: boolean
  /** The optimistic peer of the previous round. */
  readonly optimistic?: P
  /** Pick a new optimistic peer this round. */
  readonly rotate: boolean
  readonly random?: () => number
}

export function chooseUnchoked<P>(peers: readonly ChokeCandidate<P>[], opts: ChokeOptions<P>): ChokeDecision<P> {
  const random = opts.random ?? Math.random
  const wanting = peers.filter((p) => p.interested && !p.isSeed)
  if (opts.slots <= 0) return { unchoke: new Set() }
  if (wanting.length <= opts.slots) return { unchoke: new Set(wanting.map((p) => p.peer)) }
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
