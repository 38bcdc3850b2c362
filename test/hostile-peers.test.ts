/**
 * Hostile peers and the peer allow-list, over real TCP on 127.0.0.1. A
 * scriptable peer that frames the wire protocol by hand (helpers/hostile-peer)
 * attacks a deploying Session (then a good seeder finishes the deploy, which
 * must come out exact) and a real `blockswarm seed` process (which must ban
 * it, stay within its memory and still deploy a good peer exactly): bad
 * blocks, out-of-range indexes, oversized length prefixes, wrong bitfields,
 * silence after unchoking, request floods, corrupt data among good data.
 * Then `--allow-peers`: the matcher, incoming connections refused before the
 * handshake, tracker peers outside the list not dialed, a static --peer
 * outside it refused at startup.
 */
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Client as TrackerAnnouncer, Server as TrackerServer } from 'bittorrent-tracker'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { Session, type SessionOptions } from '../src/session/session.js'
import { DEPTH_MIN } from '../src/swarm/piece-downloader.js'
import type { TorrentStatus } from '../src/swarm/status.js'
import { type WireHandler, WireReader } from '../src/swarm/wire-reader.js'
import { ipBytes, PeerFilter } from '../src/swarm/peer-filter.js'
import { buildTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { bitfieldOf, blockRef, hostilePeerId, type Message, MSG, RawPeer } from './helpers/hostile-peer.js'
import { captureOutput, cleanupAll, CLI, cli, freePort, onCleanup, pseudoRandom, startProcess, tempDir, waitExit } from './helpers/sys.js'

const KiB = 1024
const MiB = 1024 * KiB
const BLOCK = 16 * KiB
const PIECE = 256 * KiB

setFlagsFromString('--expose-gc')
/** A full garbage collection, so that memory readings count live buffers only. */
const gc = runInNewContext('gc') as () => void

async function until(what: string, pred: () => boolean, timeoutMs = 30_000, detail: () => string = () => ''): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${detail()}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** An image and a torrent of 16 full 256 KiB pieces over three extents (pieces span extents). */
interface Fixture {
  readonly dir: string
  readonly image: Buffer
  readonly stream: Buffer
  readonly torrent: ExtentTorrent
  readonly raw: Buffer
  readonly gold: string
  readonly torrentFile: string
}

async function fixture(): Promise<Fixture> {
  const dir = await tempDir('bsw-hostile-')
  const image = pseudoRandom(6 * MiB, 77)
  const extents = [
    { offset: 4 * KiB, length: MiB },
    { offset: 2 * MiB, length: 1536 * KiB },
    { offset: 4 * MiB, length: 1536 * KiB },
  ]
  const stream = Buffer.concat(extents.map((e) => image.subarray(e.offset, e.offset + e.length)))
  const hashes: Buffer[] = []
  for (let at = 0; at < stream.length; at += PIECE) hashes.push(createHash('sha1').update(stream.subarray(at, at + PIECE)).digest())
  const { buffer, torrent } = buildTorrent({ name: 'hostile', pieceLength: PIECE, pieces: Buffer.concat(hashes), extents, meta: { gaps: 'dont-care', targetSize: image.length } })
  const gold = join(dir, 'gold.img')
  const torrentFile = join(dir, 'hostile.torrent')
  await writeFile(gold, image)
  await writeFile(torrentFile, buffer)
  return { dir, image, stream, torrent, raw: buffer, gold, torrentFile }
}

/** The extents of `target` that differ from the image (empty: the deploy is exact). */
async function wrongExtents(f: Fixture, target: string): Promise<string[]> {
  const got = await readFile(target)
  return f.torrent.extents.filter((e) => !got.subarray(e.offset, e.offset + e.length).equals(f.image.subarray(e.offset, e.offset + e.length))).map((e) => `0x${e.offset.toString(16)}+${e.length}`)
}

async function startSession(opts: SessionOptions = {}): Promise<Session> {
  const s = await Session.start({ port: await freePort(), bind: '127.0.0.1', ...opts })
  onCleanup(() => s.close())
  return s
}

/** Resolves with the torrent's status once `pred` holds. */
async function waitStatus(session: Session, hash: string, pred: (s: TorrentStatus) => boolean, what: string, timeoutMs = 30_000): Promise<TorrentStatus> {
  let last: TorrentStatus | undefined
  await until(what, () => {
    last = session.get(hash)
    if (last?.state === 'error') throw new Error(`${what}: torrent error: ${last.error}`)
    return last !== undefined && pred(last)
  }, timeoutMs, () => JSON.stringify(last))
  return last!
}

/** A pino logger that keeps its lines (parsed) in memory. */
function memoryLog(level = 'debug') {
  const lines: Record<string, unknown>[] = []
  const log = pino({ level }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) })
  return { log, lines }
}

/** A Session deploying the fixture onto a stale file, with no peer yet (it waits for one). */
async function startLeecher(f: Fixture, opts: SessionOptions = {}) {
  const target = join(f.dir, `target-${Math.random().toString(16).slice(2)}.img`)
  await writeFile(target, Buffer.alloc(f.image.length, 0x5a))
  const session = await startSession({ memory: 4 * MiB, ...opts })
  await session.add(f.raw, { target, seedIdle: 0 })
  await waitStatus(session, f.torrent.infoHash, (s) => s.state === 'downloading', 'the resume check')
  return { session, target }
}

/** A good seeder that dials the leecher; resolves once the leecher is done, with its final status. */
async function finishWithGoodSeeder(f: Fixture, leecher: Session): Promise<TorrentStatus> {
  const seeder = await startSession({ peers: [`127.0.0.1:${leecher.port}`] })
  await seeder.add(f.raw, { target: f.gold, seedingMode: true })
  return waitStatus(leecher, f.torrent.infoHash, (s) => s.done, 'the deploy to finish with the good seeder')
}

/** A hostile peer connected to `port` that has exchanged handshakes for the fixture's torrent. */
async function hostileTo(port: number, f: Fixture, opts: { localAddress?: string } = {}): Promise<RawPeer> {
  const h = await RawPeer.connect(port, opts)
  await h.handshake(f.torrent.infoHash)
  await new Promise<void>((resolve, reject) => {
    if (h.remote) return resolve()
    h.once('handshake', () => resolve())
    h.once('closed', () => reject(new Error('closed before the handshake')))
  })
  return h
}

/** Offer every piece and unchoke, then wait for the first request. */
async function offerAll(h: RawPeer, f: Fixture): Promise<Message> {
  await h.bitfield(bitfieldOf(f.torrent.pieceCount))
  await h.send(MSG.unchoke)
  return h.waitFor('a request', (m) => m.id === MSG.request)
}

afterEach(cleanupAll)

/** A WireReader whose handler ignores every message; `check` decides on block headers. */
function reader(check: WireHandler['checkBlock'] = () => undefined): WireReader {
  const nothing = () => {}
  return new WireReader({ handshake: nothing, signal: nothing, have: nothing, bitfield: nothing, request: nothing, cancel: nothing, checkBlock: check, block: nothing, extended: nothing, reject: nothing })
}

describe('WireReader: the framing and limits of what a peer sends', () => {
  const handshake = Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(48)])
  const framed = (id: number, body: Buffer) => {
    const head = Buffer.alloc(5)
    head.writeUInt32BE(1 + body.length, 0)
    head[4] = id
    return Buffer.concat([head, body])
  }

  it('passes well-formed messages however the stream is cut, and shows each block header', () => {
    const blocks: number[][] = []
    const g = reader((i, o, l) => void blocks.push([i, o, l]))
    g.setPieceCount(20)
    const bytes = Buffer.concat([
      handshake,
      framed(5, Buffer.alloc(3)),
      Buffer.alloc(4), // keep-alive
      framed(1, Buffer.alloc(0)),
      framed(4, Buffer.alloc(4)),
      framed(7, Buffer.concat([Buffer.from([0, 0, 0, 3, 0, 0, 0x40, 0]), Buffer.alloc(BLOCK)])),
      framed(20, Buffer.from('\x00d1:pi6881ee', 'latin1')),
    ])
    for (let at = 0; at < bytes.length; at += 3) expect(g.feed(bytes.subarray(at, at + 3))).toBeUndefined()
    expect(blocks).toEqual([[3, BLOCK, BLOCK]])
  })

  it.each([
    ['a first byte other than 19', Buffer.from([20]), /not a BitTorrent handshake/],
    ['a length prefix of 2^31', Buffer.concat([handshake, Buffer.from([0x80, 0, 0, 0])]), /message length 2147483648 \(over the 131081-byte limit\)/],
    ['a length prefix of 100 MiB', Buffer.concat([handshake, Buffer.from([0x06, 0x40, 0, 0])]), /message length 104857600/],
    ['a have of 9 bytes', Buffer.concat([handshake, framed(4, Buffer.alloc(8))]), /have message of 9 bytes \(it is 5\)/],
    ['a bitfield of the wrong size', Buffer.concat([handshake, framed(5, Buffer.alloc(4))]), /bitfield message of 5 bytes \(this torrent's is 4\)/],
    ['a piece message with a 256 KiB block', Buffer.concat([handshake, framed(7, Buffer.alloc(8 + 256 * KiB))]), /message length 262153 \(over the 131081-byte limit\)/],
    ['a piece message without a block', Buffer.concat([handshake, framed(7, Buffer.alloc(8))]), /piece message of 9 bytes \(a block is 1 byte to 128 KiB\)/],
    ['a request of 14 bytes', Buffer.concat([handshake, framed(6, Buffer.alloc(13))]), /request message of 14 bytes \(it is 13\)/],
  ])('refuses %s', (_name, bytes, why) => {
    const g = reader()
    g.setPieceCount(20)
    expect(g.feed(bytes)).toMatch(why)
  })

  it('refuses a bitfield that was half read when the torrent became known, if its size is wrong', () => {
    const g = reader()
    const header = Buffer.alloc(5)
    header.writeUInt32BE(1 + 500, 0)
    header[4] = 5
    expect(g.feed(Buffer.concat([handshake, header, Buffer.alloc(100)]))).toBeUndefined()
    g.setPieceCount(20)
    expect(g.feed(Buffer.alloc(100))).toMatch(/bitfield message of 501 bytes \(this torrent's is 4\)/)
  })

  it('passes the refusal of a block header on', () => {
    const g = reader((i) => (i > 5 ? `piece ${i} is out of range` : undefined))
    expect(g.feed(Buffer.concat([handshake, framed(7, Buffer.concat([Buffer.from([0, 0, 0, 9, 0, 0, 0, 0]), Buffer.alloc(10)]))]))).toBe('piece 9 is out of range')
  })
})

describe('PeerFilter', () => {
  it('reads IPv4, IPv6, embedded-IPv4 and zoned addresses into one 16-byte form', () => {
    expect(Buffer.from(ipBytes('10.1.2.3')!).toString('hex')).toBe('00000000000000000000ffff0a010203')
    expect(Buffer.from(ipBytes('::ffff:10.1.2.3')!).toString('hex')).toBe('00000000000000000000ffff0a010203')
    expect(Buffer.from(ipBytes('::FFFF:a01:203')!).toString('hex')).toBe('00000000000000000000ffff0a010203')
    expect(Buffer.from(ipBytes('fd00::1:2')!).toString('hex')).toBe('fd000000000000000000000000010002')
    expect(Buffer.from(ipBytes('2001:db8::')!).toString('hex')).toBe('20010db8000000000000000000000000')
    expect(Buffer.from(ipBytes('::')!).toString('hex')).toBe('0'.repeat(32))
    expect(Buffer.from(ipBytes('fe80::1%eth0')!).toString('hex')).toBe('fe800000000000000000000000000001')
    expect(ipBytes('node5.example')).toBeUndefined()
    expect(ipBytes('10.0.0.256')).toBeUndefined()
  })

  it('matches IPv4 and IPv6 networks, and IPv4-mapped addresses as IPv4', () => {
    const f = PeerFilter.parse(['10.0.0.0/8,192.168.1.7', 'fd00::/8', '172.16.0.0/12'])
    expect(f.restricted).toBe(true)
    for (const ok of ['10.0.0.1', '10.255.255.255', '::ffff:10.9.8.7', '192.168.1.7', '::ffff:192.168.1.7', 'fd12:3456::1', '172.31.255.255']) expect(f.allows(ok), ok).toBe(true)
    for (const no of ['11.0.0.1', '192.168.1.8', '::ffff:192.168.1.8', 'fe80::1', '::1', '172.32.0.0', '127.0.0.1', 'node5.example']) expect(f.allows(no), no).toBe(false)
    // a prefix that is not a whole number of bytes
    const odd = PeerFilter.parse(['10.0.0.64/26', '2001:db8:8000::/33'])
    expect(['10.0.0.64', '10.0.0.127'].map((a) => odd.allows(a))).toEqual([true, true])
    expect(['10.0.0.63', '10.0.0.128'].map((a) => odd.allows(a))).toEqual([false, false])
    expect(['2001:db8:8000::1', '2001:db8:ffff::1', '2001:db8:7fff::1'].map((a) => odd.allows(a))).toEqual([true, true, false])
    // an IPv4-mapped network is the IPv4 network; 0.0.0.0/0 is every IPv4 peer and no IPv6 one; ::/0 is all
    const mapped = PeerFilter.parse(['::ffff:10.0.0.0/104'])
    expect([mapped.allows('10.3.3.3'), mapped.allows('11.3.3.3')]).toEqual([true, false])
    const v4 = PeerFilter.parse(['0.0.0.0/0'])
    expect([v4.allows('8.8.8.8'), v4.allows('::ffff:8.8.8.8'), v4.allows('2001:db8::1')]).toEqual([true, true, false])
    const all = PeerFilter.parse(['::/0'])
    expect([all.allows('8.8.8.8'), all.allows('2001:db8::1')]).toEqual([true, true])
    expect(PeerFilter.parse([]).allows('203.0.113.9')).toBe(true)
    expect(String(f)).toBe('10.0.0.0/8,192.168.1.7,fd00::/8,172.16.0.0/12')
  })

  it.each([
    ['10.0.0.0/33', /"10.0.0.0\/33" is not a network: the prefix of an IPv4 network is 0-32, not 33/],
    ['fd00::/129', /the prefix of an IPv6 network is 0-128, not 129/],
    ['10.0.0/8', /"10.0.0" is not an IPv4 or IPv6 address/],
    ['node5/32', /"node5" is not an IPv4 or IPv6 address/],
    ['10.0.0.0/8,,fd00::/8', /an empty network/],
    ['10.0.0.0/-1', /expected ADDRESS or ADDRESS\/PREFIX/],
  ])('refuses %s, saying why', (spec, why) => {
    expect(() => PeerFilter.parse([spec])).toThrow(why)
  })
})

describe('hostile peers against a deploying Session', () => {
  interface Case {
    readonly name: string
    /** What the hostile peer does after the handshakes. */
    readonly act: (h: RawPeer, f: Fixture) => Promise<unknown>
    readonly reason: RegExp
  }
  const cases: Case[] = [
    {
      name: 'a piece message for a piece out of range',
      act: async (h, f) => {
        await offerAll(h, f)
        return h.piece(f.torrent.pieceCount + 7, 0, Buffer.alloc(BLOCK, 1))
      },
      reason: /protocol violation: block of piece 23 of 16/,
    },
    {
      name: 'a block past the end of its piece',
      act: async (h, f) => h.piece(blockRef(await offerAll(h, f)).index, PIECE, Buffer.alloc(BLOCK, 1)),
      reason: /protocol violation: block of 16384 bytes at 262144 of piece \d+ \(262144 bytes\)/,
    },
    {
      name: 'a 32 KiB block where 16 KiB blocks are asked for',
      act: async (h, f) => h.piece(blockRef(await offerAll(h, f)).index, 0, Buffer.alloc(2 * BLOCK, 1)),
      reason: /protocol violation: block of 32768 bytes at 0 of piece \d+/,
    },
    {
      name: 'a block over 128 KiB',
      act: async (h, f) => h.piece(blockRef(await offerAll(h, f)).index, 0, Buffer.alloc(256 * KiB, 1)),
      reason: /protocol violation: message length 262153 \(over the 131081-byte limit\)/,
    },
    {
      name: 'a length prefix of 2^31 (which the wire would read as a keep-alive)',
      act: (h) => h.sendRaw(Buffer.concat([Buffer.from([0x80, 0, 0, 0]), Buffer.from([0, 0, 0, 5, 4, 0, 0, 0, 1])])),
      reason: /protocol violation: message length 2147483648/,
    },
    {
      name: 'a bitfield one byte too long',
      act: (h, f) => h.bitfield(Buffer.alloc(Math.ceil(f.torrent.pieceCount / 8) + 1, 0xff)),
      reason: /protocol violation: bitfield message of 4 bytes \(this torrent's is 3\)/,
    },
    {
      name: 'have for piece 2^32-1 (which the wire reads as -1)',
      act: (h) => h.have(0xffffffff),
      reason: /protocol violation: have for piece 4294967295 of 16/,
    },
    {
      name: 'have for the piece after the last',
      act: (h, f) => h.have(f.torrent.pieceCount),
      reason: /protocol violation: have for piece 16 of 16/,
    },
    {
      name: 'over a thousand blocks nobody asked for',
      act: async (h) => {
        for (let i = 0; i < 1100 && !h.closed; i++) await h.piece(i % 16, 0, Buffer.alloc(BLOCK, 2))
      },
      reason: /protocol violation: 1025 blocks in a row that we had not asked for/,
    },
    {
      name: 'over a thousand requests for pieces the deploy does not have yet',
      act: async (h) => {
        await h.send(MSG.interested)
        await h.waitFor('unchoke', (m) => m.id === MSG.unchoke)
        const burst = Buffer.concat(Array.from({ length: 1100 }, () => Buffer.from([0, 0, 0, 13, 6, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0x40, 0])))
        await h.sendRaw(burst)
      },
      reason: /protocol violation: 1025 requests refused \(the last: piece 2 is not available\); it was told to keep at most 1024 queued/,
    },
  ]

  it.each(cases)('$name: banned with the reason in status; the deploy comes out exact', async ({ act, reason }) => {
    const f = await fixture()
    const { session, target } = await startLeecher(f)
    const h = await hostileTo(session.port, f)
    await act(h, f)
    await h.waitClosed('the hostile peer')
    const banned = await waitStatus(session, f.torrent.infoHash, (s) => s.bans.length > 0, 'the ban')
    expect(banned.bans).toEqual([{ peer: expect.stringMatching(new RegExp(`^127\\.0\\.0\\.1:${h.localPort} -HX0001-[0-9a-f]{24}$`)), reason: expect.stringMatching(reason) }])

    const done = await finishWithGoodSeeder(f, session)
    expect(done.piecesDone).toBe(f.torrent.pieceCount)
    expect(done.bans).toHaveLength(1)
    expect(await wrongExtents(f, target)).toEqual([])
  })

  it('a peer that stalls (like a node that lost power: connected, silent) has its requests moved after the stall timeout, 5 s by default, however long the request timeout; the deploy finishes without waiting to drop it', async () => {
    const f = await fixture()
    const { log, lines } = memoryLog('debug')
    // a request timeout of 10 minutes: only the stall timeout can move the requests within the test's time
    const { session, target } = await startLeecher(f, { requestTimeout: 600_000, log })
    const h = await hostileTo(session.port, f)
    await h.bitfield(bitfieldOf(f.torrent.pieceCount, (i) => i < f.torrent.pieceCount - 1))
    await h.send(MSG.unchoke)
    await h.waitFor('a request', (m) => m.id === MSG.request)
    await h.waitFor('a cancel', (m) => m.id === MSG.cancel)
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'peer stalled: its requests go elsewhere (snubbed)', peer: `127.0.0.1:${h.localPort}`, stallMs: 5000 }))

    const done = await finishWithGoodSeeder(f, session)
    expect(done.piecesDone).toBe(f.torrent.pieceCount)
    // not dropped for its silence (the deploy's end closes it: seedIdle 0)
    expect(lines.filter((l) => l.msg === 'peer answers no requests: disconnected')).toEqual([])
    expect(await wrongExtents(f, target)).toEqual([])
  })

  it('a peer that unchokes and then answers nothing: its requests time out (snubbed, then disconnected) and go to the good seeder; not banned', async () => {
    const f = await fixture()
    const { log, lines } = memoryLog('info')
    const { session, target } = await startLeecher(f, { requestTimeout: 400, log })
    const h = await hostileTo(session.port, f)
    // every piece but the last: not a seed, so nothing but the timeouts closes it
    await h.bitfield(bitfieldOf(f.torrent.pieceCount, (i) => i < f.torrent.pieceCount - 1))
    await h.send(MSG.unchoke)
    await h.waitFor('a request', (m) => m.id === MSG.request)
    // first timeout: its requests are taken back (cancelled) and one is left with it
    await h.waitFor('a cancel', (m) => m.id === MSG.cancel)
    // second timeout: disconnected
    await h.waitClosed('the silent peer')
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'peer answers no requests: disconnected', peer: `127.0.0.1:${h.localPort}`, timeoutMs: 400 }))
    const ids = h.received.map((m) => m.id)
    const firstCancel = ids.indexOf(MSG.cancel)
    const asked = ids.slice(0, firstCancel).filter((id) => id === MSG.request).length
    // a new peer is asked for DEPTH_MIN blocks: the first timed-out request is failed without a cancel, the others are cancelled
    expect(asked).toBe(DEPTH_MIN)
    expect(ids.filter((id) => id === MSG.cancel)).toHaveLength(asked - 1)
    // after the snub: one request at a time
    expect(ids.slice(firstCancel).filter((id) => id === MSG.request)).toHaveLength(1)

    const done = await finishWithGoodSeeder(f, session)
    expect(done.bans).toEqual([])
    expect(await wrongExtents(f, target)).toEqual([])
  })

  it('a peer that has nearly every piece but never unchokes us does not keep a seed from sending them: the deploy completes from the seed', async () => {
    const f = await fixture()
    const { session, target } = await startLeecher(f)
    const h = await hostileTo(session.port, f)
    await h.bitfield(bitfieldOf(f.torrent.pieceCount, (i) => i < f.torrent.pieceCount - 1))
    // a seed that shows its whole bitfield at once (no stripes): from it, a node asks for no piece a peer can send now,
    // and a choking peer cannot
    const seeder = await startSession({ peers: [`127.0.0.1:${session.port}`], choking: 'tit-for-tat' })
    await seeder.add(f.raw, { target: f.gold, seedingMode: true })
    const done = await waitStatus(session, f.torrent.infoHash, (s) => s.done, 'the deploy to finish from the seed')
    expect(done.piecesDone).toBe(f.torrent.pieceCount)
    expect(h.received.filter((m) => m.id === MSG.request)).toEqual([])
    expect(await wrongExtents(f, target)).toEqual([])
  })

  it('corrupt data among good data from two senders: the piece fails, is fetched again from one peer, and only the corrupting peer is banned', async () => {
    const f = await fixture()
    const { session, target } = await startLeecher(f)
    const h = await hostileTo(session.port, f)
    await offerAll(h, f)
    await until('8 requests', () => h.received.filter((m) => m.id === MSG.request).length >= 8)
    const asked = h.received.filter((m) => m.id === MSG.request).map(blockRef)
    const piece = asked[0].index
    expect(asked.slice(0, 8).every((r) => r.index === piece)).toBe(true)
    // the first 8 blocks of the piece: the first corrupt, the other 7 right; then choke (its other requests fail)
    for (const [i, r] of asked.slice(0, 8).entries()) {
      const good = f.stream.subarray(r.index * PIECE + r.begin, r.index * PIECE + r.begin + r.length)
      await h.piece(r.index, r.begin, i === 0 ? pseudoRandom(r.length, 5) : good)
    }
    await h.send(MSG.choke)
    expect(session.get(f.torrent.infoHash)!.bans).toEqual([])

    const done = await finishWithGoodSeeder(f, session)
    expect(done.bans).toEqual([
      { peer: expect.stringMatching(new RegExp(`^127\\.0\\.0\\.1:${h.localPort} -HX0001-`)), reason: `sent a corrupt block of piece ${piece} (found when the piece passed)` },
    ])
    await h.waitClosed('the banned peer')
    expect(await wrongExtents(f, target)).toEqual([])
  })

  it('progress counts each block as it arrives, and the blocks of a piece that fails its hash check count 0 again', async () => {
    const f = await fixture()
    const { session, target } = await startLeecher(f)
    const hash = f.torrent.infoHash
    const h = await hostileTo(session.port, f)
    await offerAll(h, f)
    const requests = () => h.received.filter((m) => m.id === MSG.request).map(blockRef)
    await until('8 requests', () => requests().length >= 8)
    const first = requests().slice(0, 8)
    const piece = first[0].index
    expect(first.every((r) => r.index === piece)).toBe(true)
    const good = (r: { index: number; begin: number; length: number }) => f.stream.subarray(r.index * PIECE + r.begin, r.index * PIECE + r.begin + r.length)
    // each block received counts at once, while the piece is still unverified
    for (const [i, r] of first.entries()) {
      await h.piece(r.index, r.begin, good(r))
      const s = await waitStatus(session, hash, (t) => t.totalDone === (i + 1) * BLOCK, `block ${i + 1} counted`)
      expect(s).toMatchObject({ piecesDone: 0, progress: ((i + 1) * BLOCK) / f.torrent.totalLength })
    }
    // the rest of the piece (asked for as the first blocks came), its last block corrupt: it fails, and nothing of it counts any more
    await until('16 requests', () => requests().length >= 16)
    const rest = requests().slice(8, 16)
    expect(rest.map((r) => [r.index, r.begin])).toEqual(Array.from({ length: 8 }, (_, k) => [piece, (8 + k) * BLOCK]))
    for (const [i, r] of rest.entries()) await h.piece(r.index, r.begin, i === 7 ? pseudoRandom(r.length, 9) : good(r))
    const failed = await waitStatus(session, hash, (t) => t.hashFailures === 1, 'the hash failure')
    expect(failed).toMatchObject({ totalDone: 0, progress: 0, piecesDone: 0 })
    await h.waitClosed('the banned sole sender')

    const done = await finishWithGoodSeeder(f, session)
    expect(done).toMatchObject({ totalDone: f.torrent.totalLength, progress: 1, piecesDone: f.torrent.pieceCount })
    expect(await wrongExtents(f, target)).toEqual([])
  })

  it('a 100 MiB length prefix and a stream of data behind it: cut off at the prefix; live memory stays within --memory plus 16 MiB', async () => {
    const f = await fixture()
    const memory = 4 * MiB
    gc()
    const baseline = process.memoryUsage().arrayBuffers
    const { session, target } = await startLeecher(f, { memory })
    const h = await hostileTo(session.port, f)
    let peak = 0
    const sample = () => {
      gc()
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - baseline)
    }
    const sampler = setInterval(sample, 25)
    let sent = 0
    try {
      const header = Buffer.from([0x06, 0x40, 0, 0, 7])
      const chunk = Buffer.alloc(MiB, 0xee)
      let ok = await h.sendRaw(header)
      // 64 MiB: the wire would have held all of it, waiting for the rest of the 100 MiB message
      while (ok && sent < 64 * MiB) {
        ok = await h.sendRaw(chunk)
        if (ok) sent += chunk.length
        if (sent % (4 * MiB) === 0) sample()
      }
      await h.waitClosed('the hostile peer')
      sample()
    } finally {
      clearInterval(sampler)
    }
    const s = await waitStatus(session, f.torrent.infoHash, (t) => t.bans.length > 0, 'the ban')
    expect(s.bans[0].reason).toBe('protocol violation: message length 104857600 (over the 131081-byte limit)')
    console.log(`100 MiB prefix: the hostile peer got ${(sent / MiB).toFixed(0)} MiB into its socket before it was closed; peak live ArrayBuffer memory ${(peak / MiB).toFixed(1)} MiB over the baseline`)
    expect(peak).toBeLessThan(memory + 16 * MiB)
    await finishWithGoodSeeder(f, session)
    expect(await wrongExtents(f, target)).toEqual([])
  })
})

/** Peak resident memory (VmHWM) of a process, in bytes. */
async function peakRss(pid: number): Promise<number> {
  const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no VmHWM in /proc/${pid}/status`)
  return Number(m[1]) * KiB
}

/** Start `blockswarm seed` on 127.0.0.1:`port` and wait until it is seeding. */
async function startSeedProcess(f: Fixture, port: number, extra: string[] = []) {
  const child = startProcess(process.execPath, [CLI, 'seed', f.torrentFile, f.gold, '--port', String(port), '--bind', '127.0.0.1', '--log-level', 'warn', ...extra])
  const out = captureOutput(child)
  await until('the seeder to start', () => out.text().includes('opentracker whitelist line') || child.exitCode !== null, 30_000, out.text)
  if (child.exitCode !== null) throw new Error(`seed exited ${child.exitCode}:\n${out.text()}`)
  return { child, out }
}

function logLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

describe('hostile peers against a real `blockswarm seed`', () => {
  it('bans a request flood, out-of-range and oversized requests and an oversized frame, stays within its memory, and still deploys a good peer exactly', async () => {
    const f = await fixture()
    const port = await freePort()
    const memory = 16 * MiB
    const seed = await startSeedProcess(f, port, ['--memory', '16M'])
    const rssAtStart = await peakRss(seed.child.pid!)
    const bans = () => logLines(seed.out.text()).filter((l) => l.msg === 'peer banned')
    const banOf = async (h: RawPeer) => {
      await until(`the ban of 127.0.0.1:${h.localPort}`, () => bans().some((b) => String(b.peer).startsWith(`127.0.0.1:${h.localPort} `)), 30_000, seed.out.text)
      await h.waitClosed(`the connection of 127.0.0.1:${h.localPort}`)
      return String(bans().find((b) => String(b.peer).startsWith(`127.0.0.1:${h.localPort} `))!.reason)
    }
    const unchoked = async () => {
      const h = await hostileTo(port, f)
      await h.send(MSG.interested)
      await h.waitFor('unchoke', (m) => m.id === MSG.unchoke)
      return h
    }

    // thousands of requests for real blocks, never reading what comes back
    const flood = await unchoked()
    flood.socket.pause()
    const requests: Buffer[] = []
    for (let i = 0; i < 6000; i++) {
      const r = Buffer.from([0, 0, 0, 13, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0])
      r.writeUInt32BE(i % f.torrent.pieceCount, 5)
      r.writeUInt32BE(((i >> 4) % (PIECE / BLOCK)) * BLOCK, 9)
      requests.push(r)
    }
    await flood.sendRaw(Buffer.concat(requests))
    expect(await banOf(flood)).toMatch(/^protocol violation: 1025 requests refused \(the last: request queue is full\); it was told to keep at most 1024 queued$/)

    const outOfRange = await unchoked()
    await outOfRange.request(f.torrent.pieceCount, 0, BLOCK)
    expect(await banOf(outOfRange)).toBe('protocol violation: request for piece 16 of 16')

    const huge = await unchoked()
    await huge.request(1, 0, 0x80000000)
    expect(await banOf(huge)).toBe('protocol violation: request for 2147483648 bytes at 0 of piece 1 (262144 bytes; a block is at most 128 KiB)')

    // a message that says it is almost 2 GiB long, and 64 MiB of it
    const frame = await hostileTo(port, f)
    const chunk = Buffer.alloc(MiB, 0xab)
    let ok = await frame.sendRaw(Buffer.from([0x7f, 0xff, 0xff, 0xff, 7]))
    for (let sent = 0; ok && sent < 64 * MiB; sent += MiB) ok = await frame.sendRaw(chunk)
    expect(await banOf(frame)).toBe('protocol violation: message length 2147483647 (over the 131081-byte limit)')

    const rss = await peakRss(seed.child.pid!)
    console.log(`seed --memory 16M: peak RSS ${(rssAtStart / MiB).toFixed(0)} MiB when seeding began, ${(rss / MiB).toFixed(0)} MiB after four hostile peers`)
    // what it held when it began seeding, plus its memory setting, plus a margin for garbage not yet collected
    expect(rss).toBeLessThan(rssAtStart + memory + 32 * MiB)

    const target = join(f.dir, 'deployed.img')
    await writeFile(target, Buffer.alloc(f.image.length, 0x33))
    const r = await cli(['deploy', f.torrentFile, target, '--peer', `127.0.0.1:${port}`, '--port', String(await freePort()), '--bind', '127.0.0.1', '--seed-idle', '0', '--json'], { timeoutMs: 60_000 })
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, piecesDone: f.torrent.pieceCount, bans: [] })
    expect(await wrongExtents(f, target)).toEqual([])
    expect(bans()).toHaveLength(4)
    seed.child.kill('SIGTERM')
    expect(await waitExit(seed.child, 15_000)).toBe(0)
  })
})

describe('--allow-peers', () => {
  it('a seeder allowing only 127.0.0.2/32: a connection from 127.0.0.1 is closed before the handshake, one from 127.0.0.2 is served, a deploy from 127.0.0.2 comes out exact', async () => {
    const f = await fixture()
    const port = await freePort()
    await startSeedProcess(f, port, ['--allow-peers', '127.0.0.2/32'])

    const outsider = await RawPeer.connect(port)
    await outsider.handshake(f.torrent.infoHash)
    await outsider.waitClosed('the connection from 127.0.0.1')
    expect(outsider.remote).toBeUndefined()
    expect(outsider.received).toEqual([])

    const insider = await RawPeer.connect(port, { localAddress: '127.0.0.2' })
    await insider.handshake(f.torrent.infoHash)
    // a seed shows its pieces in stripes (seed-stripes.ts): HAVEs of the first pieces, not the whole bitfield
    const shown = await insider.waitFor('the first piece shown', (m) => m.id === MSG.bitfield || m.id === MSG.have)
    expect(insider.remote?.infoHash).toBe(f.torrent.infoHash)
    expect(shown.id).toBe(MSG.have)
    expect(shown.payload.readUInt32BE(0)).toBe(0)
    insider.close()

    const target = join(f.dir, 'deployed.img')
    await writeFile(target, Buffer.alloc(f.image.length, 0x33))
    const r = await cli(['deploy', f.torrentFile, target, '--peer', `127.0.0.1:${port}`, '--bind', '127.0.0.2', '--port', String(await freePort()), '--seed-idle', '0', '--json'], { timeoutMs: 60_000 })
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, piecesDone: f.torrent.pieceCount })
    expect(await wrongExtents(f, target)).toEqual([])
  })

  it('a static --peer outside the list, or a bad network, is refused at startup with a clear message', async () => {
    const f = await fixture()
    const target = join(f.dir, 'never.img')
    const outside = await cli(['deploy', f.torrentFile, target, '--allow-peers', '10.0.0.0/8', '--allow-peers', '127.0.0.2', '--peer', '127.0.0.1:7000', '--port', String(await freePort())])
    expect(outside.code).toBe(1)
    expect(outside.stderr).toContain('--peer 127.0.0.1:7000 is outside --allow-peers 10.0.0.0/8,127.0.0.2: it would never be connected')
    const bad = await cli(['seed', f.torrentFile, f.gold, '--allow-peers', '10.0.0.0/33', '--port', String(await freePort())])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('--allow-peers: "10.0.0.0/33" is not a network: the prefix of an IPv4 network is 0-32, not 33')
    // the library says the same
    await expect(Session.start({ port: 0, bind: '127.0.0.1', allowPeers: ['127.0.0.2/32'], peers: ['127.0.0.1:7000'] })).rejects.toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('127.0.0.1:7000 is outside the allowed peer networks (--allow-peers 127.0.0.2/32)') }),
    )
    const s = await startSession({ allowPeers: ['127.0.0.2/32'] })
    await expect(s.add(f.raw, { target: join(f.dir, 'x.img'), peers: ['127.0.0.3:7000'] })).rejects.toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })

  it('peers from a tracker outside the list are not dialed (a session without the list dials the same peer)', async () => {
    const f = await fixture()
    const trackerPort = await freePort()
    const tracker = new TrackerServer({ http: true, udp: false, ws: false, stats: false, interval: 1000 })
    await new Promise<void>((resolve) => tracker.listen(trackerPort, '127.0.0.1', () => resolve()))
    onCleanup(() => new Promise((r) => tracker.close(() => r())))
    const announce = `http://127.0.0.1:${trackerPort}/announce`

    // a listening peer that records who connects (by the peer id in their handshake), announced to the tracker
    const seen = new Set<string>()
    const sockets = new Set<import('node:net').Socket>()
    const listener = createServer((socket) => {
      sockets.add(socket)
      let got = Buffer.alloc(0)
      socket.on('error', () => {})
      socket.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d])
        if (got.length >= 68) seen.add(got.subarray(48, 68).toString('hex'))
      })
    })
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', () => r()))
    onCleanup(async () => {
      for (const s of sockets) s.destroy()
      await new Promise((r) => listener.close(() => r(undefined)))
    })
    const listenPort = (listener.address() as { port: number }).port
    const announcer = new TrackerAnnouncer({ infoHash: f.torrent.infoHash, peerId: hostilePeerId(), announce: [announce], port: listenPort })
    announcer.on('error', () => {})
    onCleanup(async () => announcer.destroy())
    await new Promise<void>((resolve) => {
      announcer.once('update', () => resolve())
      announcer.start({ left: 0 })
    })

    const filtered = memoryLog('debug')
    const a = await startSession()
    const b = await startSession({ allowPeers: ['127.0.0.2/32'], log: filtered.log })
    for (const [s, name] of [
      [a, 'a'],
      [b, 'b'],
    ] as const) {
      const target = join(f.dir, `tracker-${name}.img`)
      await writeFile(target, Buffer.alloc(f.image.length))
      await s.add(f.raw, { target, trackers: [announce], skipCheck: true })
    }
    const skipped = () => filtered.lines.some((l) => l.msg === 'tracker peer outside --allow-peers: not dialed' && l.peer === `127.0.0.1:${listenPort}`)
    await until('A to connect to the tracker peer and B to skip it', () => seen.has(a.peerId.toString('hex')) && skipped(), 30_000, () => JSON.stringify(filtered.lines.slice(-5)))
    expect(seen.has(b.peerId.toString('hex'))).toBe(false)
  })
})
