/**
 * The lower bound on the last finish that tools/bench/swarm.ts prints,
 *   T* = max(S/C_seed, S/C, N·S/(C_seed + N·C)),
 * generalised to unequal links, late joins and deaths (Kumar & Ross's bound
 * for a fluid swarm): no node finishes before it joined plus S over its
 * downlink; the seeders must send every byte once; and the N·S bytes the
 * surviving nodes need must be uploaded by someone, at most at the sum of the
 * uplinks present at each moment. With equal links and no joins or deaths
 * this is the bench's formula exactly.
 */
import type { NodeSpec } from './swarm.js'

export function lowerBound(size: number, nodes: readonly NodeSpec[]): number {
  const seeders = nodes.filter((n) => n.seeder)
  const survivors = nodes.filter((n) => !n.seeder && n.dieAt === undefined)
  const seedUp = seeders.reduce((s, n) => s + n.up, 0)
  let t = size / seedUp
  for (const n of survivors) t = Math.max(t, (n.joinAt ?? 0) + size / n.down)
  const need = survivors.length * size
  // bytes all uploaders can have sent by time x
  const carried = (x: number) => {
    let sum = 0
    for (const n of nodes) {
      const from = n.seeder ? 0 : (n.joinAt ?? 0)
      const to = Math.min(x, n.dieAt ?? Infinity)
      if (to > from) sum += n.up * (to - from)
    }
    return sum
  }
  let lo = 0
  let hi = Math.max(t, need / seedUp)
  for (let i = 0; i < 100 && hi - lo > 1e-9 * hi; i++) {
    const mid = (lo + hi) / 2
    if (carried(mid) >= need) hi = mid
    else lo = mid
  }
  return Math.max(t, hi)
}

/** Unicast from the seeders: every node's S through their uplinks, N·S/C_seed. */
export function unicastTime(size: number, nodes: readonly NodeSpec[]): number {
  const seedUp = nodes.filter((n) => n.seeder).reduce((s, n) => s + n.up, 0)
  const survivors = nodes.filter((n) => !n.seeder && n.dieAt === undefined).length
  return (survivors * size) / seedUp
}
