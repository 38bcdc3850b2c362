/**
 * The BitTorrent peer wire's vocabulary (BEP 3, BEP 6's ids, BEP 10's
 * extended messages) and its limits: one place for the numbers that the
 * reader (wire-reader.ts) and the writer (peer-connection.ts) share.
 */
export const PROTOCOL = 'BitTorrent protocol'

export const MSG = {
  choke: 0,
  unchoke: 1,
  interested: 2,
  notInterested: 3,
  have: 4,
  bitfield: 5,
  request: 6,
  piece: 7,
  cancel: 8,
  port: 9,
  suggest: 0x0d,
  haveAll: 0x0e,
  haveNone: 0x0f,
  reject: 0x10,
  allowedFast: 0x11,
  extended: 20,
} as const

/** A block as blockswarm asks for it (every client's norm). */
export const BLOCK_SIZE = 16 * 1024
/** The largest block a peer may send or ask for. */
export const MAX_BLOCK = 128 * 1024
/** The longest message of any kind: a piece message with the largest block. */
export const MAX_MESSAGE = 9 + MAX_BLOCK
/** A bitfield's bytes before the torrent is known (an incoming peer's first bytes): enough for 8 Mi pieces. */
export const MAX_BITFIELD_UNKNOWN = 1 << 20
/** Requests we let a peer keep queued with us (told in our extended handshake's reqq). */
export const MAX_QUEUED_REQUESTS = 1024

/** Blocks in the largest piece (256 MiB). */
const MAX_BLOCKS = 16 * 1024

/** One number for block `block` of piece `index` (a key without a string per block). */
export function blockKey(index: number, block: number): number {
  return index * MAX_BLOCKS + block
}

/** The piece and block of a blockKey. */
export function blockOfKey(key: number): { index: number; block: number } {
  return { index: Math.floor(key / MAX_BLOCKS), block: key % MAX_BLOCKS }
}

/** Reserved handshake bytes: BEP 10 (extension protocol) is byte 5, bit 0x10. */
export function reservedBytes(): Buffer {
  const r = Buffer.alloc(8)
  r[5] |= 0x10
  return r
}

export function supportsExtended(reserved: Buffer): boolean {
  return (reserved[5] & 0x10) !== 0
}

/** The 68-byte handshake. */
export function handshakeMessage(infoHash: Buffer, peerId: Buffer): Buffer {
  const b = Buffer.alloc(1 + PROTOCOL.length + 48)
  b[0] = PROTOCOL.length
  b.write(PROTOCOL, 1, 'latin1')
  reservedBytes().copy(b, 1 + PROTOCOL.length)
  infoHash.copy(b, 1 + PROTOCOL.length + 8)
  peerId.copy(b, 1 + PROTOCOL.length + 28)
  return b
}

/** Write a message of `payload` bytes after its id into `into` at `at`; returns the header's end. */
export function writeHeader(into: Buffer, at: number, id: number, payload: number): number {
  into.writeUInt32BE(1 + payload, at)
  into[at + 4] = id
  return at + 5
}
