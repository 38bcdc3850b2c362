/**
 * Depth-first serving, the candidate engine policy the simulator tries
 * (`npm run sim -- --turns N`): which of the peers waiting for a node's
 * uplink is served now. A node re-serves only verified pieces, so a fresh
 * piece spreads as fast as its copies complete; an uplink split among every
 * peer asking makes each copy take many piece-times before its receiver can
 * pass it on. Serving a few peers at a time, a piece per turn, was to make
 * each copy forwardable after about one piece-time. Written as
 * upload-server.ts would apply it (per peer queues, a monotonic ms clock);
 * the engine does not: in the simulator it did not help (README, "Depth-first
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
 */

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
