/**
 * The swarm's pure parts, each on its own: piece picking, the memory budget,
 * choking, bans, rate limiting and slow start, the done policy, block
 * bookkeeping of a piece in progress, blame after a hash failure, and peer
 * address parsing and backoff.
 */
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { ActivePiece, BLOCK_SIZE } from '../src/swarm/active-piece.js'
import { BanList } from '../src/swarm/ban-list.js'
import { chooseUnchoked, type ChokeCandidate } from '../src/swarm/choker.js'
import { Choking } from '../src/swarm/choking.js'
import type { PeerConnection } from '../src/swarm/peer-connection.js'
import type { UploadServer } from '../src/swarm/upload-server.js'
import type { PieceSet } from '../src/swarm/piece-set.js'
import { DIAL_SETTLE_MS, dialLimit } from '../src/swarm/peers.js'
import { type Reveal, REVEAL_ALL_AFTER_MS, SeedStripes } from '../src/swarm/seed-stripes.js'
import { clientName, isOurClient, makePeerId } from '../src/swarm/client-name.js'
import { doneReason } from '../src/swarm/done-policy.js'
import { HashBlame } from '../src/swarm/hash-blame.js'
import { MemoryBudget } from '../src/services/memory-budget.js'
import { parsePeerAddress, PeerDialer } from '../src/swarm/peer-dialer.js'
import { PiecePicker } from '../src/swarm/piece-picker.js'
import { PieceVerifier } from '../src/services/piece-verifier.js'
import { TokenBucket } from '../src/services/rate-limit.js'
import { slowStartCap, tighterLimit } from '../src/services/slow-start.js'

describe('PiecePicker', () => {
  it('picks the rarest piece the peer has, never one in progress or done', () => {
    const p = new PiecePicker(6)
    // availability: piece 0 ×3, 1 ×1, 2 ×2, 3 ×1, 4 ×0, 5 ×2
    for (const [i, n] of [[0, 3], [1, 1], [2, 2], [3, 1], [5, 2]]) for (let k = 0; k < n; k++) p.peerHas(i)
    const all = () => true
    expect([1, 3]).toContain(p.pick(all))
    p.setActive(1)
    p.setDone(3)
    expect([2, 5]).toContain(p.pick(all))
    expect(p.pick((i) => i === 0)).toBe(0)
    expect(p.pick((i) => i === 4)).toBeUndefined() // nobody has 4 as far as the picker knows
    p.peerLost(0)
    p.peerLost(0)
    p.peerLost(0)
    expect(p.pick((i) => i === 0)).toBeUndefined()
    p.setMissing(1)
    expect(p.pick(all)).toBe(1)
    expect(p.missing).toBe(5)
  })

  it('spreads peers over equally rare pieces', () => {
    let seed = 1
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647)
    const p = new PiecePicker(100, false, random)
    for (let i = 0; i < 100; i++) p.peerHas(i)
    const picks = new Set(Array.from({ length: 20 }, () => p.pick(() => true)))
    expect(picks.size).toBeGreaterThan(10)
  })

  it('picks in order when sequential', () => {
    const p = new PiecePicker(5, true)
    for (let i = 0; i < 5; i++) p.peerHas(i)
    p.peerHas(4)
    expect(p.pick(() => true)).toBe(0)
    p.setActive(0)
    p.setDone(1)
    expect(p.pick(() => true)).toBe(2)
    expect(p.pick((i) => i > 3)).toBe(4)
  })
})

describe('MemoryBudget', () => {
  it('hands out buffers only while the budget allows, reuses freed ones, and wakes waiters', async () => {
    const b = new MemoryBudget(3 * 1024)
    const x = b.tryAlloc(1024)!
    const y = b.tryAlloc(1024)!
    const z = b.tryAlloc(1024)!
    expect([x, y, z].every((buf) => buf.length === 1024)).toBe(true)
    expect(b.tryAlloc(1024)).toBeUndefined()
    expect(b.inUse).toBe(3 * 1024)
    b.free(x)
    const again = b.tryAlloc(1024)!
    expect(again).toBe(x) // the freed buffer, not a new allocation
    let woke = false
    const waiting = b.take(2048).then(() => (woke = true))
    b.free(y)
    await Promise.resolve()
    expect(woke).toBe(false)
    b.free(z)
    await waiting
    expect(b.inUse).toBe(1024 + 2048)
  })

  it('lets one piece larger than the budget through when nothing else is held', () => {
    const b = new MemoryBudget(1024)
    const big = b.tryAlloc(4096)
    expect(big?.length).toBe(4096)
    expect(b.tryAlloc(16)).toBeUndefined()
    b.free(big!)
    expect(b.inUse).toBe(0)
    // kept for the next piece of that size (a new one each time is garbage V8 must collect)
    expect(b.tryAlloc(4096)).toBe(big)
    // and dropped when a smaller allocation needs the room
    b.free(big!)
    expect(b.tryAlloc(1024)).not.toBe(big)
    expect(b.inUse).toBe(1024)
  })
})

describe('chooseUnchoked', () => {
  const peer = (name: string, down: number, up: number, interested = true, isSeed = false): ChokeCandidate<string> => ({
    peer: name,
    interested,
    isSeed,
    downloadRate: down,
    uploadRate: up,
  })

  it('unchokes every interested peer when there are enough slots, never seeds or the uninterested', () => {
    const d = chooseUnchoked([peer('a', 1, 1), peer('b', 2, 2, false), peer('s', 9, 9, true, true)], { slots: 3, seeding: false, rotate: false })
    expect([...d.unchoke]).toEqual(['a'])
  })

  it('tit-for-tat while downloading, fastest takers while seeding, plus one optimistic slot', () => {
    const peers = [peer('a', 10, 1), peer('b', 30, 2), peer('c', 20, 3), peer('d', 5, 40), peer('e', 1, 50)]
    const dl = chooseUnchoked(peers, { slots: 3, seeding: false, rotate: true, random: () => 0 })
    expect(dl.unchoke.has('b') && dl.unchoke.has('c')).toBe(true)
    expect(dl.unchoke.size).toBe(3)
    expect(['a', 'd', 'e']).toContain(dl.optimistic)
    const seed = chooseUnchoked(peers, { slots: 3, seeding: true, rotate: true, random: () => 0.99 })
    expect(seed.unchoke.has('e') && seed.unchoke.has('d')).toBe(true)
    // the optimistic peer stays until the rotation
    const next = chooseUnchoked(peers, { slots: 3, seeding: true, rotate: false, optimistic: seed.optimistic })
    expect(next.optimistic).toBe(seed.optimistic)
  })

  it('fleet: under a cap the slots go round-robin, those that waited longest first, whatever their rates', () => {
    // a, b unchoked (b got its slot last); c never had one; d lost its slot at 5; e at 1 and is not interested
    const peers: ChokeCandidate<string>[] = [
      { ...peer('a', 100, 100), unchoked: true, slotChangedAt: 2 },
      { ...peer('b', 90, 90), unchoked: true, slotChangedAt: 8 },
      peer('c', 0, 0),
      { ...peer('d', 1, 1), slotChangedAt: 5 },
      { ...peer('e', 500, 500, false), slotChangedAt: 1 },
    ]
    expect([...chooseUnchoked(peers, { slots: 2, seeding: true, policy: 'fleet', rotate: false }).unchoke].sort()).toEqual(['c', 'd'])
    // a third slot: the unchoked peer that got its slot last keeps it
    expect([...chooseUnchoked(peers, { slots: 3, seeding: false, policy: 'fleet', rotate: false }).unchoke].sort()).toEqual(['b', 'c', 'd'])
    // no optimistic slot under fleet
    expect(chooseUnchoked(peers, { slots: 2, seeding: true, policy: 'fleet', rotate: true }).optimistic).toBeUndefined()
  })
})

describe('Choking', () => {
  /** A connection's choking state as Choking sees it, and what it was sent. */
  class FakePeer {
    amChoking = true
    peerInterested = false
    isSeed = false
    readonly sent: string[] = []
    readonly download = { rate: () => 0 }
    readonly upload = { rate: () => 0 }
    choke(): void {
      this.amChoking = true
      this.sent.push('choke')
    }
    unchoke(): void {
      this.amChoking = false
      this.sent.push('unchoke')
    }
  }
  const setup = (n: number, slots: number) => {
    const peers = Array.from({ length: n }, () => new FakePeer())
    const cleared: FakePeer[] = []
    const uploads = { clear: (p: FakePeer) => cleared.push(p) } as unknown as UploadServer
    const choking = new Choking(() => peers as unknown as PeerConnection[], uploads, { slots, policy: 'fleet', seeding: () => true })
    const as = (p: FakePeer) => p as unknown as PeerConnection
    return { peers, cleared, choking, as }
  }

  it('a peer that loses interest stays unchoked (no CHOKE to race its next INTERESTED) and frees its slot for another', () => {
    const { peers: [a, b], choking, as } = setup(2, 1)
    a.peerInterested = true
    choking.gainedInterest(as(a))
    expect(a.sent).toEqual(['unchoke'])
    b.peerInterested = true
    choking.gainedInterest(as(b))
    expect(b.sent).toEqual([]) // the one slot is a's
    a.peerInterested = false
    choking.lostInterest()
    expect(a.sent).toEqual(['unchoke']) // not choked for losing interest
    expect(b.sent).toEqual(['unchoke']) // it has the slot now
    // a full round leaves the uninterested peer as it is
    choking.tick(1)
    expect(a.sent).toEqual(['unchoke'])
    expect(b.amChoking).toBe(false)
  })

  it('an unchoked peer that wants data again keeps its slot if one is free, else is choked before any request is served', () => {
    const { peers: [a, b], cleared, choking, as } = setup(2, 1)
    a.peerInterested = true
    choking.gainedInterest(as(a))
    a.peerInterested = false
    choking.lostInterest()
    // back with the slot still free: nothing is sent
    a.peerInterested = true
    choking.gainedInterest(as(a))
    expect(a.sent).toEqual(['unchoke'])
    // b takes the slot while a is away; a's return finds it taken
    a.peerInterested = false
    choking.lostInterest()
    b.peerInterested = true
    choking.gainedInterest(as(b))
    expect(b.amChoking).toBe(false)
    a.peerInterested = true
    choking.gainedInterest(as(a))
    expect(a.sent).toEqual(['unchoke', 'choke'])
    expect(cleared).toEqual([a])
  })
})

describe('dialLimit', () => {
  it('dials every peer of a small limit; of a larger one few enough that two ends of every dial stay under the limit (room for latecomers)', () => {
    for (const n of [1, 2, 5, 8, 16]) expect(dialLimit(n)).toBe(n)
    for (const n of [17, 25, 50, 200]) {
      expect(dialLimit(n)).toBeGreaterThanOrEqual(8) // ≥ ln(1000) + a margin distinct sources
      expect(2 * dialLimit(n)).toBeLessThan(n + 1)
    }
  })

  it(`after ${DIAL_SETTLE_MS} ms of dialing, a torrent few peers dialed dials up to twice the 40% less those (the average degree), within the limit`, () => {
    expect(dialLimit(25, 0, DIAL_SETTLE_MS - 1)).toBe(10)
    expect(dialLimit(25, 0, DIAL_SETTLE_MS)).toBe(20)
    expect(dialLimit(25, 3, DIAL_SETTLE_MS)).toBe(17)
    expect(dialLimit(25, 10, 60_000)).toBe(10)
    expect(dialLimit(25, 15, 60_000)).toBe(10)
    expect(dialLimit(16, 0, 60_000)).toBe(16)
    expect(dialLimit(50, 0, 60_000)).toBe(40)
  })
})

describe('SeedStripes', () => {
  const PIECE = 256 * 1024
  const make = (n: number, held: Set<number>, now = { t: 0 }) =>
    new SeedStripes<string>({ pieceCount: n, pieceBytes: () => PIECE, held: (i) => held.has(i), now: () => now.t, stripeBytes: 2 * PIECE })
  const none = () => false
  const shown = (r: Reveal | undefined) => (r && 'have' in r ? [...r.have] : r ? 'all' : [])

  it('shows each peer its own stripe, two pieces ahead of what it asked for, and never one piece to two peers in the first round', () => {
    const s = make(10, new Set())
    expect(shown(s.attach('a', none))).toEqual([0, 1])
    expect(shown(s.attach('b', none))).toEqual([2, 3])
    expect(shown(s.requested('a', 0, none))).toEqual([4])
    expect(shown(s.requested('a', 9, none))).toEqual([]) // not in its stripe: nothing moves
    expect(shown(s.requested('b', 2, none))).toEqual([5])
    // a piece the peer has already needs no showing
    const bHas = (i: number) => i === 6
    expect(shown(s.requested('b', 3, bHas))).toEqual([7])
  })

  it('a peer that announces a shown piece instead of asking for it gets the next; one that leaves returns what nobody holds', () => {
    const held = new Set<number>()
    const s = make(8, held)
    expect(shown(s.attach('a', none))).toEqual([0, 1])
    expect(shown(s.peerHas('a', 1, (i) => i === 1))).toEqual([2])
    held.add(0) // a announced piece 0 to the seeder and to others
    s.detach('a')
    // 1 and 2 were shown to a, which left: shown to the next peer first; 0 is held and spreads from its holder
    expect(shown(s.attach('b', none))).toEqual([1, 2])
  })

  it('shows everything once every piece was shown and is held, or a while after the last was first shown', () => {
    const held = new Set<number>()
    const now = { t: 0 }
    const s = make(4, held, now)
    expect(shown(s.attach('a', none))).toEqual([0, 1])
    expect(shown(s.attach('b', none))).toEqual([2, 3])
    expect(s.tick(() => none).size).toBe(0) // every piece shown, none held yet, no time passed
    now.t = REVEAL_ALL_AFTER_MS
    const out = s.tick(() => none)
    expect(s.revealingAll).toBe(true)
    const toA = out.get('a') as { all: true; except?: PieceSet }
    expect([0, 1, 2, 3].filter((i) => !toA.except!.has(i))).toEqual([2, 3]) // what a was not shown yet
    expect(shown(s.attach('c', none))).toBe('all')
    // and with every piece held, at once
    const s2 = make(2, new Set([0, 1]))
    s2.attach('a', none)
    expect(s2.tick(() => none).get('a')).toMatchObject({ all: true })
  })

  it('once every piece was shown, a peer that asked for all of its stripe is shown what another has not asked for yet, never a held piece', () => {
    const held = new Set<number>()
    const s = make(6, held)
    expect(shown(s.attach('a', none))).toEqual([0, 1])
    expect(shown(s.attach('b', none))).toEqual([2, 3])
    expect(shown(s.attach('c', none))).toEqual([4, 5])
    expect(shown(s.requested('a', 0, none))).toEqual([]) // still one piece of its own to ask for
    expect(shown(s.requested('a', 1, none))).toEqual([3]) // b's piece it would ask for last
    held.add(5) // some peer announced 5: it spreads from there
    expect(shown(s.requested('b', 2, none))).toEqual([4]) // c's unasked piece that nobody holds
    expect(shown(s.requested('b', 4, none))).toEqual([]) // 3 was shown to b already, 5 is held: nothing left to show
  })

  it('does not show everything while peers go on asking for pieces they were shown', () => {
    const now = { t: 0 }
    const s = make(4, new Set(), now)
    s.attach('a', none)
    s.attach('b', none)
    now.t = 2000
    s.requested('a', 0, none)
    now.t = REVEAL_ALL_AFTER_MS
    expect(s.tick(() => none).size).toBe(0) // 1 s since a piece was first asked for
    expect(s.revealingAll).toBe(false)
    now.t = 2000 + REVEAL_ALL_AFTER_MS
    expect(s.tick(() => none).get('b')).toMatchObject({ all: true })
  })

  it('a peer that completes is shown everything at once (so it sees the seeder as a seed)', () => {
    const s = make(6, new Set())
    s.attach('a', none)
    const r = s.peerComplete('a') as { all: true; except?: PieceSet }
    expect(r.all).toBe(true)
    expect([0, 1, 2, 3, 4, 5].filter((i) => !r.except!.has(i))).toEqual([2, 3, 4, 5])
  })
})

describe('BanList', () => {
  it('bans by address+port and peer id, never a whole IP', () => {
    const bans = new BanList()
    const id = Buffer.from('-BS0001-abcdefghijkl').toString('hex')
    bans.ban({ ip: '10.0.0.5', port: 6881, peerId: id }, 'sent a bad piece')
    expect(bans.isBanned({ ip: '10.0.0.5', port: 6881 })).toBe(true)
    expect(bans.isBanned({ ip: '10.0.0.5', port: 50123, peerId: id })).toBe(true) // same process, new source port
    expect(bans.isBanned({ ip: '10.0.0.5', port: 6882, peerId: 'ff'.repeat(20) })).toBe(false) // a neighbour behind the same IP
    expect(bans.isBanned({ ip: '10.0.0.6', port: 6881, peerId: id })).toBe(false)
    expect(bans.list()).toEqual([expect.objectContaining({ peer: '10.0.0.5:6881 -BS0001-6162636465666768696a6b6c', reason: 'sent a bad piece' })])
  })
})

describe('rate limiting', () => {
  it('a token bucket paces bytes to the rate', () => {
    let now = 0
    const tb = new TokenBucket(1024 * 1024, () => now)
    expect(tb.take(256 * 1024)).toBe(0) // the burst
    const wait = tb.take(512 * 1024)
    expect(wait).toBeCloseTo(500, 0)
    now += 1000
    expect(tb.take(256 * 1024)).toBeCloseTo(0, 0)
    expect(new TokenBucket(0).take(1e12)).toBe(0)
  })

  it('slow start ramps the cap step by step, then lifts it', () => {
    const s = { step: 10, period: 1000, steps: 3 }
    expect([0, 999, 1000, 2500, 3000, 99999].map((t) => slowStartCap(s, t))).toEqual([10, 10, 20, 30, 0, 0])
    expect(tighterLimit(0, 5)).toBe(5)
    expect(tighterLimit(7, 5)).toBe(5)
    expect(tighterLimit(7, 0)).toBe(7)
  })
})

describe('doneReason', () => {
  const base = { now: 100_000, size: 1000, uploaded: 0, seedingSince: 90_000, seeds: 1, leechers: 1 }
  it('keeps seeding with no policy', () => {
    expect(doneReason({}, { ...base, uploaded: 1e9, seeds: 5, leechers: 0 })).toBeUndefined()
  })
  it('stops at the ratio, after the idle time, or when every peer is a seed', () => {
    expect(doneReason({ seedRatio: 2 }, { ...base, uploaded: 1999 })).toBeUndefined()
    expect(doneReason({ seedRatio: 2 }, { ...base, uploaded: 2000 })).toMatch(/seed ratio 2/)
    expect(doneReason({ seedIdle: 20 }, { ...base, lastUpload: 95_000 })).toBeUndefined()
    expect(doneReason({ seedIdle: 5 }, { ...base, lastUpload: 95_000 })).toMatch(/no upload for 5 s/)
    expect(doneReason({ seedIdle: 60 }, { ...base, seeds: 2, leechers: 0 })).toMatch(/every known peer \(2\) is a seed/)
    expect(doneReason({ seedIdle: 60 }, { ...base, seeds: 2, leechers: 0, trackerLeechers: 3 })).toBeUndefined()
    expect(doneReason({ seedIdle: 60 }, { ...base, seeds: 0, leechers: 0 })).toBeUndefined()
  })
})

describe('ActivePiece and HashBlame', () => {
  const identity = (port: number) => ({ ip: '127.0.0.1', port, peerId: String(port).padStart(40, '0') })
  const A = { identity: identity(1) }
  const B = { identity: identity(2) }

  it('tracks blocks: missing, requested by several (endgame), received once, dropped back to missing', () => {
    const ap = new ActivePiece<object>(0, 2 * BLOCK_SIZE + 100, Buffer.alloc(2 * BLOCK_SIZE + 100))
    expect(ap.blockCount).toBe(3)
    expect(ap.blockLength(2)).toBe(100)
    expect(ap.nextMissing()).toBe(0)
    ap.markRequested(0, A)
    ap.markRequested(1, A)
    expect(ap.nextMissing()).toBe(2)
    expect(ap.nextDuplicate(B, 2)).toBe(0)
    ap.markRequested(0, B)
    expect(ap.nextDuplicate(B, 2)).toBe(1)
    expect(ap.receive(0, Buffer.alloc(BLOCK_SIZE, 1), B)).toEqual([A])
    expect(ap.receive(0, Buffer.alloc(BLOCK_SIZE, 2), A)).toBeUndefined()
    expect(ap.buffer[0]).toBe(1)
    expect(ap.dropRequest(1, A)).toBe(true)
    expect(ap.nextMissing()).toBe(1)
    expect(ap.complete).toBe(false)
  })

  it('blames the sole sender at once; with several senders, only those whose blocks differ from the good piece', () => {
    const good = Buffer.alloc(3 * BLOCK_SIZE, 7)
    const fill = (ap: ActivePiece<typeof A>, senders: (typeof A)[], bad: number[]) => {
      for (let b = 0; b < 3; b++) {
        const block = Buffer.from(good.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE))
        if (bad.includes(b)) block[5] ^= 1
        ap.markRequested(b, senders[b])
        ap.receive(b, block, senders[b])
      }
      return ap
    }
    const blame = new HashBlame()
    const solo = fill(new ActivePiece(3, good.length, Buffer.alloc(good.length)), [A, A, A], [1])
    expect(blame.failed(solo, solo.buffer)).toEqual([A.identity])

    const shared = fill(new ActivePiece(4, good.length, Buffer.alloc(good.length)), [A, B, A], [1])
    expect(blame.failed(shared, shared.buffer)).toEqual([])
    expect(blame.isSuspect(4)).toBe(true)
    expect(blame.passed(4, good)).toEqual([B.identity])
    expect(blame.isSuspect(4)).toBe(false)
    expect(createHash('sha1').update(shared.buffer).digest().equals(createHash('sha1').update(good).digest())).toBe(false)
  })
})

describe('PieceVerifier', () => {
  it('hashes on a worker (moving the buffer and handing it back) and on the main thread alike', async () => {
    const data = Buffer.allocUnsafeSlow(1024 * 1024).fill(3)
    const want = createHash('sha1').update(data).digest()
    const worker = new PieceVerifier(1)
    const inline = new PieceVerifier(0)
    try {
      const w = await worker.hash(data)
      expect(w.digest.equals(want)).toBe(true)
      expect(w.data.length).toBe(1024 * 1024)
      expect(w.data[12345]).toBe(3)
      const part = Buffer.alloc(4096, 9).subarray(100, 200) // part of a larger allocation: copied, not moved
      expect((await worker.hash(part)).data).toBe(part)
      expect((await inline.hash(w.data)).digest.equals(want)).toBe(true)
    } finally {
      await worker.close()
      await inline.close()
    }
  })
})

describe('peers', () => {
  it('parses host:port and [v6]:port, refusing anything else by name', () => {
    expect(parsePeerAddress('10.1.2.3:6881')).toEqual({ host: '10.1.2.3', port: 6881 })
    expect(parsePeerAddress('[fd00::5]:6882')).toEqual({ host: 'fd00::5', port: 6882 })
    expect(parsePeerAddress('node7.lab:7000')).toEqual({ host: 'node7.lab', port: 7000 })
    expect(() => parsePeerAddress('10.1.2.3')).toThrow(/"10.1.2.3" is not HOST:PORT/)
    expect(() => parsePeerAddress('10.1.2.3:0')).toThrow(/HOST:PORT/)
  })

  it('dials each address once at a time, backs off after failures, keeps static peers forever', () => {
    let now = 0
    const d = new PeerDialer(() => now)
    d.add({ host: 's', port: 1 }, 'static')
    d.add({ host: 't', port: 2 }, 'tracker')
    const never = () => false
    expect(d.due(10, never).map((a) => a.host)).toEqual(['s', 't'])
    expect(d.due(10, never)).toEqual([])
    for (let i = 0; i < 6; i++) {
      d.closed({ host: 's', port: 1 }, true)
      d.closed({ host: 't', port: 2 }, true)
      now += 60_000
      d.due(10, never)
    }
    expect(d.size).toBe(1) // the tracker peer was dropped after repeated failures; the static one stays
    d.closed({ host: 's', port: 1 }, true)
    expect(d.due(10, never)).toEqual([])
    now += 30_000
    expect(d.due(10, never)).toEqual([{ host: 's', port: 1 }])
  })

  it('names clients from their peer ids', () => {
    expect(clientName(Buffer.from('-TR3000-abcdefghijkl').toString('hex'))).toBe('Transmission 3000')
    expect(clientName(Buffer.from('A2-1-36-0-abcdefghij').toString('hex'))).toBe('aria2 1.36.0')
    expect(clientName(makePeerId().toString('hex'))).toMatch(/^blockswarm \d{4}$/)
    expect(clientName('00'.repeat(20))).toBeUndefined()
  })

  it('tells our own peer ids from other clients (they get a second of their rate as request depth, ours a quarter)', () => {
    expect(isOurClient(makePeerId().toString('hex'))).toBe(true)
    expect(isOurClient(Buffer.from('-TR3000-abcdefghijkl').toString('hex'))).toBe(false)
    expect(isOurClient(Buffer.from('-LT2080-abcdefghijkl').toString('hex'))).toBe(false)
    expect(isOurClient(Buffer.from('A2-1-36-0-abcdefghij').toString('hex'))).toBe(false)
  })
})
