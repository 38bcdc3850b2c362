/**
 * Checks the framing of a peer's byte stream before the bittorrent-protocol
 * Wire sees it. The Wire collects a whole message before it parses it,
 * however long the length prefix says it is, copying everything buffered on
 * each chunk; and it reads a prefix of 2^31 or more as a negative number (a
 * keep-alive), then parses that message's body as further messages. One
 * peer could make it hold gigabytes, or smuggle messages past it.
 *
 * Here each message's length is checked against what its id allows (a
 * request is 13 bytes, a piece message carries at most a 128 KiB block, a
 * bitfield is exactly the torrent's size once that is known) as soon as its
 * 5-byte header has arrived, and the header of each block (piece index and
 * offset) is shown to the caller before the block is buffered. Nothing is
 * copied except the 13 header bytes.
 */
import { MAX_BLOCK } from './upload-server.js'

/** pstrlen, "BitTorrent protocol", reserved bytes, info-hash, peer id. */
const HANDSHAKE_LENGTH = 1 + 19 + 8 + 20 + 20
/** The longest message of any kind: a piece message with the largest block. */
export const MAX_MESSAGE = 9 + MAX_BLOCK
/** A bitfield's bytes before the torrent is known (an incoming peer's first bytes): enough for 8 Mi pieces. */
const MAX_BITFIELD_UNKNOWN = 1 << 20

const BITFIELD = 5
const PIECE = 7

/** Message ids with a fixed length (id byte included). */
const FIXED: Record<number, [name: string, length: number]> = {
  0: ['choke', 1],
  1: ['unchoke', 1],
  2: ['interested', 1],
  3: ['not interested', 1],
  4: ['have', 5],
  6: ['request', 13],
  8: ['cancel', 13],
  9: ['port', 3],
  0x0d: ['suggest', 5],
  0x0e: ['have all', 1],
  0x0f: ['have none', 1],
  0x10: ['reject', 13],
  0x11: ['allowed fast', 5],
}

/** Called with each block's header; returns why the block is refused, or undefined. */
export type BlockCheck = (index: number, offset: number, length: number) => string | undefined

export class FrameGuard {
  private handshakeLeft = HANDSHAKE_LENGTH
  /** Length prefix, id and (for a piece message) index and offset of the message being read. */
  private readonly header = Buffer.alloc(13)
  private headerHave = 0
  private headerNeed = 4
  private bodyLeft = 0
  private bitfieldLength?: number
  /** The message whose body is being skipped is a bitfield of this many bytes (id included). */
  private readingBitfield = 0
  private failed?: string
  /** Blocks' headers go here (set once the torrent is known). */
  checkBlock?: BlockCheck

  /** The torrent is known: bitfields must be exactly its size from now on (also one half read). */
  setPieceCount(count: number): void {
    this.bitfieldLength = 1 + Math.ceil(count / 8)
    if (this.bodyLeft > 0 && this.readingBitfield > 0 && this.readingBitfield !== this.bitfieldLength) {
      this.failed = bitfieldError(this.readingBitfield, this.bitfieldLength)
    }
  }

  /** Check the next bytes from the peer; returns what is wrong with them (the connection must close), or undefined. */
  feed(chunk: Uint8Array): string | undefined {
    let at = 0
    while (at < chunk.length && this.failed === undefined) {
      if (this.handshakeLeft > 0) {
        if (this.handshakeLeft === HANDSHAKE_LENGTH && chunk[at] !== 19) {
          this.failed = `not a BitTorrent handshake (first byte ${chunk[at]}, not 19)`
          break
        }
        const take = Math.min(this.handshakeLeft, chunk.length - at)
        this.handshakeLeft -= take
        at += take
      } else if (this.bodyLeft > 0) {
        const take = Math.min(this.bodyLeft, chunk.length - at)
        this.bodyLeft -= take
        at += take
      } else {
        const take = Math.min(this.headerNeed - this.headerHave, chunk.length - at)
        this.header.set(chunk.subarray(at, at + take), this.headerHave)
        this.headerHave += take
        at += take
        if (this.headerHave === this.headerNeed) this.failed = this.headerRead()
      }
    }
    return this.failed
  }

  /** A header part is complete: check it, then ask for the next part or skip the body. */
  private headerRead(): string | undefined {
    const length = this.header.readUInt32BE(0)
    if (this.headerNeed === 4) {
      const limit = Math.max(MAX_MESSAGE, this.bitfieldLength ?? 1 + MAX_BITFIELD_UNKNOWN)
      if (length > limit) return `message length ${length} (over the ${limit}-byte limit)`
      if (length === 0) this.headerHave = 0 // keep-alive
      else this.headerNeed = 5
      return undefined
    }
    const id = this.header[4]
    if (this.headerNeed === 5) {
      const err = checkLength(id, length, this.bitfieldLength)
      if (err) return err
      if (id === PIECE && this.checkBlock) {
        this.headerNeed = 13
        return undefined
      }
      this.readingBitfield = id === BITFIELD ? length : 0
      return this.skipBody(length - 1)
    }
    const err = this.checkBlock?.(this.header.readUInt32BE(5), this.header.readUInt32BE(9), length - 9)
    return err ?? this.skipBody(length - 9)
  }

  private skipBody(bytes: number): undefined {
    this.bodyLeft = bytes
    this.headerHave = 0
    this.headerNeed = 4
    return undefined
  }
}

function bitfieldError(length: number, expected: number): string {
  return `bitfield message of ${length} bytes (this torrent's is ${expected})`
}

/** Why a message of `length` bytes (id included) is not acceptable for id `id`, or undefined. */
function checkLength(id: number, length: number, bitfieldLength: number | undefined): string | undefined {
  const fixed = FIXED[id]
  if (fixed) return length === fixed[1] ? undefined : `${fixed[0]} message of ${length} bytes (it is ${fixed[1]})`
  if (id === BITFIELD) {
    if (bitfieldLength !== undefined) return length === bitfieldLength ? undefined : bitfieldError(length, bitfieldLength)
    return length >= 2 && length <= 1 + MAX_BITFIELD_UNKNOWN ? undefined : `bitfield message of ${length} bytes`
  }
  if (id === PIECE) return length > 9 && length <= MAX_MESSAGE ? undefined : `piece message of ${length} bytes (a block is 1 byte to ${MAX_BLOCK / 1024} KiB)`
  return length <= MAX_MESSAGE ? undefined : `message ${id} of ${length} bytes (the limit is ${MAX_MESSAGE})`
}
