/**
 * One peer: the wire layer for one TCP connection. It frames what the peer
 * sends (WireReader, with its limits), writes what we send, and keeps the
 * protocol's state — who chokes whom, who is interested, the pieces the peer
 * has, what its extended handshake said, and the one record of each block
 * we asked of it and have not received. Callers send with methods, listen
 * to events and ask questions; nothing outside writes its state.
 *
 * Writes: the messages of one tick leave in one socket write (small ones are
 * gathered in one buffer, blocks are corked with them). Reads: socket bytes
 * are fed by hand, so `pauseReads` really stops reading (backpressure when
 * the disk is behind); a dialed socket reads into one reused buffer.
 *
 * Blocks we asked for go to the DownloadSink given by setDownloadSink, as a
 * view valid during the call; a request that ends without its block (choke,
 * cancel, timeout, reject, close) is reported there as dropped. No closure
 * or object is made per block.
 *
 * Events: 'handshake' (infoHash hex, peerId hex), 'extended' (the peer's
 * extended handshake dictionary), 'bitfield' (after a bitfield, 'have'
 * follows for nothing: read `pieces`), 'have' (index, only a piece new to
 * it), 'choke', 'unchoke', 'interested', 'uninterested', 'request' (index,
 * offset, length; only while we unchoke it), 'cancel' (index, offset,
 * length), 'timeout' (no requested block for the request timeout), 'download'
 * and 'upload' (payload bytes), 'drain', 'close' (reason).
 */
import { EventEmitter } from 'node:events'
import { connect, Socket } from 'node:net'
import bencode from 'bencode'
import { describePeer, type PeerIdentity } from './ban-list.js'
import { clientName } from './client-name.js'
import { PieceSet } from './piece-set.js'
import { RateMeter } from './rate-meter.js'
import { BLOCK_SIZE, blockKey, blockOfKey, handshakeMessage, MAX_QUEUED_REQUESTS, MSG, supportsExtended, writeHeader } from './wire-messages.js'
import { type WireHandler, WireReader } from './wire-reader.js'

export const HANDSHAKE_TIMEOUT_MS = 20_000
/** No byte from the peer for this long (keep-alives come every 55 s): the connection is dead. */
export const IDLE_TIMEOUT_MS = 150_000
/** An orderly close (close(reason, true)) waits this long for the peer's FIN before the socket is destroyed. */
export const ORDERLY_CLOSE_MS = 2000
/** No requested block for this long: the peer is snubbing us (--request-timeout). */
export const REQUEST_TIMEOUT_MS = 30_000
/**
 * No requested block for this long while its requests are in flight and it
 * does not choke us: the peer has stalled (--peer-stall-timeout). Its requests go
 * elsewhere at once, one is left with it, and from then on it has the request
 * timeout to send a block before it is dropped. A live peer sends a block
 * every few milliseconds to a second even when it serves a thousand peers;
 * one that lost power sends nothing, and its connection stays open. Waiting
 * the whole request timeout for it cost every node that had asked it 30 s
 * (simulated 5 % power cuts at N = 100-300: last finish 3.3-3.5 x the bound
 * with 30 s, 1.55-1.64 x with 5 s, 1.47-1.62 x with no deaths).
 */
export const STALL_TIMEOUT_MS = 5_000
/** Send a keep-alive when nothing was sent for this long. */
const KEEPALIVE_MS = 55_000
/** Blocks in a row a peer may send unasked (answers to requests we cancelled) before it counts as flooding us. */
const UNREQUESTED_MAX = 1024
/** The small-message buffer: requests, cancels, haves… of one tick. */
const SMALL_BATCH = 17 * 256

/** Where the blocks we asked for go. */
export interface DownloadSink {
  /** A block we asked for; `data` is a view valid during the call. */
  block(conn: PeerConnection, index: number, offset: number, data: Uint8Array): void
  /** A request that ended without its block. */
  dropped(conn: PeerConnection, index: number, offset: number): void
}

/** What the torrent accepts as a block header (range, alignment); undefined, or why not. */
export type BlockCheck = (index: number, offset: number, length: number) => string | undefined

/** What we say in our extended handshake (BEP 10). */
export interface ExtendedFacts {
  /** Our listen port. */
  readonly p: number
  readonly v: string
  readonly reqq: number
}

const requestKey = (index: number, offset: number) => blockKey(index, offset / BLOCK_SIZE)
const offsetOf = (key: number) => blockOfKey(key).block * BLOCK_SIZE
const indexOf = (key: number) => blockOfKey(key).index
const NO_SINK: DownloadSink = { block() {}, dropped() {} }

export class PeerConnection extends EventEmitter {
  private readonly reader: WireReader
  private readonly down = new RateMeter()
  private readonly up = new RateMeter()
  private id?: string
  private port: number
  private peerReqq = 250
  private peerPieces?: PieceSet
  private blockCheck?: BlockCheck
  private sink: DownloadSink = NO_SINK
  /** Our requests in flight: key → length, oldest first. */
  private readonly pending = new Map<number, number>()
  private amChokingFlag = true
  private amInterestedFlag = false
  private peerChokingFlag = true
  private peerInterestedFlag = false
  private extendedOk = false
  private snubbedFlag = false
  private unrequested = 0
  private closedFlag = false
  private reason?: string
  private misbehavedFlag = false
  private readsPaused = false
  private handshakeSent = false
  private handshakeSeen = false
  private ourExtended?: ExtendedFacts
  // writing
  private small: Buffer = Buffer.allocUnsafe(SMALL_BATCH)
  /** HAVEs held back by haveLater. */
  private lateHaves: number[] = []
  private urgentHaves = false
  private smallLength = 0
  private flushScheduled = false
  private corked = false
  private lastSent = performance.now()
  private lastReceived = performance.now()
  private idleTimer: NodeJS.Timeout
  // timers
  private requestTimeoutMs = REQUEST_TIMEOUT_MS
  private stallTimeoutMs = STALL_TIMEOUT_MS
  private requestTimer?: NodeJS.Timeout
  private lastBlockAt = 0
  private readonly handshakeTimer: NodeJS.Timeout
  private keepAlive?: NodeJS.Timeout

  constructor(
    private readonly socket: Socket,
    readonly direction: 'in' | 'out',
    readonly ip: string,
    remotePort: number,
  ) {
    super()
    this.port = remotePort
    this.reader = new WireReader(this.handler())
    socket.setNoDelay(true)
    // not socket.setTimeout: Node refreshes that timer on every read and write
    // (1 % of a swarm node's busy time), and our own keep-alives would hold it off
    this.idleTimer = setTimeout(() => this.onIdleTimer(), IDLE_TIMEOUT_MS)
    this.idleTimer.unref()
    readers.set(socket, this)
    if (!dialed.has(socket)) socket.on('data', (chunk: Buffer) => this.received(chunk))
    socket.on('error', (err) => this.close(`socket error: ${(err as NodeJS.ErrnoException).code ?? err.message}`))
    socket.on('close', () => this.close('connection closed by peer'))
    socket.on('drain', () => this.emit('drain'))
    this.handshakeTimer = setTimeout(() => this.close('no handshake'), HANDSHAKE_TIMEOUT_MS)
    this.handshakeTimer.unref()
  }

  // ---------------------------------------------------------------------------
  // Questions

  /** 40 hex digits, once its handshake came. */
  get peerId(): string | undefined {
    return this.id
  }

  get client(): string | undefined {
    return this.id ? clientName(this.id) : undefined
  }

  /** The peer's listen port when known (dialed, or told in its extended handshake), else its source port. */
  get listenPort(): number {
    return this.port
  }

  get identity(): PeerIdentity {
    return { ip: this.ip, port: this.port, peerId: this.id }
  }

  /** "ip:port" of the peer's listen port (or source port if unknown). */
  get address(): string {
    return describePeer({ ip: this.ip, port: this.port })
  }

  /** Pieces the peer has (its bitfield and haves), once the torrent is known. */
  get pieces(): PieceSet | undefined {
    return this.peerPieces
  }

  get isSeed(): boolean {
    return this.peerPieces?.complete ?? false
  }

  get amChoking(): boolean {
    return this.amChokingFlag
  }

  get amInterested(): boolean {
    return this.amInterestedFlag
  }

  get peerChoking(): boolean {
    return this.peerChokingFlag
  }

  get peerInterested(): boolean {
    return this.peerInterestedFlag
  }

  /** Requests the peer will queue (its extended handshake's "reqq"; 250 if it does not say). */
  get maxRequests(): number {
    return this.peerReqq
  }

  /** Blocks asked of it and not yet received. */
  get requests(): number {
    return this.pending.size
  }

  /** A request timed out (it stalled) and no requested block came since (see snub()). */
  get snubbed(): boolean {
    return this.snubbedFlag
  }

  get download(): RateMeter {
    return this.down
  }

  get upload(): RateMeter {
    return this.up
  }

  /** Bytes queued for the socket and not yet sent. */
  get sendBuffered(): number {
    return this.socket.writableLength
  }

  get closed(): boolean {
    return this.closedFlag
  }

  get closeReason(): string | undefined {
    return this.reason
  }

  /** It broke the protocol (closed by `violation`): the swarm bans it. */
  get misbehaved(): boolean {
    return this.misbehavedFlag
  }

  // ---------------------------------------------------------------------------
  // Set-up by the swarm

  /** The torrent is known: its piece count (bitfield size) and what a block header must be. */
  setTorrent(pieceCount: number, check: BlockCheck): void {
    this.peerPieces = new PieceSet(pieceCount)
    this.blockCheck = check
    this.reader.setPieceCount(pieceCount)
    if (this.reader.failed) this.violation(this.reader.failed)
  }

  setDownloadSink(sink: DownloadSink): void {
    this.sink = sink
  }

  /**
   * Drop the oldest request and emit 'timeout' when no requested block comes
   * for `stallMs` (at most `ms`), or for `ms` once the peer is snubbed (0: never).
   */
  setRequestTimeout(ms: number, stallMs = STALL_TIMEOUT_MS): void {
    this.requestTimeoutMs = ms
    this.stallTimeoutMs = Math.min(stallMs, ms)
    clearTimeout(this.requestTimer)
    this.requestTimer = undefined
    this.lastBlockAt = performance.now()
    this.armRequestTimer()
  }

  /** The swarm judged a timeout the peer's fault: it is snubbed until a requested block comes. */
  snub(): void {
    this.snubbedFlag = true
  }

  // ---------------------------------------------------------------------------
  // Sending

  /** Our handshake, then (if the peer's says it speaks BEP 10, or when it does) our extended handshake. */
  handshake(infoHashHex: string, peerId: Buffer, extended: ExtendedFacts): void {
    if (this.handshakeSent || this.closedFlag) return
    this.handshakeSent = true
    this.ourExtended = extended
    this.write(handshakeMessage(Buffer.from(infoHashHex, 'hex'), peerId))
    if (this.handshakeSeen && this.extendedOk) this.sendExtendedHandshake()
  }

  bitfield(bits: Buffer): void {
    const at = this.smallRoom(5 + bits.length)
    if (at < 0) {
      const b = Buffer.allocUnsafe(5 + bits.length)
      writeHeader(b, 0, MSG.bitfield, bits.length)
      bits.copy(b, 5)
      return this.write(b)
    }
    writeHeader(this.small, at, MSG.bitfield, bits.length)
    bits.copy(this.small, at + 5)
  }

  /** HAVE `index` now (and the ones held back by haveLater, first). */
  have(index: number): void {
    this.flushHaves()
    this.message(MSG.have, index)
  }

  /**
   * HAVE `index` with the next message we send this peer (a request, a
   * HAVE, a choke, a block…), or at flushHaves: for a piece the peer has
   * already, which it will not ask us for (`soon` false: the next tick is
   * soon enough), or one it lacks (`soon`: the swarm's HAVE timer flushes
   * it within HAVE_HOLD_MS). It still hears of it, only not in a system
   * call and a packet of its own (HAVEs were over half of a node's socket
   * writes, each a wake-up of the peer as well).
   */
  haveLater(index: number, soon = false): void {
    this.lateHaves.push(index)
    if (soon) this.urgentHaves = true
  }

  /** A HAVE held by haveLater(…, true) waits: the swarm's HAVE timer is to flush it. */
  get hasUrgentHaves(): boolean {
    return this.urgentHaves
  }

  /** Send the HAVEs held back by haveLater. */
  flushHaves(): void {
    this.urgentHaves = false
    if (this.lateHaves.length === 0) return
    const late = this.lateHaves
    this.lateHaves = []
    for (const i of late) this.message(MSG.have, i)
  }

  choke(): void {
    if (this.amChokingFlag) return
    this.amChokingFlag = true
    this.message(MSG.choke)
  }

  unchoke(): void {
    if (!this.amChokingFlag) return
    this.amChokingFlag = false
    this.message(MSG.unchoke)
  }

  interested(): void {
    if (this.amInterestedFlag) return
    this.amInterestedFlag = true
    this.message(MSG.interested)
  }

  uninterested(): void {
    if (!this.amInterestedFlag) return
    this.amInterestedFlag = false
    this.message(MSG.notInterested)
  }

  /** Ask for a block; false (nothing sent) when closed or choked. It ends at the sink: block or dropped. */
  request(index: number, offset: number, length: number): boolean {
    if (this.closedFlag || this.peerChokingFlag) return false
    if (this.pending.size === 0) this.lastBlockAt = performance.now()
    this.pending.set(requestKey(index, offset), length)
    this.message(MSG.request, index, offset, length)
    this.armRequestTimer()
    return true
  }

  /** Take back a request: the peer gets a cancel, the sink a drop. */
  cancel(index: number, offset: number): void {
    const key = requestKey(index, offset)
    const length = this.pending.get(key)
    if (length === undefined) return
    this.pending.delete(key)
    this.message(MSG.cancel, index, offset, length)
    this.sink.dropped(this, index, offset)
  }

  /** Take back every request in flight. */
  cancelAll(): void {
    for (const [key, length] of [...this.pending]) {
      const index = indexOf(key)
      const offset = offsetOf(key)
      this.pending.delete(key)
      this.message(MSG.cancel, index, offset, length)
      this.sink.dropped(this, index, offset)
    }
  }

  /** Send a block; `sent` is called once the socket has taken (or dropped) its bytes. */
  piece(index: number, offset: number, data: Uint8Array, sent?: () => void): void {
    if (this.closedFlag || this.socket.destroyed) {
      sent?.()
      return
    }
    this.flushHaves()
    this.flushSmall()
    const head = Buffer.allocUnsafe(13)
    writeHeader(head, 0, MSG.piece, 8 + data.length)
    head.writeUInt32BE(index, 5)
    head.writeUInt32BE(offset, 9)
    this.write(head)
    this.socket.write(data, sent && (() => sent()))
    this.up.add(data.length)
    this.emit('upload', data.length)
  }

  pauseReads(): void {
    if (this.readsPaused || this.closedFlag) return
    this.readsPaused = true
    this.socket.pause()
  }

  resumeReads(): void {
    if (!this.readsPaused || this.closedFlag) return
    this.readsPaused = false
    this.socket.resume()
  }

  /** The peer broke the protocol: close, marked as misbehaved (a reason for a ban). */
  violation(what: string): void {
    if (this.closedFlag) return
    this.misbehavedFlag = true
    this.close(`protocol violation: ${what}`)
  }

  /**
   * Close once; every request in flight is dropped, then 'close' is emitted
   * with the reason. `orderly`: what we queued goes out first (our last
   * HAVEs: a node that completes closes its connections to seeds in the same
   * turn as it announces its last piece, and the seeder's fleet view and
   * stripes must see it complete), then a FIN; the socket is destroyed when
   * the peer closes too, or after ORDERLY_CLOSE_MS. Otherwise (a peer that
   * misbehaves, a ban, a timeout) the socket is destroyed at once.
   */
  close(reason: string, orderly = false): void {
    if (this.closedFlag) return
    this.closedFlag = true
    this.reason = reason
    clearTimeout(this.handshakeTimer)
    clearTimeout(this.requestTimer)
    clearTimeout(this.idleTimer)
    clearInterval(this.keepAlive)
    this.dropAll()
    if (orderly && !this.socket.destroyed) {
      this.flushHaves()
      if (this.smallLength > 0) this.flushSmall()
      if (this.corked) {
        this.corked = false
        this.socket.uncork()
      }
      // what it still sends is read and dropped (received() ignores it) until its FIN
      if (this.readsPaused) this.socket.resume()
      this.socket.end()
      const socket = this.socket
      const timer = setTimeout(() => socket.destroy(), ORDERLY_CLOSE_MS)
      timer.unref()
      socket.once('close', () => clearTimeout(timer))
    } else this.socket.destroy()
    this.emit('close', reason)
  }

  // ---------------------------------------------------------------------------
  // Reading

  /** Nothing from the peer, not even a keep-alive, for IDLE_TIMEOUT_MS: it is gone. */
  private onIdleTimer(): void {
    if (this.closedFlag) return
    const quiet = performance.now() - this.lastReceived
    if (quiet >= IDLE_TIMEOUT_MS) return this.close(`idle timeout: nothing from the peer for ${Math.round(quiet / 1000)} s`)
    this.idleTimer = setTimeout(() => this.onIdleTimer(), IDLE_TIMEOUT_MS - quiet)
    this.idleTimer.unref()
  }

  /** Bytes from the socket (a view the next read may reuse: what is kept is copied). */
  received(chunk: Uint8Array): void {
    if (this.closedFlag) return
    this.lastReceived = performance.now()
    const bad = this.reader.feed(chunk)
    if (bad && !this.closedFlag) this.violation(bad)
  }

  private handler(): WireHandler {
    return {
      handshake: (infoHash, peerId, reserved) => {
        clearTimeout(this.handshakeTimer)
        this.handshakeSeen = true
        this.id = peerId.toString('hex')
        this.extendedOk = supportsExtended(reserved)
        this.keepAlive = setInterval(() => this.sendKeepAlive(), KEEPALIVE_MS)
        this.keepAlive.unref()
        if (this.handshakeSent && this.extendedOk) this.sendExtendedHandshake()
        this.emit('handshake', infoHash.toString('hex'), this.id)
      },
      signal: (id) => this.signal(id),
      have: (index) => {
        const pieces = this.torrentPieces('have')
        if (!pieces) return
        // the wire's numbers are unsigned: >>> 0 shows 2^31 and more as sent
        if (index >= pieces.size) return this.violation(`have for piece ${index >>> 0} of ${pieces.size}`)
        if (pieces.add(index)) this.emit('have', index)
      },
      bitfield: (bits) => {
        const pieces = this.torrentPieces('bitfield')
        if (!pieces) return
        // a bitfield normally comes first and once; one that comes later only adds pieces
        const n = pieces.size
        const gained: number[] = []
        for (let i = 0; i < n; i++) if (bits[i >> 3] & (0x80 >> (i & 7)) && pieces.add(i)) gained.push(i)
        this.emit('bitfield', gained)
      },
      request: (index, offset, length) => {
        if (!this.amChokingFlag) this.emit('request', index, offset, length)
      },
      cancel: (index, offset, length) => this.emit('cancel', index, offset, length),
      checkBlock: (index, offset, length) => {
        if (!this.blockCheck) return 'a block before the handshake named a torrent'
        const refused = this.blockCheck(index, offset, length)
        if (refused !== undefined) return refused
        if (this.pending.get(requestKey(index, offset)) === length) {
          if (this.snubbedFlag) {
            // the stall timeout again, not the rest of the longer wait armed for a snubbed peer
            this.snubbedFlag = false
            clearTimeout(this.requestTimer)
            this.requestTimer = undefined
          }
          this.unrequested = 0
        } else if (++this.unrequested > UNREQUESTED_MAX) {
          return `${this.unrequested} blocks in a row that we had not asked for`
        }
        return undefined
      },
      block: (index, offset, data) => {
        this.down.add(data.length)
        this.emit('download', data.length)
        const key = requestKey(index, offset)
        if (this.pending.get(key) !== data.length) return // cancelled meanwhile, or never asked: counted, not used
        this.pending.delete(key)
        this.lastBlockAt = performance.now()
        this.armRequestTimer()
        this.sink.block(this, index, offset, data)
      },
      extended: (ext, payload) => {
        if (ext !== 0) return // we offer no extension messages
        let info: Record<string, unknown>
        try {
          info = bencode.decode(Buffer.from(payload)) as Record<string, unknown>
        } catch {
          return // a malformed extended handshake only loses its hints
        }
        if (typeof info.reqq === 'number' && info.reqq >= 1) this.peerReqq = Math.min(Math.floor(info.reqq), 4 * MAX_QUEUED_REQUESTS)
        const p = info.p
        if (this.direction === 'in' && typeof p === 'number' && p > 0 && p < 65536) this.port = p
        this.emit('extended', info)
      },
      reject: (index, offset, length) => {
        const key = requestKey(index, offset)
        if (this.pending.get(key) !== length) return
        this.pending.delete(key)
        this.sink.dropped(this, index, offset)
      },
    }
  }

  private torrentPieces(what: string): PieceSet | undefined {
    if (this.peerPieces) return this.peerPieces
    this.violation(`${what} before the handshake named a torrent`)
    return undefined
  }

  private signal(id: number): void {
    switch (id) {
      case MSG.choke:
        if (this.peerChokingFlag) return
        this.peerChokingFlag = true
        // without the fast extension a choke discards every request in flight
        this.dropAll()
        this.emit('choke')
        return
      case MSG.unchoke:
        if (!this.peerChokingFlag) return
        this.peerChokingFlag = false
        this.emit('unchoke')
        return
      case MSG.interested:
        if (this.peerInterestedFlag) return
        this.peerInterestedFlag = true
        this.emit('interested')
        return
      case MSG.notInterested:
        if (!this.peerInterestedFlag) return
        this.peerInterestedFlag = false
        this.emit('uninterested')
        return
      case MSG.haveAll: {
        const pieces = this.torrentPieces('have all')
        if (!pieces) return
        const gained: number[] = []
        for (let i = 0; i < pieces.size; i++) if (pieces.add(i)) gained.push(i)
        this.emit('bitfield', gained)
        return
      }
      // have none: nothing to record
    }
  }

  private dropAll(): void {
    if (this.pending.size === 0) return
    const all = [...this.pending.keys()]
    this.pending.clear()
    for (const key of all) this.sink.dropped(this, indexOf(key), offsetOf(key))
  }

  /** The wait for a requested block before a timeout: the stall timeout, or the request timeout once snubbed. */
  private get timeoutMs(): number {
    return this.snubbedFlag ? this.requestTimeoutMs : this.stallTimeoutMs
  }

  /** While requests are in flight and the peer does not choke us, a requested block must come within timeoutMs. */
  private armRequestTimer(): void {
    if (this.requestTimer || this.timeoutMs <= 0 || this.pending.size === 0 || this.closedFlag) return
    const due = this.lastBlockAt + this.timeoutMs - performance.now()
    this.requestTimer = setTimeout(() => this.onRequestTimer(), Math.max(0, due))
    this.requestTimer.unref()
  }

  private onRequestTimer(): void {
    this.requestTimer = undefined
    if (this.pending.size === 0 || this.peerChokingFlag || this.closedFlag) return
    if (performance.now() - this.lastBlockAt >= this.timeoutMs) {
      this.lastBlockAt = performance.now()
      const [key] = this.pending.keys()
      this.pending.delete(key)
      this.sink.dropped(this, indexOf(key), offsetOf(key))
      this.emit('timeout')
    }
    this.armRequestTimer()
  }

  // ---------------------------------------------------------------------------
  // Writing

  private sendExtendedHandshake(): void {
    const facts = this.ourExtended
    if (!facts) return
    const body = Buffer.from(bencode.encode({ m: {}, p: facts.p, v: facts.v, reqq: facts.reqq }))
    const b = Buffer.allocUnsafe(6 + body.length)
    writeHeader(b, 0, MSG.extended, 1 + body.length)
    b[5] = 0
    body.copy(b, 6)
    this.write(b)
  }

  private sendKeepAlive(): void {
    if (performance.now() - this.lastSent >= KEEPALIVE_MS - 1000) this.write(Buffer.alloc(4))
  }

  /** A message of up to three 32-bit numbers, into the tick's small-message buffer. */
  private message(id: number, a?: number, b?: number, c?: number): void {
    const n = (a === undefined ? 0 : 4) + (b === undefined ? 0 : 4) + (c === undefined ? 0 : 4)
    const at = this.smallRoom(5 + n)
    const buf = this.small
    let p = writeHeader(buf, at, id, n)
    if (a !== undefined) p = buf.writeUInt32BE(a, p)
    if (b !== undefined) p = buf.writeUInt32BE(b, p)
    if (c !== undefined) buf.writeUInt32BE(c, p)
  }

  /** Where `bytes` more go in the small-message buffer (flushed first when full); -1 when they never fit. */
  private smallRoom(bytes: number): number {
    if (bytes > SMALL_BATCH) {
      this.flushSmall()
      return -1
    }
    if (this.smallLength + bytes > SMALL_BATCH) this.flushSmall()
    const at = this.smallLength
    this.smallLength += bytes
    if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(() => {
        this.flushHaves() // held-back HAVEs ride along (while flushScheduled, they schedule nothing)
        this.flushScheduled = false
        this.flushSmall()
      })
    }
    return at
  }

  private flushSmall(): void {
    if (this.smallLength === 0) return
    // A copy of what is used, not a fresh SMALL_BATCH buffer: under 4 KiB
    // Buffer.allocUnsafe slices Node's shared pool, while a buffer of
    // SMALL_BATCH is an ArrayBuffer of its own each flush (a flush is most
    // often one or two 17-byte REQUESTs; the allocations were 3 % of a
    // 16-node run's busy time). The batch buffer is reused.
    const out = Buffer.allocUnsafe(this.smallLength)
    this.small.copy(out, 0, 0, this.smallLength)
    this.smallLength = 0
    this.write(out)
  }

  /**
   * Every write of one turn of the event loop leaves in one: the socket is
   * corked until the loop's check phase (setImmediate), so the blocks an
   * upload serves from the read cache in one turn (each after an await that
   * resolves at once) go out in one writev, not one system call each. What
   * the small buffer gathered goes first.
   */
  private write(bytes: Uint8Array): void {
    if (this.socket.destroyed) return
    if (this.smallLength > 0) this.flushSmall()
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      setImmediate(() => {
        this.corked = false
        this.socket.uncork()
      })
    }
    this.lastSent = performance.now()
    this.socket.write(bytes)
  }
}

/** Each socket's connection, for reads that arrive through `onread`. */
const readers = new WeakMap<Socket, PeerConnection>()
/** Sockets made by connectPeer: they deliver through `onread`, not 'data'. */
const dialed = new WeakSet<Socket>()
/** Bytes a dialed connection reads at once, into the one buffer all of them share. */
const READ_BUFFER = 256 * 1024
let readBuffer: Buffer | undefined

/**
 * Dial a peer for a PeerConnection: its reads land in one buffer reused for
 * every read, not a new one each (a gigabyte of short-lived buffers per
 * gigabyte downloaded, which V8 has to collect). One buffer for every
 * dialed socket, not one each (up to 256 KiB a peer, as much as its reads
 * fill): libuv reads one socket at a time on this thread and hands the
 * bytes to the callback before the next read, and the wire reader copies
 * what it keeps before it returns.
 */
export function connectPeer(opts: { host: string; port: number; localAddress?: string }): Socket {
  const socket: Socket = connect({ ...opts, onread: sharedRead(() => socket) })
  dialed.add(socket)
  return socket
}

/** Reads into the one shared buffer, handed to the socket's connection. */
function sharedRead(socketOf: () => Socket): { buffer: Buffer; callback: (n: number, buf: Uint8Array) => boolean } {
  readBuffer ??= Buffer.allocUnsafeSlow(READ_BUFFER)
  return {
    buffer: readBuffer,
    callback: (n: number, buf: Uint8Array) => {
      readers.get(socketOf())?.received(buf.subarray(0, n))
      return true
    },
  }
}

/**
 * An accepted socket (from a server made with `pauseOnConnect`, so nothing
 * was read yet), re-made around its handle so that it reads like a dialed
 * one: into the shared buffer, not through the stream machinery with a new
 * buffer each read (measured: 15 % of a swarm node's busy time). Node's
 * server has no `onread` option, so this takes the handle from the socket
 * it made (an internal field); where that field is missing the socket is
 * used as it is, reading through 'data' events.
 */
export function adoptAccepted(accepted: Socket): Socket {
  const holder = accepted as unknown as { _handle?: object | null }
  const handle = holder._handle
  if (!handle || accepted.destroyed) {
    accepted.resume()
    return accepted
  }
  holder._handle = null
  accepted.destroy() // without its handle: only the server's count of connections goes down
  const socket: Socket = new Socket({ handle, readable: true, writable: true, onread: sharedRead(() => socket) } as ConstructorParameters<typeof Socket>[0])
  dialed.add(socket)
  return socket
}
