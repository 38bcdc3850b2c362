/**
 * Announce over UDP (BEP 15): a connect exchange gives a connection id (good
 * for a minute, so it is reused), then the announce exchange. Each exchange
 * is one datagram each way, matched by its transaction id; the socket is
 * connected to the tracker, so a closed port fails at once (ECONNREFUSED)
 * instead of after the timeout. A lost datagram is retried by the caller's
 * back-off (tracker-client.ts), with a new transaction.
 */
import { randomBytes } from 'node:crypto'
import { createSocket, type Socket } from 'node:dgram'
import { lookup } from 'node:dns/promises'
import { type AnnounceAnswer, type AnnounceOptions, type AnnounceRequest, compactPeers } from './tracker-announce.js'

const PROTOCOL_ID = 0x41727101980n
const ACTION = { connect: 0, announce: 1, error: 3 } as const
const EVENT = { none: 0, completed: 1, started: 2, stopped: 3 } as const
/** A connection id is valid for a minute after the tracker gave it (BEP 15); use it a little less long. */
const CONNECTION_ID_MS = 55_000
/** What an announce answer of only its action and transaction id means. */
const EMPTY_ANNOUNCE = 'the announce answer is empty (opentracker answers so for a torrent it does not track, e.g. one not in its whitelist)'
/** An announce answer's fixed part: action, transaction id, interval, leechers, seeders. */
const ANNOUNCE_HEADER = 20

/** The 16-byte connect request. */
export function connectRequest(transaction: number): Buffer {
  const b = Buffer.alloc(16)
  b.writeBigUInt64BE(PROTOCOL_ID, 0)
  b.writeUInt32BE(ACTION.connect, 8)
  b.writeUInt32BE(transaction, 12)
  return b
}

/** The 98-byte announce request. */
export function announceRequest(connectionId: Buffer, transaction: number, req: AnnounceRequest): Buffer {
  const b = Buffer.alloc(98)
  const u64 = (n: number) => BigInt(Math.max(0, Math.floor(n)))
  connectionId.copy(b, 0)
  b.writeUInt32BE(ACTION.announce, 8)
  b.writeUInt32BE(transaction, 12)
  req.infoHash.copy(b, 16)
  req.peerId.copy(b, 36)
  b.writeBigUInt64BE(u64(req.downloaded), 56)
  b.writeBigUInt64BE(u64(req.left), 64)
  b.writeBigUInt64BE(u64(req.uploaded), 72)
  b.writeUInt32BE(EVENT[req.event ?? 'none'], 80)
  b.writeUInt32BE(0, 84) // IP: the sender's
  b.writeUInt32BE(req.key >>> 0, 88)
  b.writeInt32BE(req.numwant, 92)
  b.writeUInt16BE(req.port, 96)
  return b
}

/** An announce answer → the answer; `family` is the tracker's address family (IPv6 trackers list 18-byte peers). */
export function parseUdpAnnounce(msg: Buffer, family: 4 | 6): AnnounceAnswer {
  if (msg.length < ANNOUNCE_HEADER) throw new Error(`the announce answer is ${msg.length} bytes, shorter than its ${ANNOUNCE_HEADER}-byte header`)
  return {
    interval: msg.readUInt32BE(8),
    incomplete: msg.readUInt32BE(12),
    complete: msg.readUInt32BE(16),
    peers: compactPeers(msg.subarray(ANNOUNCE_HEADER), family === 6 ? 18 : 6, 'the announce answer\'s peer list'),
  }
}

/** One UDP tracker (udp://HOST:PORT[/…]); keeps its connection id between announces. */
export class UdpTracker {
  private connection?: { id: Buffer; until: number }

  constructor(private readonly url: URL) {}

  async announce(req: AnnounceRequest, opts: AnnounceOptions): Promise<AnnounceAnswer> {
    const port = Number(this.url.port)
    if (!port) throw new Error('a udp tracker URL needs a port (udp://HOST:PORT)')
    const deadline = Date.now() + opts.timeoutMs
    const { address, family } = await lookup(this.url.hostname.replace(/^\[|\]$/g, ''))
    const target = family === 6 ? `[${address}]:${port}` : `${address}:${port}`
    const socket = createSocket(family === 6 ? 'udp6' : 'udp4')
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject)
        socket.connect(port, address, () => {
          socket.off('error', reject)
          resolve()
        })
      })
      if (!this.connection || Date.now() > this.connection.until) {
        const tx = randomBytes(4).readUInt32BE(0)
        const answer = await exchange(socket, connectRequest(tx), tx, ACTION.connect, 16, deadline, opts)
        this.connection = { id: Buffer.from(answer.subarray(8, 16)), until: Date.now() + CONNECTION_ID_MS }
      }
      const tx = randomBytes(4).readUInt32BE(0)
      const answer = await exchange(socket, announceRequest(this.connection.id, tx, req), tx, ACTION.announce, ANNOUNCE_HEADER, deadline, opts)
      return parseUdpAnnounce(answer, family === 6 ? 6 : 4)
    } catch (err) {
      // a tracker that forgot us (restarted) refuses the id: the next announce connects anew
      this.connection = undefined
      // the ICMP port-unreachable of a closed port, which a connected socket hears as "recvmsg ECONNREFUSED"
      if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED') throw new Error(`udp ECONNREFUSED ${target}: no tracker listens there`)
      throw err
    } finally {
      socket.close(() => {})
    }
  }
}

/**
 * Send `packet` and wait for the datagram with its transaction id: the
 * answer of `action` (at least `minLength` bytes), or the tracker's error.
 */
function exchange(socket: Socket, packet: Buffer, transaction: number, action: number, minLength: number, deadline: number, opts: AnnounceOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no answer within ${opts.timeoutMs / 1000} s`)), Math.max(0, deadline - Date.now()))
    const abort = () => finish(new Error('announce cancelled'))
    const onMessage = (msg: Buffer) => {
      if (msg.length < 8 || msg.readUInt32BE(4) !== transaction) return // not the answer to this request
      const got = msg.readUInt32BE(0)
      if (got === ACTION.error) finish(new Error(msg.subarray(8).toString('utf8').replace(/\0+$/, '') || 'the tracker answered with an error and no message'))
      else if (got !== action) finish(new Error(`the tracker answered with action ${got} to a request of action ${action}`))
      else if (action === ACTION.announce && msg.length === 8) finish(new Error(EMPTY_ANNOUNCE))
      else if (msg.length < minLength) finish(new Error(`the answer is ${msg.length} bytes, shorter than the ${minLength} of its kind`))
      else finish(undefined, msg)
    }
    const finish = (err: Error | undefined, msg?: Buffer) => {
      clearTimeout(timer)
      socket.off('message', onMessage)
      socket.off('error', finish)
      opts.signal?.removeEventListener('abort', abort)
      if (err) reject(err)
      else resolve(msg!)
    }
    if (opts.signal?.aborted) return abort()
    opts.signal?.addEventListener('abort', abort)
    socket.on('message', onMessage)
    socket.on('error', finish)
    socket.send(packet, (err) => err && finish(err))
  })
}
