/**
 * BlockChannel, the data plane of a peer connection, on a real socket and a
 * real bittorrent-protocol Wire: a peer's byte stream cut at any point (and
 * in a read buffer that is reused, as with onread) still gives whole blocks
 * to the requests that asked for them, the peer's requests and cancels, and
 * the Wire every other message intact.
 */
import { randomBytes } from 'node:crypto'
import { createServer, connect, type Socket } from 'node:net'
import Wire from 'bittorrent-protocol'
import { afterEach, describe, expect, it } from 'vitest'
import { BlockChannel } from '../src/swarm/block-channel.js'
import { cleanupAll, onCleanup } from './helpers/sys.js'

afterEach(cleanupAll)

/** A connected TCP socket on loopback (its other end is discarded unread). */
async function socketPair(): Promise<Socket> {
  const server = createServer((s) => s.resume())
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

const tick = () => new Promise((r) => setImmediate(r))

describe('BlockChannel', () => {
  it('splits a peer stream cut at any point into blocks, requests, cancels and whole Wire messages', async () => {
    const handshake = Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(8), randomBytes(20), randomBytes(20)])
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
        const wire = new Wire()
        const channel = new BlockChannel(await socketPair(), wire)
        const haves: number[] = []
        const events: string[] = []
        let got: Buffer | undefined
        wire.on('have', (i: number) => haves.push(i))
        channel.on('request', (i: number, o: number, l: number) => events.push(`request ${i} ${o} ${l}`))
        channel.on('cancel', (i: number, o: number, l: number) => events.push(`cancel ${i} ${o} ${l}`))
        channel.on('download', (n: number) => events.push(`download ${n}`))
        // one reused read buffer when transient, as a socket with onread has
        const reader = Buffer.alloc(cut)
        const feed = (bytes: Buffer) => {
          for (let at = 0; at < bytes.length; at += cut) {
            const part = bytes.subarray(at, at + cut)
            if (!transient) channel.feed(part)
            else {
              part.copy(reader)
              channel.feed(reader.subarray(0, part.length), true)
              reader.fill(0xee)
            }
          }
        }
        feed(Buffer.concat([handshake, message(1)])) // handshake, unchoke
        await tick()
        expect(wire.peerChoking, `cut ${cut}`).toBe(false)
        wire.unchoke()
        channel.request(2, 16384, 16384, (err, data) => {
          expect(err).toBeNull()
          got = Buffer.from(data!)
        })
        feed(rest)
        await tick()
        expect(got?.equals(block), `block, cut ${cut} transient ${transient}`).toBe(true)
        expect(events).toEqual(['request 1 0 16384', 'download 16384', 'download 100', 'cancel 1 0 16384'])
        expect(haves).toEqual([3, 7])
        channel.close()
        wire.destroy()
      }
    }
  })

  it('fails every request in flight when the peer chokes, and times out a request nobody answers', async () => {
    const wire = new Wire()
    const channel = new BlockChannel(await socketPair(), wire)
    const handshake = Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(8), randomBytes(20), randomBytes(20)])
    channel.feed(Buffer.concat([handshake, message(1)]))
    await tick()
    const errors: string[] = []
    for (let b = 0; b < 3; b++) channel.request(0, b * 16384, 16384, (err) => errors.push(err?.message ?? 'data'))
    channel.feed(message(0)) // choke
    await tick()
    expect(errors).toEqual(['peer is choking', 'peer is choking', 'peer is choking'])

    channel.feed(message(1)) // unchoke
    await tick()
    let timedOut = false
    channel.on('timeout', () => (timedOut = true))
    channel.setTimeout(50)
    channel.request(0, 0, 16384, (err) => errors.push(err?.message ?? 'data'))
    await new Promise((r) => setTimeout(r, 200))
    expect(timedOut).toBe(true)
    expect(errors.at(-1)).toBe('request has timed out')
    channel.close()
    wire.destroy()
  })
})
