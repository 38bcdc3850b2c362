/**
 * Moving a request to an idle peer (`npm run sim -- --move-requests`; not in
 * the engine). A peer that has nothing new for us (every piece of it that we
 * lack is already being fetched from others) leaves its uplink to us unused
 * while another peer's queue of our requests takes long to drain: at N = 300
 * a tenth of the nodes sat with idle uplinks although a dozen peers were
 * interested in them. So the idle peer takes over the request that the most
 * backed-up peer would serve last, and that peer gets a CANCEL. In the
 * simulator a sender has one unit on the wire and the rest queued, so the
 * CANCEL takes the unit back; blockswarm's upload server writes every
 * requested block into the socket at once (up to SEND_HIGH_WATER), so there a
 * moved block would mostly be sent twice. See the README (simulator).
 */

/** A peer's queue of our requests must take longer than this to drain at its rate for one of them to move. */
export const MOVE_BACKLOG_SECONDS = 0.15

/** A peer as requestToMove sees it. */
export interface MoveSource<K> {
  /** Our requests it has not answered. */
  readonly requests: number
  /** Seconds its queue of our requests takes at its current rate. */
  readonly backlogSeconds: number
  /** The request it would serve last of those `idle` could serve instead (undefined: none). */
  readonly lastMovable: () => K | undefined
}

/**
 * Of `peers`, the one whose backlog is longest (over `minSeconds`,
 * at least two requests, so that it keeps one) with a request the idle peer
 * can take, and that request; undefined when none qualifies.
 */
export function requestToMove<P, K>(peers: Iterable<P>, idle: P, view: (p: P) => MoveSource<K> | undefined, minSeconds = MOVE_BACKLOG_SECONDS): { from: P; key: K } | undefined {
  let best: { from: P; key: K } | undefined
  let longest = minSeconds
  for (const p of peers) {
    if (p === idle) continue
    const s = view(p)
    if (!s || s.requests < 2 || !(s.backlogSeconds > longest)) continue
    const key = s.lastMovable()
    if (key === undefined) continue
    best = { from: p, key }
    longest = s.backlogSeconds
  }
  return best
}
