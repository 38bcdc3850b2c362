/**
 * What a run says about the deploy: only nodes that lived to the end count
 * (a node that died is left out of every figure but `dead`); seeders never
 * count.
 */
import type { SimResult } from './swarm.js'

export interface Summary {
  /** Downloading nodes that did not die. */
  readonly counted: number
  /** Of those, how many hold every piece. */
  readonly finished: number
  readonly dead: number
  /** Finish times of the counted nodes (Infinity: not finished), seconds: first, median, last. */
  readonly first: number
  readonly median: number
  readonly last: number
  /** Share of the counted nodes' downloaded bytes that came from other nodes, not from seeders. */
  readonly fromPeers: number
  /** Bytes the seeders sent until the last finish, over what their uplinks could have sent. */
  readonly seederUse: number
  /** Bytes that arrived unused (endgame duplicates, answers to cancelled requests), over the bytes the counted nodes needed. */
  readonly duplicates: number
}

/** `seedUp`: the seeders' uplinks summed, bytes/s (for seederUse). */
export function summarize(r: SimResult, seedUp = NaN): Summary {
  const counted = r.nodes.filter((x) => !x.seeder && x.diedAt === undefined)
  const times = counted.map((x) => (x.pieces === r.pieceCount ? (x.finishedAt ?? Infinity) : Infinity)).sort((a, b) => a - b)
  const downloaded = counted.reduce((s, x) => s + x.downloaded, 0)
  return {
    counted: counted.length,
    finished: times.filter((t) => t < Infinity).length,
    dead: r.nodes.filter((x) => x.diedAt !== undefined).length,
    first: times.length > 0 ? times[0] : NaN,
    median: times.length > 0 ? times[(times.length - 1) >> 1] : NaN,
    last: times.length > 0 ? times[times.length - 1] : NaN,
    fromPeers: downloaded > 0 ? counted.reduce((s, x) => s + x.downloaded - x.fromSeeders, 0) / downloaded : 0,
    seederUse: r.seederBytesAtLast / (seedUp * (times.length > 0 ? times[times.length - 1] : NaN)),
    duplicates: r.wasted / (counted.length * r.size),
  }
}
