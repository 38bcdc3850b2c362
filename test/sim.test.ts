/**
 * The swarm simulator (tools/sim) on swarms small enough to reason about:
 * its fair sharing, a lone node at its link's speed, never faster than the
 * bound, dead nodes left out, every survivor with every piece, the same run
 * for the same seed. Simulated time only: nothing here depends on the
 * machine's speed.
 */
import { describe, expect, it } from 'vitest'
import { DEFAULT_CHOKING } from '../src/session/session.js'
import { CHOKING_POLICIES } from '../src/swarm/choker.js'
import { REQUEST_TIMEOUT_MS } from '../src/swarm/peer-connection.js'
import { lowerBound, unicastTime } from '../tools/sim/bound.js'
import { Network, type Flow } from '../tools/sim/network.js'
import { scenario } from '../tools/sim/scenarios.js'
import { summarize } from '../tools/sim/summary.js'
import { type NodeSpec, type SimOptions, simulate } from '../tools/sim/swarm.js'
import { grantTurns, MAX_TURN_WAIT_MS, TURN_MAX_BYTES, TURN_ORDERS, TurnGate, turnEnds } from '../tools/sim/upload-turns.js'
import { PEAK_HALF_LIFE_MS, UplinkGauge, WINDOW_MS } from '../tools/sim/uplink-gauge.js'
import { MOVE_BACKLOG_SECONDS, requestToMove } from '../tools/sim/request-move.js'
import { BLOCK_SIZE } from '../src/swarm/wire-messages.js'

const MiB = 2 ** 20
const C = 1e6
/** One-way delay of every access link: node to node RTT = 4 × this = 2 ms. */
const LATENCY = 0.0005
const RTT = 4 * LATENCY

function swarm(nodes: NodeSpec[], more: Partial<SimOptions> = {}): SimOptions {
  return { size: 4 * MiB, pieceSize: 64 * 1024, nodes, slots: 4, maxConnections: 8, seed: 3, until: 600, ...more }
}

const seeder = (up = C): NodeSpec => ({ up, down: up, latency: LATENCY, seeder: true })
const node = (rate = C, more: Partial<NodeSpec> = {}): NodeSpec => ({ up: rate, down: rate, latency: LATENCY, ...more })

describe('Network: max-min fair rates', () => {
  const flow = (src: number, dst: number): Flow => ({ src, dst, rate: 0, flowAt: -1 })

  it('gives a slow receiver its downlink and splits the rest of the sender uplink among the others', () => {
    // node 0 uploads 9 to nodes 1 (downlink 1), 2 and 3 (downlink 10)
    const net = new Network(Float64Array.of(9, 10, 10, 10), Float64Array.of(10, 1, 10, 10))
    const f = [flow(0, 1), flow(0, 2), flow(0, 3)]
    for (const x of f) net.add(x)
    net.allocate()
    expect(f.map((x) => x.rate)).toEqual([1, 4, 4])
  })

  it('shares a receiver downlink between two senders, and each sender keeps its spare for its other flow', () => {
    // 0 → 2 and 1 → 2 share node 2's downlink of 4; 0 → 3 takes the rest of node 0's uplink of 10
    const net = new Network(Float64Array.of(10, 10, 10, 10), Float64Array.of(10, 10, 4, 10))
    const f = [flow(0, 2), flow(1, 2), flow(0, 3)]
    for (const x of f) net.add(x)
    net.allocate()
    expect(f.map((x) => x.rate)).toEqual([2, 2, 8])
  })

  it('a flow started between allocations gets what is left of its links', () => {
    const net = new Network(Float64Array.of(10, 10, 10), Float64Array.of(10, 10, 10))
    const a = flow(0, 1)
    net.add(a)
    expect(a.rate).toBe(10)
    const b = flow(0, 2)
    net.add(b)
    expect(b.rate).toBe(0)
    net.remove(a)
    net.allocate()
    expect(b.rate).toBe(10)
  })
})

describe('simulate', () => {
  it('one seeder and one node: the node finishes in S/C, within one piece time and a few round trips', () => {
    const opts = swarm([seeder(), node()])
    const r = simulate(opts)
    const s = summarize(r)
    const ideal = opts.size / C
    expect(s.finished).toBe(1)
    expect(s.last).toBeGreaterThanOrEqual(ideal)
    // connect, bitfield, interested, unchoke, request: a few round trips before the first byte
    expect(s.last).toBeLessThanOrEqual(ideal + opts.pieceSize / C + 4 * RTT)
    expect(s.fromPeers).toBe(0)
  })

  it('never beats T* when the seeder uplink is the shared bottleneck', () => {
    for (const n of [2, 5, 9]) {
      const nodes = [seeder(C / 4), ...Array.from({ length: n }, () => node())]
      const r = simulate(swarm(nodes))
      const s = summarize(r)
      const tStar = Math.max(4 * MiB / (C / 4), (4 * MiB) / C, (n * 4 * MiB) / (C / 4 + n * C))
      expect(lowerBound(4 * MiB, nodes)).toBeCloseTo(tStar, 9)
      expect(s.finished).toBe(n)
      expect(s.last).toBeGreaterThanOrEqual(tStar)
      // and it does share: far better than the seeder sending every copy, at least half of what the peers could give each other
      expect(s.last).toBeLessThan(unicastTime(4 * MiB, nodes))
      expect(s.fromPeers).toBeGreaterThan((0.5 * (n - 1)) / n)
    }
  })

  it('never beats a node downlink either: a slow node takes at least S over its downlink', () => {
    const nodes = [seeder(), node(), node(C / 10), node()]
    const s = simulate(swarm(nodes))
    const slow = s.nodes[2]
    expect(slow.finishedAt).toBeGreaterThanOrEqual((4 * MiB) / (C / 10))
    expect(summarize(s).finished).toBe(3)
  })

  it('a node that dies is not counted, and the others still get every piece', () => {
    const nodes = [seeder(), ...Array.from({ length: 6 }, (_, i) => node(C, i === 2 ? { dieAt: 1.5 } : {}))]
    for (const death of ['silent', 'reset'] as const) {
      const r = simulate(swarm(nodes, { death }))
      const s = summarize(r)
      expect(r.nodes[3].diedAt).toBe(1.5)
      expect(r.nodes[3].pieces).toBeLessThan(r.pieceCount)
      expect(s.dead).toBe(1)
      expect(s.counted).toBe(5)
      expect(s.finished).toBe(5)
      expect(Number.isFinite(s.last)).toBe(true)
      for (const [i, x] of r.nodes.entries()) if (i !== 3) expect(x.pieces).toBe(r.pieceCount)
    }
  })

  it('every node ends with every piece: late joiners, slow nodes, two seeders, fewer connections than nodes, either choking policy', () => {
    const nodes = [
      seeder(),
      seeder(C / 2),
      ...Array.from({ length: 14 }, (_, i) => node(i % 5 === 0 ? C / 8 : C, { joinAt: (i * 7) % 11 })),
    ]
    for (const choking of CHOKING_POLICIES) {
      const r = simulate(swarm(nodes, { maxConnections: 4, slots: 2, choking }))
      expect(r.timedOut, choking).toBe(false)
      for (const x of r.nodes) expect(x.pieces, choking).toBe(r.pieceCount)
      for (const [i, x] of r.nodes.entries()) if (i >= 2) expect(x.finishedAt!).toBeGreaterThanOrEqual(x.joinAt + (4 * MiB) / nodes[i].down)
      const s = summarize(r)
      expect(s.finished, choking).toBe(14)
      expect(s.last, choking).toBeGreaterThanOrEqual(lowerBound(4 * MiB, nodes))
    }
  })

  it('latecomers find room: outgoing connections within dialLimit, so 40 nodes on 25 connections finish together', () => {
    // every node dialing up to the limit: the first up fill each other's slots and latecomers find none (last 1.4 × median before)
    const nodes = [seeder(), ...Array.from({ length: 40 }, (_, i) => node(C, { joinAt: (i % 10) * 0.05 }))]
    const s = summarize(simulate(swarm(nodes, { maxConnections: 25, slots: 25 })))
    expect(s.finished).toBe(40)
    expect(s.last).toBeLessThan(1.2 * s.median)
  })

  it('a node that dies silently holds up the pieces only it had for one request timeout, not until its connections close', () => {
    // from the seeder, a piece is skipped only while a peer can send it now: the dead one stops counting once snubbed
    const nodes = [seeder(), ...Array.from({ length: 6 }, (_, i) => node(C, i === 0 ? { dieAt: 2 } : {}))]
    const s = summarize(simulate(swarm(nodes, { death: 'silent' })))
    expect(s.finished).toBe(5)
    expect(s.last).toBeLessThan(REQUEST_TIMEOUT_MS / 1000 + (2 * 4 * MiB) / C)
  })

  it('the same seed, the same run; another seed, another run', () => {
    const opts = swarm([seeder(), ...Array.from({ length: 8 }, () => node())])
    const a = simulate(opts)
    const b = simulate(opts)
    expect(b.nodes.map((x) => x.finishedAt)).toEqual(a.nodes.map((x) => x.finishedAt))
    expect(b.events).toBe(a.events)
    const c = simulate({ ...opts, seed: 4 })
    expect(c.nodes.map((x) => x.finishedAt)).not.toEqual(a.nodes.map((x) => x.finishedAt))
  })
})

describe('depth-first serving (upload-turns.ts, --turns)', () => {
  const now = 10_000
  const waiting = [
    { peer: 'a', waitingSince: now - 300, sent: 0, copies: 5 },
    { peer: 'b', waitingSince: now - 500, sent: 0, copies: 3 },
    { peer: 'c', waitingSince: now - 100, sent: 65536, copies: 1 },
    { peer: 'd', waitingSince: now - 200, sent: 16384, copies: 1 },
  ]

  it('gives the free turns by age, by what was sent of the next piece, or by the fewest copies, ties by age', () => {
    expect(grantTurns(waiting, { free: 2, order: 'age', now })).toEqual(['b', 'a'])
    expect(grantTurns(waiting, { free: 2, order: 'completion', now })).toEqual(['c', 'd'])
    expect(grantTurns(waiting, { free: 3, order: 'rarest', now })).toEqual(['d', 'c', 'b'])
    expect(grantTurns(waiting, { free: 0, order: 'age', now })).toEqual([])
    expect(grantTurns([], { free: 4, order: 'age', now })).toEqual([])
  })

  it('never lets a peer wait past MAX_TURN_WAIT_MS: an overdue one gets a turn first, free or not', () => {
    const late = [...waiting, { peer: 'e', waitingSince: now - MAX_TURN_WAIT_MS, sent: 0, copies: 9 }]
    for (const order of TURN_ORDERS) {
      expect(grantTurns(late, { free: 0, order, now }), order).toEqual(['e'])
      expect(grantTurns(late, { free: 1, order, now }), order).toEqual(['e'])
      expect(grantTurns(late, { free: 2, order, now })[0], order).toBe('e')
    }
    expect(grantTurns(late, { free: 2, order: 'age', now })).toEqual(['e', 'b'])
  })

  it('a turn is one piece: it ends at another piece, an empty queue, or TURN_MAX_BYTES', () => {
    expect(turnEnds(3, 16384, 3)).toBe(false)
    expect(turnEnds(3, 16384, 4)).toBe(true)
    expect(turnEnds(3, 16384, undefined)).toBe(true)
    expect(turnEnds(3, TURN_MAX_BYTES, 3)).toBe(true)
  })

  it('every node ends with every piece under each order and turn count, work-conserving or not, a dying node included', () => {
    const nodes = [seeder(), ...Array.from({ length: 10 }, (_, i) => node(i % 4 === 0 ? C / 4 : C, i === 5 ? { dieAt: 1.5 } : { joinAt: (i * 3) % 5 }))]
    for (const order of TURN_ORDERS) {
      for (const slots of [1, 2]) {
        for (const [saturatedOnly, endOnHave, measured] of [[false, false, false], [true, false, false], [true, true, false], [true, true, true], [false, true, false]]) {
          const what = `${order} ${slots} ${saturatedOnly} ${endOnHave} ${measured}`
          const r = simulate(swarm(nodes, { turns: { slots, order, saturatedOnly, endOnHave, measured } }))
          expect(r.timedOut, what).toBe(false)
          const s = summarize(r)
          expect(s.finished, what).toBe(9)
          expect(s.last, what).toBeGreaterThanOrEqual(lowerBound(4 * MiB, nodes.filter((_, i) => i !== 6)))
        }
      }
    }
  })

  it('turns at the seeder only, held until HAVE: every piece to every node, and the leechers serve at once', () => {
    const nodes = [seeder(), ...Array.from({ length: 8 }, () => node(C))]
    const r = simulate(swarm(nodes, { turns: { slots: 1, order: 'age', endOnHave: true, seederOnly: true } }))
    expect(r.timedOut).toBe(false)
    for (const x of r.nodes) expect(x.pieces).toBe(r.pieceCount)
    // the leechers pass pieces on to each other all the same
    expect(r.nodes.slice(1).reduce((a, x) => a + x.uploaded, 0)).toBeGreaterThan(0)
  })

  it('one turn at a time, one connection each: still every piece to every node', () => {
    const one = simulate(swarm([seeder(), node(C), node(C)], { turns: { slots: 1, order: 'age' }, maxConnections: 1 }))
    expect(one.timedOut).toBe(false)
    for (const x of one.nodes) expect(x.pieces).toBe(one.pieceCount)
  })
})

describe('TurnGate (depth-first serving)', () => {
  const B = BLOCK_SIZE
  function gate(o: { saturated?: () => boolean; holdUntilHave?: boolean } = {}) {
    let t = 1000
    const g = new TurnGate<string>({ slots: 2, now: () => t, holdUntilHave: true, ...o })
    return { g, tick: (ms: number) => (t += ms) }
  }

  it('serves two peers at a time; a third waits until a turn ends and its piece is announced', () => {
    const { g } = gate()
    expect(g.mayServe('a', 1, B)).toBe(true)
    expect(g.mayServe('b', 2, B)).toBe(true)
    expect(g.mayServe('c', 3, B)).toBe(false)
    expect(g.mayServe('c', 3, B)).toBe(false) // still waiting, counted once
    expect(g.waiting).toBe(1)
    expect(g.mayServe('a', 1, B)).toBe(true) // its turn goes on within its piece
    g.idle('a') // all of piece 1 sent: the slot is held until 'a' announces it
    expect(g.admit()).toEqual([])
    g.peerHas('a', 7) // another piece: no change
    expect(g.admit()).toEqual([])
    g.peerHas('a', 1)
    expect(g.admit()).toEqual(['c'])
    expect(g.mayServe('c', 3, B)).toBe(true)
    expect(g.turns).toBe(2)
  })

  it('a turn runs on into the next piece while nobody waits, and yields at a piece boundary when someone does', () => {
    const { g, tick } = gate()
    expect(g.mayServe('a', 1, B)).toBe(true)
    expect(g.mayServe('a', 2, B)).toBe(true) // nobody waits
    expect(g.mayServe('b', 5, B)).toBe(true)
    expect(g.mayServe('c', 6, B)).toBe(false)
    expect(g.mayServe('a', 2, B)).toBe(true) // same piece
    tick(10)
    expect(g.mayServe('a', 3, B)).toBe(false) // next piece with 'c' waiting: 'a' drains piece 2 and waits
    g.peerHas('a', 2)
    expect(g.admit()).toEqual(['c']) // the one waiting longest first
    g.idle('b')
    g.peerHas('b', 5)
    expect(g.admit()).toEqual(['a'])
  })

  it('a turn ends after TURN_MAX_BYTES even within one piece, when someone waits', () => {
    const { g } = gate()
    expect(g.mayServe('a', 1, TURN_MAX_BYTES)).toBe(true)
    expect(g.mayServe('b', 2, B)).toBe(true)
    expect(g.mayServe('c', 3, B)).toBe(false)
    expect(g.mayServe('a', 1, B)).toBe(false)
  })

  it('no slot is held forever: a drain with no HAVE and a long wait end at MAX_TURN_WAIT_MS', () => {
    const { g, tick } = gate()
    g.mayServe('a', 1, B)
    g.mayServe('b', 2, B)
    g.idle('a')
    g.idle('b')
    expect(g.mayServe('c', 3, B)).toBe(false)
    expect(g.nextDeadline()).toBe(1000 + MAX_TURN_WAIT_MS)
    tick(MAX_TURN_WAIT_MS - 1)
    expect(g.admit()).toEqual([])
    tick(1)
    expect(g.admit()).toEqual(['c'])
    expect(g.nextDeadline()).toBeUndefined()
  })

  it('one turn more while the uplink is not saturated; forget frees what a peer held', () => {
    let saturated = true
    const { g } = gate({ saturated: () => saturated })
    g.mayServe('a', 1, B)
    g.mayServe('b', 2, B)
    expect(g.mayServe('c', 3, B)).toBe(false)
    expect(g.admit()).toEqual([])
    saturated = false
    expect(g.admit()).toEqual(['c'])
    expect(g.turns).toBe(3)
    g.forget('a')
    g.forget('c')
    expect(g.turns).toBe(1)
    saturated = true
    expect(g.mayServe('d', 4, B)).toBe(true)
  })

  it('without holding until HAVE, a turn frees its slot the moment its piece is sent', () => {
    const { g } = gate({ holdUntilHave: false })
    g.mayServe('a', 1, B)
    g.mayServe('b', 2, B)
    expect(g.mayServe('c', 3, B)).toBe(false)
    g.idle('a')
    expect(g.admit()).toEqual(['c'])
  })
})

describe('UplinkGauge', () => {
  it('unknown is saturated; then the rate of the last window against the decaying peak', () => {
    let t = 0
    const g = new UplinkGauge(() => t)
    expect(g.saturated()).toBe(true)
    const slot = WINDOW_MS / 10
    // 4 MB per second for a few windows
    for (let k = 0; k < 40; k++) {
      t += slot
      g.add((4e6 * slot) / 1000)
    }
    expect(g.rate()).toBeCloseTo(4e6, -3)
    expect(g.saturated()).toBe(true)
    // half the rate: not saturated
    for (let k = 0; k < 20; k++) {
      t += slot
      g.add((2e6 * slot) / 1000)
    }
    expect(g.saturated()).toBe(false)
    // long enough at half the rate, the peak decays to it
    for (let k = 0; k < (PEAK_HALF_LIFE_MS * 1.2) / slot; k++) {
      t += slot
      g.add((2e6 * slot) / 1000)
    }
    expect(g.saturated()).toBe(true)
  })
})

describe('scenarios', () => {
  const base = { size: 2 * MiB, pieceSize: 64 * 1024, rate: C, seederRate: C, slots: 4, connections: 8, choking: DEFAULT_CHOKING, rtt: RTT, startup: 0.2, seedIdle: 5, death: 'silent' as const, seed: 1 }

  it('T* is the bench formula for equal links, and every node of each scenario finishes no earlier than it', () => {
    const n = 20
    const equal = scenario('equal').build(n, base)
    const S = base.size
    expect(equal.tStar).toBeCloseTo(Math.max(S / C, (n * S) / (C + n * C)), 9)
    expect(equal.unicast).toBeCloseTo((n * S) / C, 9)
    for (const name of ['equal', 'slow', 'late', 'dying', 'seeders']) {
      const b = scenario(name).build(n, base)
      const r = simulate(b.sim)
      const s = summarize(r)
      expect(s.finished, name).toBe(s.counted)
      expect(s.last, name).toBeGreaterThanOrEqual(b.tStar)
      if (name === 'dying') expect(s.dead).toBe(1)
      if (name === 'seeders') expect(r.nodes.filter((x) => x.seeder)).toHaveLength(2)
    }
  })
})

describe('moving a request to an idle peer (request-move.ts, --move-requests)', () => {
  const src = (requests: number, backlogSeconds: number, key?: string) => ({ requests, backlogSeconds, lastMovable: () => key })

  it('takes the movable request of the peer with the longest backlog over the threshold; never from the idle peer, one with a single request, or one with nothing movable', () => {
    const peers = new Map([
      ['idle', src(9, 9, 'i')],
      ['single', src(1, 5, 's')],
      ['short', src(4, MOVE_BACKLOG_SECONDS, 'x')],
      ['long', src(6, 0.8, 'l')],
      ['longer', src(3, 0.9, undefined)],
      ['medium', src(5, 0.4, 'm')],
    ])
    expect(requestToMove(peers.keys(), 'idle', (p) => peers.get(p))).toEqual({ from: 'long', key: 'l' })
    expect(requestToMove(peers.keys(), 'idle', (p) => peers.get(p), 0.85)).toBeUndefined()
    expect(requestToMove(['idle', 'short', 'single'], 'idle', (p) => peers.get(p))).toBeUndefined()
  })

  it('every node ends with every piece with requests moved, a dying node and slow nodes included, and fewer bytes wasted than sent', () => {
    const nodes = [seeder(), ...Array.from({ length: 10 }, (_, i) => node(i % 4 === 0 ? C / 4 : C, i === 5 ? { dieAt: 1.5 } : { joinAt: (i * 3) % 5 }))]
    for (const moveBacklog of [0, MOVE_BACKLOG_SECONDS, 1]) {
      const r = simulate(swarm(nodes, { moveBacklog }))
      expect(r.timedOut, String(moveBacklog)).toBe(false)
      const s = summarize(r)
      expect(s.finished, String(moveBacklog)).toBe(9)
      expect(s.last).toBeGreaterThanOrEqual(lowerBound(4 * MiB, nodes.filter((_, i) => i !== 6)))
      expect(r.wasted).toBeLessThan(0.1 * r.nodes.reduce((a, x) => a + x.downloaded, 0))
    }
  })
})
