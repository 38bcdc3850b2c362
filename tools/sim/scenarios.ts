/**
 * The swarms the simulator is asked about, each built from the same base
 * (image, links, engine settings) for a node count N: N nodes and one seeder
 * on equal links; 10% of the nodes on a tenth of the speed; nodes joining
 * 0–60 s late; 5% of the nodes dying mid-deploy; two seeders. Every node
 * starts after a startup time drawn from [0, 2 × startup] (process start to
 * first announce, what bench:swarm reports as "startup s"), which the bound
 * T* does not include (as in the bench); late joins and deaths are in it.
 */
import { mulberry32 } from '../lib/random.js'
import { lowerBound, unicastTime } from './bound.js'
import type { ChokingPolicy } from '../../src/swarm/choker.js'
import type { NodeSpec, SimOptions } from './swarm.js'

export interface Base {
  readonly size: number
  readonly pieceSize: number
  readonly unit?: number
  /** Link goodput of a node and of the seeder(s), bytes/s. */
  readonly rate: number
  readonly seederRate: number
  readonly slots: number
  readonly connections: number
  readonly choking: ChokingPolicy
  /** Round-trip time between two nodes, seconds. */
  readonly rtt: number
  /** Median startup, seconds. */
  readonly startup: number
  readonly seedIdle: number
  readonly death: 'silent' | 'reset'
  readonly epoch?: number
  readonly seed: number
  /** Depth-first serving (SimOptions.turns); absent: every requester at once. */
  readonly turns?: SimOptions['turns']
  /** Piece buffers per node (--memory); absent: the engine's default. */
  readonly memory?: number
  /** Requests moved to idle peers (SimOptions.moveBacklog); absent: never. */
  readonly moveBacklog?: number
  /** SimOptions.haveHold; absent: the engine's. */
  readonly haveHold?: number
}

export interface Built {
  readonly sim: SimOptions
  /** The bound and the unicast time for this swarm. */
  readonly tStar: number
  readonly unicast: number
}

export interface Scenario {
  readonly name: string
  readonly title: string
  /** For the plot's legend. */
  readonly short: string
  readonly build: (n: number, base: Base) => Built
}

/** `n` nodes after one or more seeders; `shape` adjusts each node (index among the nodes, its random stream). */
function swarm(base: Base, n: number, seeders: number, shape?: (i: number, node: NodeSpec, random: () => number) => NodeSpec): Built {
  const random = mulberry32(base.seed * 7919 + n)
  const latency = base.rtt / 4
  const specs: NodeSpec[] = []
  const late: NodeSpec[] = []
  for (let s = 0; s < seeders; s++) {
    const seeder: NodeSpec = { up: base.seederRate, down: base.seederRate, latency, seeder: true }
    specs.push(seeder)
    late.push(seeder)
  }
  for (let i = 0; i < n; i++) {
    const start = 2 * base.startup * random()
    const node = shape ? shape(i, { up: base.rate, down: base.rate, latency }, random) : { up: base.rate, down: base.rate, latency }
    late.push(node)
    specs.push({ ...node, joinAt: start + (node.joinAt ?? 0), dieAt: node.dieAt === undefined ? undefined : start + node.dieAt })
  }
  const sim: SimOptions = {
    size: base.size,
    pieceSize: base.pieceSize,
    unit: base.unit,
    nodes: specs,
    slots: base.slots,
    maxConnections: base.connections,
    choking: base.choking,
    policy: { seedIdle: base.seedIdle },
    death: base.death,
    epoch: base.epoch,
    turns: base.turns,
    memory: base.memory,
    moveBacklog: base.moveBacklog,
    haveHold: base.haveHold,
    seed: base.seed + n,
    until: 3600 + 60 * lowerBound(base.size, late),
  }
  return { sim, tStar: lowerBound(base.size, late), unicast: unicastTime(base.size, late) }
}

/** `k` of `n` indices, at random. */
function chosen(n: number, k: number, random: () => number): Set<number> {
  const all = Array.from({ length: n }, (_, i) => i)
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(random() * (n - i))
    ;[all[i], all[j]] = [all[j], all[i]]
  }
  return new Set(all.slice(0, k))
}

export const SCENARIOS: readonly Scenario[] = [
  { name: 'equal', title: 'one seeder, N nodes, equal links', short: 'equal links', build: (n, base) => swarm(base, n, 1) },
  {
    name: 'slow',
    title: '10% of the nodes on a tenth of the speed',
    short: '10% at a tenth of the speed',
    build: (n, base) => {
      const slow = chosen(n, Math.round(n / 10), mulberry32(base.seed + 31 * n))
      return swarm(base, n, 1, (i, node) => (slow.has(i) ? { ...node, up: node.up / 10, down: node.down / 10 } : node))
    },
  },
  {
    name: 'late',
    title: 'nodes joining 0–60 s late',
    short: 'joining 0–60 s late',
    build: (n, base) => swarm(base, n, 1, (_, node, random) => ({ ...node, joinAt: 60 * random() })),
  },
  {
    name: 'dying',
    title: '5% of the nodes dying mid-deploy (between 1/4 and 3/4 of T*)',
    short: '5% dying mid-deploy',
    build: (n, base) => {
      const tEqual = swarm(base, n, 1).tStar
      const dying = chosen(n, Math.max(1, Math.round(n / 20)), mulberry32(base.seed + 37 * n))
      return swarm(base, n, 1, (i, node, random) => (dying.has(i) ? { ...node, dieAt: tEqual * (0.25 + 0.5 * random()) } : node))
    },
  },
  { name: 'seeders', title: 'two seeders, N nodes, equal links', short: 'two seeders', build: (n, base) => swarm(base, n, 2) },
]

export function scenario(name: string): Scenario {
  const s = SCENARIOS.find((x) => x.name === name)
  if (!s) throw new Error(`no scenario ${JSON.stringify(name)}: one of ${SCENARIOS.map((x) => x.name).join(', ')}`)
  return s
}
