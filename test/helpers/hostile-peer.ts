/**
 * A scriptable BitTorrent peer for tests that speaks the peer wire protocol
 * itself over a net socket, framing every message by hand: it can send what
 * no honest client would (a length prefix of 2^31, a bitfield of the wrong
 * size, a block past the end of its piece, thousands of requests) and records
 * everything the other side sends back, so a test can see how the daemon
 * answers. Sockets are closed by cleanupAll().
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { connect, type Socket } from 'node:net'
import { onCleanup } from './sys.js'

import { MSG } from '../../src/swarm/wire-messages.js'

export { MSG }

/** One message from the other side; id -1 is a keep-alive. */
export interface Message {
  readonly id: number
  readonly payload: Buffer
}

export interface BlockRef {
  readonly index: number
  readonly begin: number
  readonly length: number
}

/** A 20-byte peer id with a client tag of our own ("-HX0001-" and random bytes). */
export function hostilePeerId(): Buffer {
  return Buffer.concat([Buffer.from('-HX0001-'), randomBytes(12)])
}

/** A bitfield of `count` pieces (piece 0 is the high bit of byte 0) holding those `has` says. */
export function bitfieldOf(count: number, has: (i: number) => boolean = () => true): Buffer {
  const bits = Buffer.alloc(Math.ceil(count / 8))
  for (let i = 0; i < count; i++) if (has(i)) bits[i >> 3] |= 0x80 >> (i & 7)
  return bits
}

/** index, begin, length of a request, cancel or piece message's payload. */
export function blockRef(m: Message): BlockRef {
  const length = m.id === MSG.piece ? m.payload.length - 8 : m.payload.readUInt32BE(8)
  return { index: m.payload.readUInt32BE(0), begin: m.payload.readUInt32BE(4), length }
}

export class RawPeer extends EventEmitter {
  readonly received: Message[] = []
  /** The other side's handshake. */
  remote?: { infoHash: string; peerId: string }
  closed = false
  /** The local port of this connection (how the daemon sees and names us), kept after it closes. */
  readonly localPort: number
  private buffered = Buffer.alloc(0)

  private constructor(readonly socket: Socket) {
    super()
    this.localPort = socket.localPort ?? 0
    socket.setNoDelay(true)
    socket.on('data', (d: Buffer) => this.onData(d))
    socket.on('error', () => {})
    socket.on('close', () => {
      this.closed = true
      this.emit('closed')
    })
    onCleanup(async () => {
      socket.destroy()
    })
  }

  /** Connect to 127.0.0.1:`port` (from `localAddress` when given, e.g. 127.0.0.2). */
  static connect(port: number, opts: { host?: string; localAddress?: string } = {}): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: opts.host ?? '127.0.0.1', port, localAddress: opts.localAddress })
      socket.once('error', reject)
      socket.once('connect', () => {
        socket.off('error', reject)
        resolve(new RawPeer(socket))
      })
    })
  }


  private onData(d: Buffer): void {
    this.buffered = Buffer.concat([this.buffered, d])
    if (!this.remote) {
      if (this.buffered.length < 68) return
      const hs = this.buffered.subarray(0, 68)
      this.remote = { infoHash: hs.subarray(28, 48).toString('hex'), peerId: hs.subarray(48, 68).toString('hex') }
      this.buffered = this.buffered.subarray(68)
      this.emit('handshake', this.remote)
    }
    while (this.buffered.length >= 4) {
      const len = this.buffered.readUInt32BE(0)
      if (this.buffered.length < 4 + len) return
      const m: Message = len === 0 ? { id: -1, payload: Buffer.alloc(0) } : { id: this.buffered[4], payload: Buffer.from(this.buffered.subarray(5, 4 + len)) }
      this.buffered = this.buffered.subarray(4 + len)
      this.received.push(m)
      this.emit('message', m)
    }
  }

  /** Bytes as they are: for broken framing. Resolves when the socket took them (false if it is closed). */
  sendRaw(bytes: Uint8Array): Promise<boolean> {
    if (this.socket.destroyed) return Promise.resolve(false)
    return new Promise((resolve) => {
      this.socket.write(bytes, (err) => resolve(!err))
    })
  }

  /** A framed message: length prefix, id, payload. */
  send(id: number, ...payload: Uint8Array[]): Promise<boolean> {
    const body = Buffer.concat(payload)
    const head = Buffer.alloc(5)
    head.writeUInt32BE(1 + body.length, 0)
    head[4] = id
    return this.sendRaw(Buffer.concat([head, body]))
  }

  /** Our handshake (with the extension-protocol bit, as real clients set it). */
  handshake(infoHash: string, peerId: Buffer = hostilePeerId()): Promise<boolean> {
    const reserved = Buffer.alloc(8)
    reserved[5] = 0x10
    return this.sendRaw(Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), reserved, Buffer.from(infoHash, 'hex'), peerId]))
  }

  have(index: number): Promise<boolean> {
    return this.send(MSG.have, u32(index))
  }

  bitfield(bits: Uint8Array): Promise<boolean> {
    return this.send(MSG.bitfield, bits)
  }

  request(index: number, begin: number, length: number): Promise<boolean> {
    return this.send(MSG.request, u32(index), u32(begin), u32(length))
  }

  piece(index: number, begin: number, data: Uint8Array): Promise<boolean> {
    return this.send(MSG.piece, u32(index), u32(begin), data)
  }

  /** The first message (received already or to come) that `pred` accepts. */
  waitFor(what: string, pred: (m: Message) => boolean, timeoutMs = 20_000): Promise<Message> {
    const seen = this.received.find(pred)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer)
        this.off('message', onMessage)
        this.off('closed', onClosed)
      }
      const onMessage = (m: Message) => {
        if (!pred(m)) return
        done()
        resolve(m)
      }
      const onClosed = () => {
        done()
        reject(new Error(`waiting for ${what}: the connection was closed; received ids ${this.received.map((m) => m.id).join(',')}`))
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`waiting for ${what}: nothing after ${timeoutMs} ms; received ids ${this.received.map((m) => m.id).join(',')}`))
      }, timeoutMs)
      this.on('message', onMessage)
      this.on('closed', onClosed)
      if (this.closed) onClosed()
    })
  }

  /** Resolves when the other side has closed the connection (rejects after `timeoutMs`). */
  waitClosed(what: string, timeoutMs = 20_000): Promise<void> {
    if (this.closed) return Promise.resolve()
    // a paused socket notices the close only by reading
    this.socket.resume()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: still connected after ${timeoutMs} ms`)), timeoutMs)
      this.once('closed', () => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  close(): void {
    this.socket.destroy()
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0, 0)
  return b
}
