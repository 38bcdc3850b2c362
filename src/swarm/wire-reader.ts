/**
 * Reading a peer's byte stream: the only code that frames what a peer sends.
 * A streaming state machine over socket chunks, cut anywhere: the handshake,
 * then length-prefixed messages, each checked against what its id allows as
 * soon as its header is in (a request is 13 bytes, a piece message carries
 * one block of at most MAX_BLOCK, a bitfield is exactly the torrent's size
 * once that is known), so that no peer can make us buffer more than one
 * block, or smuggle messages inside an over-long one.
 *
 * A block's header (piece, offset, length) is shown to `checkBlock` before a
 * byte of it is kept; a block that lies within one socket chunk is handed
 * over as a view of that chunk, one split across chunks is gathered in one
 * reused buffer. Nothing else is copied but the few header bytes.
 *
 * What the messages mean is not decided here: each goes to a WireHandler
 * method (PeerConnection keeps the protocol's state).
 */
import { MAX_BLOCK, MAX_BITFIELD_UNKNOWN, MAX_MESSAGE, MSG, PROTOCOL } from './wire-messages.js'

export interface WireHandler {
  handshake(infoHash: Buffer, peerId: Buffer, reserved: Buffer): void
  /** choke, unchoke, interested, not interested, have all, have none: no payload. */
  signal(id: number): void
  have(index: number): void
  /** A view, valid during the call. */
  bitfield(bits: Uint8Array): void
  request(index: number, offset: number, length: number): void
  cancel(index: number, offset: number, length: number): void
  /** Whether to take the block whose header has come: undefined, or why it is refused (the connection ends). */
  checkBlock(index: number, offset: number, length: number): string | undefined
  /** A view, valid during the call: copy what you keep. */
  block(index: number, offset: number, data: Uint8Array): void
  /** BEP 10: ext 0 is the extended handshake; a view, valid during the call. */
  extended(ext: number, payload: Uint8Array): void
  /** A BEP 6 reject of one of our requests. */
  reject(index: number, offset: number, length: number): void
}

const HANDSHAKE_LENGTH = 1 + PROTOCOL.length + 8 + 20 + 20

/** Message ids with a fixed length (id byte included). */
const FIXED: Record<number, [name: string, length: number]> = {
  [MSG.choke]: ['choke', 1],
  [MSG.unchoke]: ['unchoke', 1],
  [MSG.interested]: ['interested', 1],
  [MSG.notInterested]: ['not interested', 1],
  [MSG.have]: ['have', 5],
  [MSG.request]: ['request', 13],
  [MSG.cancel]: ['cancel', 13],
  [MSG.port]: ['port', 3],
  [MSG.suggest]: ['suggest', 5],
  [MSG.haveAll]: ['have all', 1],
  [MSG.haveNone]: ['have none', 1],
  [MSG.reject]: ['reject', 13],
  [MSG.allowedFast]: ['allowed fast', 5],
}

const enum State {
  Handshake,
  Header,
  Block,
  Body,
  Skip,
  Failed,
}

export class WireReader {
  private state = State.Handshake
  private readonly head = Buffer.alloc(HANDSHAKE_LENGTH)
  private headHave = 0
  private headNeed = HANDSHAKE_LENGTH
  /** Bytes left of a block, a gathered body, or a skipped body. */
  private left = 0
  /** A block split across chunks, and a bitfield or extended message, are gathered here. */
  private scratch = Buffer.alloc(0)
  private have = 0
  private bodyId = 0
  private bodyLength = 0
  private blockIndex = 0
  private blockOffset = 0
  private bitfieldLength?: number
  private failure?: string

  constructor(private readonly handler: WireHandler) {}

  /** The torrent is known: a bitfield must be exactly its size from now on (one being read now too). */
  setPieceCount(count: number): void {
    this.bitfieldLength = 1 + Math.ceil(count / 8)
    if (this.state === State.Body && this.bodyId === MSG.bitfield && this.bodyLength !== this.bitfieldLength) {
      this.fail(bitfieldError(this.bodyLength + 1, this.bitfieldLength))
    }
  }

  /** Why the stream was refused (the connection must close), once it was. */
  get failed(): string | undefined {
    return this.failure
  }

  /** The next bytes from the peer. Returns why they are refused, or undefined. */
  feed(chunk: Uint8Array): string | undefined {
    let at = 0
    while (at < chunk.length && this.state !== State.Failed) {
      switch (this.state) {
        case State.Handshake:
        case State.Header: {
          if (this.state === State.Handshake && this.headHave === 0 && chunk[at] !== PROTOCOL.length) {
            this.fail(`not a BitTorrent handshake (first byte ${chunk[at]}, not ${PROTOCOL.length})`)
            break
          }
          const n = Math.min(this.headNeed - this.headHave, chunk.length - at)
          for (let i = 0; i < n; i++) this.head[this.headHave + i] = chunk[at + i]
          this.headHave += n
          at += n
          if (this.headHave === this.headNeed) this.headerDone()
          break
        }
        case State.Block: {
          const n = Math.min(this.left, chunk.length - at)
          if (this.have === 0 && n === this.bodyLength) {
            this.left = 0
            this.nextMessage()
            this.handler.block(this.blockIndex, this.blockOffset, chunk.subarray(at, at + n))
          } else {
            this.scratch.set(chunk.subarray(at, at + n), this.have)
            this.have += n
            this.left -= n
            if (this.left === 0) {
              this.nextMessage()
              this.handler.block(this.blockIndex, this.blockOffset, this.scratch.subarray(0, this.bodyLength))
            }
          }
          at += n
          break
        }
        case State.Body: {
          const n = Math.min(this.left, chunk.length - at)
          this.scratch.set(chunk.subarray(at, at + n), this.have)
          this.have += n
          this.left -= n
          at += n
          if (this.left === 0) this.bodyDone()
          break
        }
        case State.Skip: {
          const n = Math.min(this.left, chunk.length - at)
          this.left -= n
          at += n
          if (this.left === 0) this.nextMessage()
          break
        }
      }
    }
    return this.failure
  }

  private fail(why: string): void {
    this.failure = why
    this.state = State.Failed
  }

  private nextMessage(): void {
    this.state = State.Header
    this.headHave = 0
    this.headNeed = 4
  }

  private gather(bytes: number): void {
    if (this.scratch.length < bytes) this.scratch = Buffer.allocUnsafeSlow(Math.max(bytes, 16 * 1024))
    this.have = 0
    this.left = bytes
  }

  private headerDone(): void {
    const h = this.head
    if (this.state === State.Handshake) {
      if (h.toString('latin1', 1, 1 + PROTOCOL.length) !== PROTOCOL) return this.fail('not a BitTorrent handshake (protocol name)')
      const p = 1 + PROTOCOL.length
      this.handler.handshake(Buffer.from(h.subarray(p + 8, p + 28)), Buffer.from(h.subarray(p + 28, p + 48)), Buffer.from(h.subarray(p, p + 8)))
      if (this.state === State.Handshake) this.nextMessage()
      return
    }
    const length = h.readUInt32BE(0)
    if (this.headNeed === 4) {
      const limit = Math.max(MAX_MESSAGE, this.bitfieldLength ?? 1 + MAX_BITFIELD_UNKNOWN)
      if (length > limit) return this.fail(`message length ${length} (over the ${limit}-byte limit)`)
      if (length === 0) this.headHave = 0 // keep-alive
      else this.headNeed = 5
      return
    }
    const id = h[4]
    if (this.headNeed === 5) {
      const err = checkLength(id, length, this.bitfieldLength)
      if (err) return this.fail(err)
      const fixed = FIXED[id]
      if (fixed) {
        if (length === 1) {
          this.nextMessage()
          return this.handler.signal(id)
        }
        this.headNeed = 4 + length
        return
      }
      if (id === MSG.piece) {
        this.headNeed = 13
        return
      }
      this.bodyId = id
      this.bodyLength = length - 1
      if (id === MSG.bitfield || id === MSG.extended) {
        this.gather(length - 1)
        this.state = State.Body
      } else {
        this.left = length - 1 // an id nobody negotiated: skipped
        this.state = State.Skip
      }
      return
    }
    const a = h.readUInt32BE(5)
    if (id === MSG.piece) {
      const blockLength = length - 9
      const refused = this.handler.checkBlock(a, h.readUInt32BE(9), blockLength)
      if (refused !== undefined) return this.fail(refused)
      if (this.state === State.Failed) return
      this.blockIndex = a
      this.blockOffset = h.readUInt32BE(9)
      this.bodyLength = blockLength
      this.gather(blockLength)
      this.state = State.Block
      return
    }
    this.nextMessage()
    switch (id) {
      case MSG.have:
        return this.handler.have(a)
      case MSG.request:
        return this.handler.request(a, h.readUInt32BE(9), h.readUInt32BE(13))
      case MSG.cancel:
        return this.handler.cancel(a, h.readUInt32BE(9), h.readUInt32BE(13))
      case MSG.reject:
        return this.handler.reject(a, h.readUInt32BE(9), h.readUInt32BE(13))
      // port (DHT), suggest, allowed fast: nothing blockswarm uses
    }
  }

  private bodyDone(): void {
    const body = this.scratch.subarray(0, this.bodyLength)
    const id = this.bodyId
    this.nextMessage()
    if (id === MSG.bitfield) this.handler.bitfield(body)
    else if (body.length > 0) this.handler.extended(body[0], body.subarray(1))
  }
}

function bitfieldError(length: number, expected: number): string {
  return `bitfield message of ${length} bytes (this torrent's is ${expected})`
}

/** Why a message of `length` bytes (id included) is not acceptable for id `id`, or undefined. */
function checkLength(id: number, length: number, bitfieldLength: number | undefined): string | undefined {
  const fixed = FIXED[id]
  if (fixed) return length === fixed[1] ? undefined : `${fixed[0]} message of ${length} bytes (it is ${fixed[1]})`
  if (id === MSG.bitfield) {
    if (bitfieldLength !== undefined) return length === bitfieldLength ? undefined : bitfieldError(length, bitfieldLength)
    return length >= 2 && length <= 1 + MAX_BITFIELD_UNKNOWN ? undefined : `bitfield message of ${length} bytes`
  }
  if (id === MSG.piece) return length > 9 && length <= MAX_MESSAGE ? undefined : `piece message of ${length} bytes (a block is 1 byte to ${MAX_BLOCK / 1024} KiB)`
  return length <= MAX_MESSAGE ? undefined : `message ${id} of ${length} bytes (the limit is ${MAX_MESSAGE})`
}
