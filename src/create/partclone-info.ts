/**
 * partclone's `torrent.info`, the index that `partclone.<fs> -c -T` (or `-t`)
 * writes beside its extent files:
 *
 *   block_size: 4096                               decimal
 *   blocks_total: 65535                            decimal
 *   offset: 00000000000000000000000000100000       byte offset, 32 hex digits
 *   length: 00000000000000000000000000100000       byte length, 32 hex digits
 *   sha1: 564440441dcddfbce7ea4794023a3583a170e85c piece hash (16 MiB pieces)
 *
 * One offset/length pair per extent file (partclone cuts used-block runs at
 * its `-z` buffer size, 1 MiB by default). A `sha1:` line follows the pair in
 * which its piece completed; the last, partial piece is flushed at the end.
 */
import { readFile } from 'node:fs/promises'

/** partclone hashes the concatenated extents in fixed 16 MiB pieces. */
export const PARTCLONE_PIECE_LENGTH = 16 * 1024 * 1024

export interface PartcloneExtent {
  readonly offset: number
  readonly length: number
  /** The offset exactly as partclone wrote it: the name of its extent file. */
  readonly name: string
}

export interface PartcloneInfo {
  /** null when the file has no such line. */
  readonly blockSize: number | null
  readonly blocksTotal: number | null
  readonly extents: readonly PartcloneExtent[]
  /** The `sha1:` lines in order, 20 bytes each. */
  readonly pieces: Buffer
  /** Bytes covered by the extents. */
  readonly totalLength: number
  /** True when there is one `sha1:` line per 16 MiB piece of the extents. */
  readonly complete: boolean
}

export class PartcloneInfoError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'PartcloneInfoError'
  }
}

const LINE = /^([a-z_0-9]+):[ \t]*(.*?)[ \t]*$/
const HEX = /^[0-9a-fA-F]{1,32}$/
const DECIMAL = /^\d{1,15}$/
const SHA1 = /^[0-9a-fA-F]{40}$/

/** Parse the text of a torrent.info; `where` (the file name) starts every error message. */
export function parsePartcloneInfo(text: string, where = 'torrent.info'): PartcloneInfo {
  let blockSize: number | null = null
  let blocksTotal: number | null = null
  const extents: PartcloneExtent[] = []
  /** Each sha1 line with the bytes of extents listed before it. */
  const hashes: { hash: Buffer; line: number; after: number }[] = []
  let total = 0
  let pendingOffset: { value: number; name: string; line: number } | undefined
  let lastOffsetLine = 0

  const lines = text.split('\n')
  // a final newline leaves one empty string behind
  if (lines[lines.length - 1] === '') lines.pop()
  const fail = (lineNo: number, msg: string): never => {
    throw new PartcloneInfoError(`${where} line ${lineNo}: ${msg}`)
  }
  const hexValue = (lineNo: number, key: string, value: string): number => {
    if (!HEX.test(value)) fail(lineNo, `${key} ${JSON.stringify(value)} is not a hex byte value (1-32 hex digits)`)
    const n = BigInt('0x' + value)
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) fail(lineNo, `${key} 0x${value} is beyond 2^53 bytes`)
    return Number(n)
  }

  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1
    const line = lines[i].replace(/\r$/, '')
    if (line.trim() === '') continue
    const m = LINE.exec(line)
    if (!m) fail(lineNo, `expected "key: value", got ${JSON.stringify(line.slice(0, 80))}`)
    const [, key, value] = m!
    if (pendingOffset && key !== 'length') {
      fail(lineNo, `"offset:" on line ${pendingOffset.line} is not followed by a "length:" line (found "${key}:")`)
    }
    switch (key) {
      case 'block_size':
      case 'blocks_total': {
        if (!DECIMAL.test(value)) fail(lineNo, `${key} ${JSON.stringify(value)} is not a decimal number`)
        const n = Number(value)
        if (key === 'block_size') {
          if (n === 0 || (n & (n - 1)) !== 0) fail(lineNo, `block_size ${n} is not a power of two`)
          blockSize = n
        } else blocksTotal = n
        break
      }
      case 'offset': {
        const offset = hexValue(lineNo, 'offset', value)
        const prev = extents[extents.length - 1]
        if (prev && offset < prev.offset + prev.length) {
          fail(
            lineNo,
            `offset 0x${offset.toString(16)} is before the end of the previous extent 0x${prev.offset.toString(16)}+${prev.length} (extents must be sorted and disjoint)`,
          )
        }
        pendingOffset = { value: offset, name: value, line: lineNo }
        break
      }
      case 'length': {
        if (!pendingOffset) fail(lineNo, '"length:" without an "offset:" line before it')
        const length = hexValue(lineNo, 'length', value)
        if (length === 0) fail(lineNo, 'length is 0 (an extent holds at least one byte)')
        const end = pendingOffset!.value + length
        if (!Number.isSafeInteger(end) || !Number.isSafeInteger(total + length)) fail(lineNo, 'extent ends beyond 2^53 bytes')
        extents.push({ offset: pendingOffset!.value, length, name: pendingOffset!.name })
        lastOffsetLine = pendingOffset!.line
        total += length
        pendingOffset = undefined
        break
      }
      case 'sha1': {
        if (!SHA1.test(value)) fail(lineNo, `sha1 ${JSON.stringify(value)} is not 40 hex digits`)
        hashes.push({ hash: Buffer.from(value, 'hex'), line: lineNo, after: total })
        break
      }
      default:
        fail(lineNo, `unknown key "${key}:" (expected block_size, blocks_total, offset, length or sha1)`)
    }
  }
  if (pendingOffset) fail(pendingOffset.line, '"offset:" is not followed by a "length:" line (the file ends)')

  if (extents.length === 0) throw new PartcloneInfoError(`${where}: no "offset:"/"length:" pairs (no extents)`)
  const pieceCount = Math.ceil(total / PARTCLONE_PIECE_LENGTH)
  if (hashes.length > pieceCount) {
    fail(hashes[pieceCount].line, `sha1 of piece ${pieceCount}, but ${total} bytes of extents make only ${pieceCount} pieces of 16 MiB`)
  }
  // piece k is complete (and may be hashed) once its last byte has been listed; the last, partial piece at the end
  hashes.forEach(({ line, after }, k) => {
    const end = Math.min((k + 1) * PARTCLONE_PIECE_LENGTH, total)
    if (after < end) fail(line, `sha1 of piece ${k} comes before its piece is complete (${after} bytes of extents precede it, the piece ends at ${end})`)
  })
  if (blockSize !== null && blocksTotal !== null) {
    const size = blockSize * blocksTotal
    const last = extents[extents.length - 1]
    if (last.offset + last.length > size) {
      fail(
        lastOffsetLine,
        `extent 0x${last.offset.toString(16)}+${last.length} ends past the device (blocks_total ${blocksTotal} × block_size ${blockSize} = ${size} bytes)`,
      )
    }
  }
  return { blockSize, blocksTotal, extents, pieces: Buffer.concat(hashes.map((h) => h.hash)), totalLength: total, complete: hashes.length === pieceCount }
}

/** Read and parse a torrent.info file. */
export async function readPartcloneInfo(path: string): Promise<PartcloneInfo> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new PartcloneInfoError(code === 'ENOENT' ? `${path} does not exist` : code === 'EISDIR' ? `${path} is a directory, not a torrent.info file` : `cannot read ${path}: ${code}`)
  }
  return parsePartcloneInfo(text, path)
}
