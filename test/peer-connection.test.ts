/**
 * PeerConnection, the one wire layer of a peer, on a real socket: a peer's
 * byte stream cut at any point (and in a read buffer that is reused, as with
 * onread) still gives whole blocks to the requests that asked for them, the
 * peer's requests and cancels, and every other message intact; a choke drops
 * every request in flight, and a request nobody answers times out; an
 * orderly close sends what was queued first.
 */
import { randomBytes } from 'node:crypto'
import { createServer, connect, type Socket } from 'node:net'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { PeerConnection } from '../src/swarm/peer-connection.js'
import { cleanupAll, onCleanup } from './helpers/sys.js'

afterEach(cleanupAll)

/** A connected TCP socket on loopback; its other end goes to `other` (by default, discarded unread). */
async function socketPair(other: (s: Socket) => void = (s) => s.resume()): Promise<Socket> {
  const server = createServer(other)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const port = (server.address() as { port: number }).port
  const socket = connect({ port, host: '127.0.0.1' })
  await new Promise((r) => socket.once('connect', r))
  onCleanup(async () => {
    socket.destroy()
    await new Promise((r) => server.close(r))
  })
  return socket
}

function message(id: number, ...parts: (number | Buffer)[]): Buffer {
  const body = Buffer.concat(parts.map((p) => (typeof p === 'number' ? Buffer.from([p >>> 24, (p >>> 16) & 255, (p >>> 8) & 255, p & 255]) : p)))
  const head = Buffer.alloc(5)
  head.writeUInt32BE(body.length + 1, 0)
  head[4] = id
  return Buffer.concat([head, body])
}

const handshake = () => Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(8), randomBytes(20), randomBytes(20)])

/** A connection that takes any block header, its torrent known (10 pieces) once the handshake is in; drops are recorded. */
async function connection(): Promise<{ conn: PeerConnection; blocks: Map<string, Buffer>; dropped: string[] }> {
  const conn = new PeerConnection(await socketPair(), 'out', '127.0.0.1', 6881)
  onCleanup(async () => conn.close('test over'))
  const blocks = new Map<string, Buffer>()
  const dropped: string[] = []
  conn.once('handshake', () => conn.setTorrent(10, () => undefined))
  conn.setDownloadSink({
    block: (_c, index, offset, data) => void blocks.set(`${index}:${offset}`, Buffer.from(data)),
    dropped: (_c, index, offset) => void dropped.push(`${index}:${offset}`),
  })
  return { conn, blocks, dropped }
}

/** A connected PeerConnection whose other end collects every byte until the FIN or reset. */
async function collected(): Promise<{ conn: PeerConnection; received: Promise<Buffer> }> {
  let resolve: (b: Buffer) => void = () => {}
  const received = new Promise<Buffer>((r) => (resolve = r))
  const socket = await socketPair((s) => {
    const chunks: Buffer[] = []
    s.on('data', (c) => chunks.push(c))
    s.on('error', () => {})
    s.on('close', () => resolve(Buffer.concat(chunks)))
  })
  return { conn: new PeerConnection(socket, 'out', '127.0.0.1', 6881), received }
}

describe('PeerConnection', () => {
  it('an orderly close (both sides seeds) sends what was queued in the same turn, the last HAVE, before its FIN; any other close drops it', async () => {
    const orderly = await collected()
    orderly.conn.have(7)
    orderly.conn.close('both sides are seeds', true)
    expect(await orderly.received).toEqual(message(4, 7))

    const abrupt = await collected()
    abrupt.conn.have(7)
    abrupt.conn.close('banned')
    expect(await abrupt.received).toEqual(Buffer.alloc(0))
  })

  it('a HAVE held back goes out before our next message (a block too), at flushHaves, or before an orderly close', async () => {
    const next = await collected()
    next.conn.haveLater(3)
    next.conn.haveLater(5)
    next.conn.have(7)
    next.conn.close('both sides are seeds', true)
    expect(await next.received).toEqual(Buffer.concat([message(4, 3), message(4, 5), message(4, 7)]))

    const flushed = await collected()
    flushed.conn.haveLater(2)
    flushed.conn.flushHaves()
    flushed.conn.flushHaves() // once only
    flushed.conn.close('both sides are seeds', true)
    expect(await flushed.received).toEqual(message(4, 2))

    const closing = await collected()
    closing.conn.haveLater(9)
    closing.conn.close('both sides are seeds', true)
    expect(await closing.received).toEqual(message(4, 9))

    // a HAVE the peer needs soon waits for the swarm's timer (hasUrgentHaves), or rides with a block we send first
    const block = randomBytes(16384)
    const riding = await collected()
    riding.conn.haveLater(1)
    expect(riding.conn.hasUrgentHaves).toBe(false)
    riding.conn.haveLater(4, true)
    expect(riding.conn.hasUrgentHaves).toBe(true)
    riding.conn.piece(6, 0, block)
    expect(riding.conn.hasUrgentHaves).toBe(false)
    riding.conn.flushHaves() // nothing left
    riding.conn.close('both sides are seeds', true)
    expect(await riding.received).toEqual(Buffer.concat([message(4, 1), message(4, 4), message(7, 6, 0, block)]))
  })

  it('closes a connection once nothing, not even a keep-alive, came from the peer for the idle timeout; our own writes do not hold it off', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance'] })
    onCleanup(async () => void vi.useRealTimers())
    let peer: Socket | undefined
    const socket = await socketPair((s) => {
      peer = s
      s.resume()
    })
    const conn = new PeerConnection(socket, 'out', '127.0.0.1', 6881)
    onCleanup(async () => conn.close('test over'))
    conn.once('handshake', () => conn.setTorrent(10, () => undefined))
    const closed: string[] = []
    conn.on('close', (reason: string) => closed.push(reason))
    /** The peer's bytes, in: wait (real I/O, bounded) until our side has read them. */
    const fromPeer = async (bytes: Buffer): Promise<void> => {
      const want = socket.bytesRead + bytes.length
      peer!.write(bytes)
      for (let k = 0; k < 10_000 && socket.bytesRead < want; k++) await new Promise((r) => setImmediate(r))
      expect(socket.bytesRead).toBe(want)
    }
    for (let k = 0; k < 10_000 && !peer; k++) await new Promise((r) => setImmediate(r))
    await fromPeer(handshake())
    conn.have(1) // we write; that is not the peer being alive
    vi.advanceTimersByTime(140_000)
    expect(closed).toEqual([])
    await fromPeer(Buffer.alloc(4)) // a keep-alive
    vi.advanceTimersByTime(140_000)
    expect(closed).toEqual([]) // 280 s since we connected, 140 s since the keep-alive
    vi.advanceTimersByTime(11_000)
    expect(closed).toEqual(['idle timeout: nothing from the peer for 150 s'])
  })

  it('splits a peer stream cut at any point into blocks, requests, cancels and whole messages', async () => {
    const block = randomBytes(16384)
    const rest = Buffer.concat([
      message(4, 3), // have 3
      message(6, 1, 0, 16384), // request
      Buffer.alloc(4), // keep-alive
      message(7, 2, 16384, block), // the block we asked for
      message(7, 5, 0, randomBytes(100)), // one nobody asked for
      message(8, 1, 0, 16384), // cancel
      message(4, 7), // have 7
    ])
    for (const cut of [1, 3, 13, 17, 100, 4096, 16397, rest.length]) {
      for (const transient of [false, true]) {
        const { conn, blocks } = await connection()
        const haves: number[] = []
        const events: string[] = []
        conn.on('have', (i: number) => haves.push(i))
        conn.on('request', (i: number, o: number, l: number) => events.push(`request ${i} ${o} ${l}`))
        conn.on('cancel', (i: number, o: number, l: number) => events.push(`cancel ${i} ${o} ${l}`))
        conn.on('download', (n: number) => events.push(`download ${n}`))
        // one reused read buffer when transient, as a socket with onread has
        const reader = Buffer.alloc(cut)
        const feed = (bytes: Buffer) => {
          for (let at = 0; at < bytes.length; at += cut) {
            const part = bytes.subarray(at, at + cut)
            if (!transient) conn.received(part)
            else {
              part.copy(reader)
              conn.received(reader.subarray(0, part.length))
              reader.fill(0xee)
            }
          }
        }
        feed(Buffer.concat([handshake(), message(1)])) // handshake, unchoke
        expect(conn.peerChoking, `cut ${cut}`).toBe(false)
        conn.unchoke()
        expect(conn.request(2, 16384, 16384)).toBe(true)
        feed(rest)
        expect(blocks.get(`2:16384`)?.equals(block), `block, cut ${cut} transient ${transient}`).toBe(true)
        expect(events).toEqual(['request 1 0 16384', 'download 16384', 'download 100', 'cancel 1 0 16384'])
        expect(haves).toEqual([3, 7])
        expect(conn.pieces?.count).toBe(2)
        expect(conn.closed).toBe(false)
        conn.close('done')
      }
    }
  })

  it('drops every request in flight when the peer chokes, and times out a request nobody answers', async () => {
    const { conn, dropped } = await connection()
    conn.received(Buffer.concat([handshake(), message(1)]))
    for (let b = 0; b < 3; b++) conn.request(0, b * 16384, 16384)
    expect(conn.requests).toBe(3)
    conn.received(message(0)) // choke
    expect(dropped).toEqual(['0:0', '0:16384', '0:32768'])
    expect(conn.requests).toBe(0)
    expect(conn.request(0, 0, 16384)).toBe(false) // choked: nothing is asked

    conn.received(message(1)) // unchoke
    let timedOut = false
    conn.on('timeout', () => (timedOut = true))
    conn.setRequestTimeout(50)
    conn.request(0, 0, 16384)
    await new Promise((r) => setTimeout(r, 200))
    expect(timedOut).toBe(true)
    expect(dropped.at(-1)).toBe('0:0')
    expect(conn.requests).toBe(0)
  })

  it('a stream that breaks the framing closes the connection as a protocol violation', async () => {
    const { conn } = await connection()
    conn.received(Buffer.concat([handshake(), message(4, 1, 2)])) // a have of 9 bytes
    expect(conn.closed).toBe(true)
    expect(conn.misbehaved).toBe(true)
    expect(conn.closeReason).toMatch(/protocol violation: have message of 9 bytes \(it is 5\)/)
  })
})
