/**
 * The data plane of one peer connection: request, cancel and piece messages
 * are read and written here, on the socket, while the bittorrent-protocol
 * Wire keeps the handshake and every other message (it is handed those
 * bytes unchanged).
 *
 * Why not the Wire: it copies every socket chunk into the partial message it
 * holds, passes each message through a stream (a tick later) and an object
 * per request, and sends each 17-byte request as its own write — together
 * most of a download's CPU and the garbage that drives V8's collections.
 * Here a block that lies within one socket chunk is handed over as a view of
 * it, one split across chunks is gathered in one reused buffer, the requests
 * of a tick leave in one write, and an outgoing block's `sent` callback says
 * when the socket has taken it (so its buffer can be reused).
 *
 * It behaves as the Wire does for these messages without the fast extension
 * (which blockswarm does not offer): a choke fails every request in flight,
 * requests from a peer we choke are ignored, and a request unanswered for
 * the timeout fails the oldest one and emits 'timeout'.
 *
 * Events: 'request' (index, offset, length), 'cancel' (index, offset, length),
 * 'download' (bytes of a block received), 'upload' (bytes of a block sent),
 * 'timeout', 'error' (a malformed data message: the connection must close).
 */
import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import type Wire from 'bittorrent-protocol'

/** A block is handed over as a view that is valid only during the call: copy what you keep. */
export type BlockCallback = (err: Error | null, data?: Uint8Array) => void

interface Pending {
  readonly index: number
  readonly offset: number
  readonly length: number
  readonly cb: BlockCallback
}

const REQUEST = 6
const PIECE = 7
const CANCEL = 8
/** Largest block accepted from a peer (the norm is 16 KiB). */
const MAX_BLOCK = 128 * 1024
/** Requests gathered before a write, at most. */
const REQUEST_BATCH = 256

const enum State {
  Handshake,
  Header,
  Forward,
  Block,
}

export class BlockChannel extends EventEmitter {
  private state = State.Handshake
  /** Bytes left of the handshake, of a forwarded message body, or of a block. */
  private left = 0
  /** The message header being read: length, id, and index/offset(/length) of data messages. */
  private readonly head = Buffer.alloc(17)
  private headHave = 0
  private headNeed = 4
  /** A block split across socket chunks is gathered here. */
  private scratch = Buffer.alloc(0)
  private blockHave = 0
  private blockIndex = 0
  private blockOffset = 0
  private blockLength = 0
  /** Our requests in flight, oldest first (peers answer in order). */
  private readonly pending: Pending[] = []
  /** Request messages not yet written. */
  private requestBatch: Buffer | undefined
  private requestCount = 0
  private flushScheduled = false
  private corked = false
  private timeoutMs = 0
  private timer?: NodeJS.Timeout
  /** When a requested block last came (or requests started), ms. */
  private lastProgress = 0
  private closed = false

  constructor(
    private readonly socket: Socket,
    private readonly wire: Wire,
  ) {
    super()
    wire.on('choke', () => this.failAll(new Error('peer is choking')))
  }

  /** Fail the oldest request and emit 'timeout' when no requested block comes for `ms` (0: never). */
  setTimeout(ms: number): void {
    this.timeoutMs = ms
    clearTimeout(this.timer)
    this.timer = undefined
    this.lastProgress = performance.now()
    this.armTimer()
  }

  // ---------------------------------------------------------------------------
  // Reading

  /** The next bytes from the socket; `transient`: the buffer is reused by the next read, so what the Wire keeps is copied. */
  feed(chunk: Uint8Array, transient = false): void {
    let at = 0
    while (at < chunk.length && !this.closed) {
      switch (this.state) {
        case State.Handshake: {
          // pstrlen, protocol name, reserved bytes, info-hash, peer id: all for the Wire
          if (this.left === 0) this.left = 1 + chunk[at] + 48
          const n = Math.min(this.left, chunk.length - at)
          this.forward(chunk.subarray(at, at + n), transient)
          at += n
          this.left -= n
          if (this.left === 0) this.state = State.Header
          break
        }
        case State.Forward: {
          const n = Math.min(this.left, chunk.length - at)
          this.forward(chunk.subarray(at, at + n), transient)
          at += n
          this.left -= n
          if (this.left === 0) this.state = State.Header
          break
        }
        case State.Header: {
          const n = Math.min(this.headNeed - this.headHave, chunk.length - at)
          for (let i = 0; i < n; i++) this.head[this.headHave + i] = chunk[at + i]
          this.headHave += n
          at += n
          if (this.headHave === this.headNeed) this.headerRead()
          break
        }
        case State.Block: {
          const n = Math.min(this.left, chunk.length - at)
          if (this.blockHave === 0 && n === this.blockLength) {
            this.left = 0
            this.blockRead(chunk.subarray(at, at + n))
          } else {
            if (this.scratch.length < this.blockLength) this.scratch = Buffer.allocUnsafeSlow(this.blockLength)
            this.scratch.set(chunk.subarray(at, at + n), this.blockHave)
            this.blockHave += n
            this.left -= n
            if (this.left === 0) this.blockRead(this.scratch.subarray(0, this.blockLength))
          }
          at += n
          break
        }
      }
    }
  }

  /** Bytes for the Wire (which parses them a tick later). */
  private forward(bytes: Uint8Array, copy: boolean): void {
    this.wire.write(copy ? Buffer.from(bytes) : bytes)
  }

  private headerRead(): void {
    const length = this.head.readUInt32BE(0)
    if (this.headNeed === 4) {
      if (length > 0) {
        this.headNeed = 5
        return
      }
      this.wire.write(Buffer.from(this.head.subarray(0, 4))) // keep-alive
      this.headHave = 0
      return
    }
    const id = this.head[4]
    if (this.headNeed === 5) {
      if (id === PIECE) {
        if (length <= 9 || length - 9 > MAX_BLOCK) return this.fail(`piece message of ${length} bytes`)
        this.headNeed = 13
      } else if (id === REQUEST || id === CANCEL) {
        if (length !== 13) return this.fail(`${id === REQUEST ? 'request' : 'cancel'} message of ${length} bytes (it is 13)`)
        this.headNeed = 17
      } else {
        this.wire.write(Buffer.from(this.head.subarray(0, 5)))
        this.nextMessage()
        this.left = length - 1
        if (this.left > 0) this.state = State.Forward
      }
      return
    }
    const index = this.head.readUInt32BE(5)
    const offset = this.head.readUInt32BE(9)
    this.nextMessage()
    if (id === PIECE) {
      this.blockIndex = index
      this.blockOffset = offset
      this.blockLength = length - 9
      this.blockHave = 0
      this.left = this.blockLength
      this.state = State.Block
      return
    }
    const blockLength = this.head.readUInt32BE(13)
    if (id === CANCEL) {
      this.emit('cancel', index, offset, blockLength)
    } else if (!this.wire.amChoking) {
      this.emit('request', index, offset, blockLength)
    }
  }

  private nextMessage(): void {
    this.headHave = 0
    this.headNeed = 4
    this.state = State.Header
  }

  private blockRead(data: Uint8Array): void {
    this.state = State.Header
    const { blockIndex: index, blockOffset: offset } = this
    const q = this.pending
    let i = 0
    while (i < q.length && !(q[i].index === index && q[i].offset === offset && q[i].length === data.length)) i++
    const req = i < q.length ? q[i] : undefined
    if (req) {
      if (i === 0) q.shift()
      else q.splice(i, 1)
      this.lastProgress = performance.now()
    }
    this.emit('download', data.length)
    req?.cb(null, data)
  }

  private fail(what: string): void {
    this.closed = true
    this.emit('error', new Error(what))
  }

  // ---------------------------------------------------------------------------
  // Requests we make

  /** Ask for a block; `cb` gets it (a view valid during the call) or an error (choked, cancelled, timed out, closed). */
  request(index: number, offset: number, length: number, cb: BlockCallback): void {
    if (this.closed) return cb(new Error('connection is closed'))
    if (this.wire.peerChoking) return cb(new Error('peer is choking'))
    if (this.pending.length === 0) this.lastProgress = performance.now()
    this.pending.push({ index, offset, length, cb })
    this.queueMessage(REQUEST, index, offset, length)
    this.armTimer()
  }

  /** Take back a request: its callback gets an error, and the peer a cancel. */
  cancel(index: number, offset: number, length: number): void {
    const q = this.pending
    const i = q.findIndex((r) => r.index === index && r.offset === offset && r.length === length)
    if (i < 0) return
    const [req] = q.splice(i, 1)
    this.queueMessage(CANCEL, index, offset, length)
    req.cb(new Error('request was cancelled'))
  }

  /** Request and cancel messages of one tick leave in one write. */
  private queueMessage(id: number, index: number, offset: number, length: number): void {
    if (!this.requestBatch || this.requestCount === REQUEST_BATCH) {
      this.flushRequests()
      this.requestBatch = Buffer.allocUnsafe(17 * REQUEST_BATCH)
    }
    const b = this.requestBatch!
    const at = 17 * this.requestCount++
    b.writeUInt32BE(13, at)
    b[at + 4] = id
    b.writeUInt32BE(index, at + 5)
    b.writeUInt32BE(offset, at + 9)
    b.writeUInt32BE(length, at + 13)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(() => {
        this.flushScheduled = false
        this.flushRequests()
      })
    }
  }

  private flushRequests(): void {
    if (this.requestCount > 0 && this.requestBatch && !this.socket.destroyed) {
      this.socket.write(this.requestBatch.subarray(0, 17 * this.requestCount))
    }
    this.requestBatch = undefined
    this.requestCount = 0
  }

  private failAll(err: Error): void {
    const all = this.pending.splice(0)
    for (const req of all) req.cb(err)
  }

  /** Like the Wire's: while requests are in flight and the peer does not choke us, a block must come every `timeoutMs`. */
  private armTimer(): void {
    if (this.timer || this.timeoutMs <= 0 || this.pending.length === 0 || this.closed) return
    const due = this.lastProgress + this.timeoutMs - performance.now()
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, due))
    this.timer.unref()
  }

  private onTimer(): void {
    this.timer = undefined
    if (this.pending.length === 0 || this.wire.peerChoking || this.closed) return
    if (performance.now() - this.lastProgress >= this.timeoutMs) {
      this.lastProgress = performance.now()
      this.pending.shift()!.cb(new Error('request has timed out'))
      this.emit('timeout')
    }
    this.armTimer()
  }

  // ---------------------------------------------------------------------------
  // Blocks we send

  /** Send a block; `sent` is called once the socket has taken (or dropped) its bytes. */
  piece(index: number, offset: number, data: Uint8Array, sent?: () => void): void {
    if (this.closed || this.socket.destroyed) {
      sent?.()
      return
    }
    const head = Buffer.allocUnsafe(13)
    head.writeUInt32BE(9 + data.length, 0)
    head[4] = PIECE
    head.writeUInt32BE(index, 5)
    head.writeUInt32BE(offset, 9)
    // the blocks of a tick leave in one write
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      process.nextTick(() => {
        this.corked = false
        this.socket.uncork()
      })
    }
    this.socket.write(head)
    this.socket.write(data, sent && (() => sent()))
    this.emit('upload', data.length)
  }

  /** The connection closed: fail what is in flight, stop the timer. */
  close(): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.timer)
    this.failAll(new Error('wire was closed'))
  }
}
