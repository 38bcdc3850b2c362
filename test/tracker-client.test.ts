/**
 * blockswarm's own tracker client (src/swarm/tracker-client.ts, announces in
 * tracker-announce.ts and tracker-udp.ts): UDP (BEP 15) against Debian's
 * opentracker, the events a tracker sees (started until one gets through,
 * completed, stopped, regular re-announces), and tracker answers that are
 * wrong in each way a tracker can get them wrong, over HTTP and UDP, each
 * ending in an error that says what was wrong.
 */
import { randomBytes } from 'node:crypto'
import { createSocket, type RemoteInfo } from 'node:dgram'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { makePeerId } from '../src/swarm/client-name.js'
import type { PeerAddress } from '../src/swarm/peer-dialer.js'
import type { AnnounceRequest } from '../src/swarm/tracker-announce.js'
import { announcerFor, TrackerClient, type TrackerClientOptions, type TrackerFailure } from '../src/swarm/tracker-client.js'
import { scrape, startOpentracker } from './helpers/opentracker.js'
import { cleanupAll, freePort, onCleanup, waitFor } from './helpers/sys.js'

afterEach(cleanupAll)

const silent = pino({ level: 'silent' })

function client(opts: Partial<TrackerClientOptions> & Pick<TrackerClientOptions, 'trackers' | 'infoHash' | 'port'>): TrackerClient {
  const c = new TrackerClient({ peerId: makePeerId(), stats: () => ({ uploaded: 0, downloaded: 0, left: 1000 }), wantsUpdate: () => false, log: silent, ...opts })
  onCleanup(() => c.stop())
  return c
}

/** Peers a client reports, as "host:port". */
function peersOf(c: TrackerClient): Set<string> {
  const seen = new Set<string>()
  c.on('peer', (p: PeerAddress) => seen.add(`${p.host}:${p.port}`))
  return seen
}

function failuresOf(c: TrackerClient): TrackerFailure[] {
  const failures: TrackerFailure[] = []
  c.on('failure', (f: TrackerFailure) => failures.push(f))
  return failures
}

const request = (over: Partial<AnnounceRequest> = {}): AnnounceRequest => ({
  infoHash: Buffer.alloc(20, 0xab),
  peerId: Buffer.from('-BS0100-abcdefghijkl'),
  port: 6881,
  uploaded: 0,
  downloaded: 0,
  left: 5,
  event: 'started',
  numwant: 50,
  key: 0x1234abcd,
  ...over,
})

/** The announcer of `url`; fails the test if the scheme is not supported. */
function announcer(url: string) {
  const a = announcerFor(url)
  if ('unsupported' in a) throw new Error(a.unsupported)
  return a
}

/** An HTTP tracker made here: `answer` decides each reply; every query is kept (decoded, and as sent). */
async function fakeHttpTracker(answer: (q: URLSearchParams, res: ServerResponse, req: IncomingMessage) => void) {
  const queries: URLSearchParams[] = []
  const raw: string[] = []
  const server = createServer((req, res) => {
    const q = new URL(req.url!, 'http://x').searchParams
    queries.push(q)
    raw.push(req.url!)
    answer(q, res, req)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  const port = (server.address() as { port: number }).port
  return { url: `http://127.0.0.1:${port}/announce`, queries, raw }
}

/** A UDP tracker made here: `answer` gets each datagram and returns the reply (or nothing). */
async function fakeUdpTracker(answer: (msg: Buffer) => Buffer | undefined) {
  const socket = createSocket('udp4')
  socket.on('message', (msg: Buffer, from: RemoteInfo) => {
    const reply = answer(msg)
    if (reply) socket.send(reply, from.port, from.address)
  })
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()))
  onCleanup(() => new Promise<void>((resolve) => socket.close(() => resolve())))
  return `udp://127.0.0.1:${socket.address().port}/announce`
}

/** The reply to a BEP 15 connect request: action 0, its transaction id, a connection id. */
function connectReply(msg: Buffer): Buffer {
  const b = Buffer.alloc(16)
  b.writeUInt32BE(0, 0)
  msg.copy(b, 4, 12, 16)
  randomBytes(8).copy(b, 8)
  return b
}

describe('UDP announce (BEP 15) against opentracker', () => {
  it('two clients find each other over udp://; completed is counted as a download, stopped takes the peer out', async () => {
    const port = await freePort()
    const infoHash = randomBytes(20).toString('hex')
    const tracker = await startOpentracker(port, [infoHash])
    const url = `udp://127.0.0.1:${port}/announce`
    let leftA = 1000
    const a = client({ trackers: [url], infoHash, port: 40001, stats: () => ({ uploaded: 0, downloaded: 1000 - leftA, left: leftA }), wantsUpdate: () => true, reannounceMs: 200 })
    const b = client({ trackers: [url], infoHash, port: 40002, stats: () => ({ uploaded: 0, downloaded: 0, left: 0 }) })
    const seenByA = peersOf(a)
    const seenByB = peersOf(b)
    const failures = [...failuresOf(a), ...failuresOf(b)]
    a.start()
    await waitFor('A counted by opentracker', async () => (await scrape(port, infoHash)).incomplete === 1, 10_000, tracker.output)
    b.start()
    // B's first answer lists A; A's next re-announce (it wants peers) lists B
    await waitFor('each to hear of the other', () => seenByB.has('127.0.0.1:40001') && seenByA.has('127.0.0.1:40002'), 10_000, () => JSON.stringify([...seenByA, ...seenByB, failures]))
    expect(a.swarmCounts).toEqual({ complete: 1, incomplete: 1 })

    leftA = 0
    a.completed()
    await waitFor('the download to be counted', async () => (await scrape(port, infoHash)).downloaded === 1, 10_000, tracker.output)
    await a.stop()
    expect(await scrape(port, infoHash)).toEqual({ complete: 1, incomplete: 0, downloaded: 1 })
    expect(failures).toEqual([])
    expect(a.error).toBe(undefined)
  })

  it('a torrent opentracker does not serve: its empty answer is named, and retried with back-off', async () => {
    const port = await freePort()
    await startOpentracker(port, [])
    const c = client({ trackers: [`udp://127.0.0.1:${port}`], infoHash: randomBytes(20).toString('hex'), port: 40003, reannounceMs: 100 })
    const failures = failuresOf(c)
    c.start()
    await waitFor('two refusals', () => failures.length >= 2, 10_000, () => JSON.stringify(failures))
    // over UDP opentracker sends no reason (over HTTP it says NOT_AUTHORIZED): only the answer's 8-byte header
    const empty = 'the announce answer is empty (opentracker answers so for a torrent it does not track, e.g. one not in its whitelist)'
    expect(failures[0]).toMatchObject({ error: empty, failures: 1, retryInMs: 100 })
    expect(failures[1]).toMatchObject({ error: empty, failures: 2, retryInMs: 200 })
    expect(c.error).toMatch(new RegExp(`^announce to udp://127\\.0\\.0\\.1:${port} failed \\(\\d+× in a row\\): the announce answer is empty .*; next try in \\d+ s$`))
  })
})

describe('what a tracker sees of a TrackerClient', () => {
  it("'started' again until one gets through, then regular announces, 'completed' once, 'stopped' at the end", async () => {
    let refuse = 1
    const t = await fakeHttpTracker((q, res) => {
      if (refuse > 0 && q.get('event') === 'started') {
        refuse--
        return res.end('d14:failure reason12:not yet, boye')
      }
      res.end(Buffer.from('d8:intervali1e8:completei3e10:incompletei4e5:peers6:\x7f\x00\x00\x01\x1a\xe1e', 'latin1'))
    })
    let wants = true
    const infoHash = 'cd'.repeat(20)
    // a WebSocket tracker in the list is left out, not an error
    const c = client({ trackers: ['wss://tracker.example/announce', t.url], infoHash, port: 40004, reannounceMs: 100, wantsUpdate: () => wants })
    const failures = failuresOf(c)
    const seen = peersOf(c)
    c.start()
    await waitFor('three regular announces after the started one', () => t.queries.filter((q) => !q.get('event')).length >= 3, 10_000, () => t.queries.join('\n'))
    expect(failures.map((f) => [f.tracker, f.error])).toEqual([[t.url, 'not yet, boy']])
    expect(seen).toEqual(new Set(['127.0.0.1:6881']))
    expect(c.swarmCounts).toEqual({ complete: 3, incomplete: 4 })
    expect(c.error).toBe(undefined)
    wants = false
    c.completed()
    await waitFor('completed', () => t.queries.some((q) => q.get('event') === 'completed'), 10_000)
    await c.stop()
    const events = t.queries.map((q) => q.get('event') ?? '').filter((e, i, all) => e !== '' || all[i - 1] !== '')
    expect(events).toEqual(['started', 'started', '', 'completed', 'stopped'])
    // every announce carries the torrent, us and the numbers
    const first = t.queries[0]
    // binary parameters: every byte %-escaped
    expect(/[?&]info_hash=((?:%[0-9a-f]{2}){20})&/.exec(t.raw[0])?.[1].replace(/%/g, '')).toBe(infoHash)
    expect(first.get('peer_id')).toMatch(/^-BS\d{4}-/)
    expect(Object.fromEntries([...first].filter(([k]) => ['port', 'uploaded', 'downloaded', 'left', 'compact', 'numwant'].includes(k)))).toEqual({
      port: '40004',
      uploaded: '0',
      downloaded: '0',
      left: '1000',
      compact: '1',
      numwant: '50',
    })
    expect(new Set(t.queries.map((q) => q.get('key'))).size).toBe(1)
  })

  it('the parameters go after those the URL already has (a passkey), and the tracker id is sent back', async () => {
    const t = await fakeHttpTracker((_q, res) => res.end('d8:intervali60e5:peers0:10:tracker id3:t-1e'))
    const c = client({ trackers: [t.url + '?passkey=s3cr3t'], infoHash: 'ef'.repeat(20), port: 40005, reannounceMs: 50, wantsUpdate: () => true })
    c.start()
    await waitFor('a second announce', () => t.queries.length >= 2, 10_000)
    expect(t.queries[0].get('passkey')).toBe('s3cr3t')
    expect(t.queries[0].get('trackerid')).toBe(null)
    expect(t.queries[1].get('trackerid')).toBe('t-1')
  })
})

describe('tracker answers that are wrong, and what the error says', () => {
  const HTTP_CASES: [what: string, body: string | Buffer, error: string | RegExp][] = [
    ['a web page', '<!DOCTYPE html><html><body>It works!</body></html>', 'the answer is not bencoded: "<!DOCTYPE html><html><body>It works!</body></html>"'],
    ['nothing', '', 'the answer is not bencoded: an empty body'],
    // a negative length makes the bencode package read backwards forever: checked before it is decoded
    ['a negative string length', 'l-3:e', 'the answer is not bencoded: "l-3:e"'],
    ['a list', 'li1ee', 'the answer is not a bencoded dictionary: "li1ee"'],
    ['no interval', 'd5:peers0:e', 'the answer has no interval'],
    ['no peers', 'd8:intervali30ee', 'the answer has no peer list'],
    ['compact peers of 7 bytes', 'd8:intervali30e5:peers7:abcdefge', 'the answer\'s "peers" is 7 bytes, not a multiple of 6'],
    ['a failure reason', 'd14:failure reason23:torrent not registered!e', 'torrent not registered!'],
    ['an empty failure reason', 'd14:failure reason0:e', 'the tracker refused the announce without a reason'],
  ]
  for (const [what, body, error] of HTTP_CASES) {
    it(`HTTP: ${what}`, async () => {
      const t = await fakeHttpTracker((_q, res) => res.end(body))
      await expect(announcer(t.url)(request(), { timeoutMs: 5000 })).rejects.toThrow(error)
    })
  }

  it('HTTP: an error status, with and without a bencoded reason', async () => {
    const t = await fakeHttpTracker((q, res) => {
      res.statusCode = q.get('left') === '1' ? 404 : 503
      res.end(q.get('left') === '1' ? 'd14:failure reason12:unknown hashe' : '<h1>busy</h1>')
    })
    await expect(announcer(t.url)(request({ left: 1 }), { timeoutMs: 5000 })).rejects.toThrow(/^HTTP 404 Not Found: unknown hash$/)
    await expect(announcer(t.url)(request({ left: 2 }), { timeoutMs: 5000 })).rejects.toThrow(/^HTTP 503 Service Unavailable$/)
  })

  it('HTTP: an answer over 1 MiB is cut off; one that never comes times out; a closed port says so', async () => {
    const big = await fakeHttpTracker((_q, res) => res.end(Buffer.alloc(2 * 1024 * 1024, 0x61)))
    await expect(announcer(big.url)(request(), { timeoutMs: 5000 })).rejects.toThrow('the answer is larger than 1024 KiB')
    const mute = await fakeHttpTracker(() => {})
    await expect(announcer(mute.url)(request(), { timeoutMs: 300 })).rejects.toThrow('no answer within 0.3 s')
    const closed = await freePort()
    await expect(announcer(`http://127.0.0.1:${closed}/announce`)(request(), { timeoutMs: 5000 })).rejects.toThrow(`connect ECONNREFUSED 127.0.0.1:${closed}`)
  })

  it('HTTP: peers compact (IPv4 and IPv6) and as dictionaries; unusable entries are left out', async () => {
    const v4 = Buffer.from([10, 0, 0, 5, 0x1a, 0xe1, 10, 0, 0, 6, 0, 0]) // the second has port 0
    const v6 = Buffer.concat([Buffer.from('fd000000000000000000000000000005', 'hex'), Buffer.from([0x1a, 0xe2])])
    const body = Buffer.concat([Buffer.from('d8:intervali30e5:peers12:'), v4, Buffer.from('6:peers618:'), v6, Buffer.from('e')])
    const t = await fakeHttpTracker((_q, res) => res.end(body))
    expect((await announcer(t.url)(request(), { timeoutMs: 5000 })).peers).toEqual([
      { host: '10.0.0.5', port: 6881 },
      { host: 'fd00::5', port: 6882 },
    ])
    const dicts = 'd8:intervali30e5:peersld2:ip8:10.0.0.74:porti6883eed2:ip3:a b4:porti1eed4:porti2eed2:ip5:[::1]4:porti6884eeee'
    const u = await fakeHttpTracker((_q, res) => res.end(dicts))
    expect((await announcer(u.url)(request(), { timeoutMs: 5000 })).peers).toEqual([
      { host: '10.0.0.7', port: 6883 },
      { host: '::1', port: 6884 },
    ])
  })

  it('UDP: an error action, a short answer, another action; a wrong transaction id is not the answer', async () => {
    let announceReply: (msg: Buffer) => Buffer | undefined = () => undefined
    const url = await fakeUdpTracker((msg) => (msg.readUInt32BE(8) === 0 ? connectReply(msg) : announceReply(msg)))
    const reply = (action: number, tx: Buffer, rest: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, action]), tx, rest])
    const cases: [(msg: Buffer) => Buffer | undefined, string][] = [
      [(m) => reply(3, m.subarray(12, 16), Buffer.from('torrent unknown')), 'torrent unknown'],
      [(m) => reply(1, m.subarray(12, 16), Buffer.alloc(4)), 'the answer is 12 bytes, shorter than the 20 of its kind'],
      [(m) => reply(2, m.subarray(12, 16), Buffer.alloc(12)), 'the tracker answered with action 2 to a request of action 1'],
      [(m) => reply(1, m.subarray(12, 16), Buffer.alloc(12 + 7)), "the announce answer's peer list is 7 bytes, not a multiple of 6"],
      [(m) => reply(1, Buffer.from(m.subarray(12, 16).map((x) => x ^ 0xff)), Buffer.alloc(12)), 'no answer within 0.3 s'],
    ]
    const a = announcer(url)
    for (const [answer, error] of cases) {
      announceReply = answer
      await expect(a(request(), { timeoutMs: 300 })).rejects.toThrow(error)
    }
    // and a good one: interval, leechers, seeders, peers
    announceReply = (m) => reply(1, m.subarray(12, 16), Buffer.from([0, 0, 0, 30, 0, 0, 0, 2, 0, 0, 0, 1, 127, 0, 0, 1, 0x1a, 0xe1]))
    expect(await a(request(), { timeoutMs: 5000 })).toEqual({ interval: 30, incomplete: 2, complete: 1, peers: [{ host: '127.0.0.1', port: 6881 }] })
  })

  it('UDP: a closed port fails at once, not after the timeout; a URL without a port is refused', async () => {
    const closed = await freePort()
    await expect(announcer(`udp://127.0.0.1:${closed}`)(request(), { timeoutMs: 60_000 })).rejects.toThrow(`udp ECONNREFUSED 127.0.0.1:${closed}: no tracker listens there`)
    await expect(announcer('udp://127.0.0.1/announce')(request(), { timeoutMs: 5000 })).rejects.toThrow('a udp tracker URL needs a port (udp://HOST:PORT)')
    expect(announcerFor('ws://tracker.example')).toEqual({ unsupported: 'ws trackers are not supported (blockswarm announces over http, https and udp)' })
  })
})
