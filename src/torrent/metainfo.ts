/**
 * The extent torrent's metainfo: parse (validate once, into typed extents) and
 * build. BitTorrent v1, EZIO/partclone layout; blockswarm's own metadata lives
 * in a top-level `blockswarm` dictionary outside `info`, so the info-hash and
 * other clients are unaffected.
 */
import { createHash } from 'node:crypto'
import bencode from 'bencode'
import { type Extent, ExtentError, extentName, extentsEnd, extentsTotal, quote, validateExtents } from './extents.js'
import { makeLayout, type PieceLayout } from './piece-map.js'

export const DEFAULT_PIECE_LENGTH = 16 * 1024 * 1024

/** A v1 info-hash as blockswarm writes it everywhere: 40 lowercase hex digits. */
const INFO_HASH = /^[0-9a-f]{40}$/

/** Whether `text` is an info-hash in blockswarm's form (lowercase; lower-case it first to accept upper case). */
export function isInfoHash(text: string): boolean {
  return INFO_HASH.test(text)
}
export const MIN_PIECE_LENGTH = 16 * 1024
export const MAX_PIECE_LENGTH = 256 * 1024 * 1024

/**
 * What the bytes between extents mean:
 * - `dont-care`: free blocks of a filesystem; their content on the target does not matter.
 * - `zero`: the extents were made by a zero-block scan; the gaps must read as zeros.
 */
export type GapPolicy = 'dont-care' | 'zero'

export interface BlockswarmMeta {
  /** Size in bytes of the disk/partition/image the torrent was made from. */
  readonly targetSize?: number
  readonly gaps: GapPolicy
  /** How the used blocks were found (ext4, fat32, ntfs, zero, gpt, partclone…). */
  readonly source?: string
  /** Raw disk images over HTTP holding the whole source (`web seed image`): the extents are read at their offsets. */
  readonly webSeedImages?: readonly string[]
}

export interface ExtentTorrent {
  readonly infoHash: string
  readonly name: string
  readonly pieceLength: number
  readonly pieceCount: number
  /** 20 bytes per piece. */
  readonly pieces: Buffer
  readonly extents: readonly Extent[]
  readonly totalLength: number
  readonly layout: PieceLayout
  /** Tracker URLs (announce and announce-list, deduplicated, in order). */
  readonly trackers: readonly string[]
  readonly webSeeds: readonly string[]
  readonly meta: BlockswarmMeta
  readonly createdBy?: string
  readonly comment?: string
  /** The torrent file exactly as given. */
  readonly raw: Buffer
}

export class TorrentError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'TorrentError'
  }
}

/** Expected 20-byte hash of piece `index`. */
export function pieceHash(t: Pick<ExtentTorrent, 'pieces'>, index: number): Buffer {
  return t.pieces.subarray(index * 20, index * 20 + 20)
}

// ---------------------------------------------------------------------------
// Parsing

type Dict = Record<string, unknown>

const text = (v: unknown): string | undefined => (v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : undefined)
const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)

function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new TorrentError(`${what} is not an integer (got ${describe(v)})`)
  return v
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing'
  if (v instanceof Uint8Array) return `a ${v.length}-byte string`
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'number') return String(v)
  if (typeof v === 'bigint') return `${v} (too large)`
  if (isDict(v)) return 'a dictionary'
  return typeof v
}

const DIGITS = /^[0-9]+$/
const INTEGER = /^-?[0-9]+$/

/**
 * End position of the bencoded value starting at `pos`, checking its syntax
 * strictly without decoding it. The `bencode` package's decoder is lenient in
 * ways that matter for hostile input: a negative string length moves it
 * backwards (`l-3:e` loops forever), `i1.5e` reads as 1, `ie` as 0, a repeated
 * key silently replaces the first (while the info-hash would be taken over the
 * first `info`), and a `__proto__` key replaces the dictionary's prototype.
 * Everything is checked here first, so the decoder only ever sees data it reads
 * the same way. Also used to hash the `info` dictionary byte-for-byte.
 */
function skipValue(buf: Buffer, pos: number, depth = 0): number {
  if (depth > 64) throw new TorrentError('bencode nesting is too deep')
  const c = buf[pos]
  if (c === 0x69 /* i */) {
    const end = buf.indexOf(0x65, pos)
    if (end < 0) throw new TorrentError(`bencode: unterminated integer at offset ${pos}`)
    const digits = buf.toString('latin1', pos + 1, end)
    if (!INTEGER.test(digits)) throw new TorrentError(`bencode: ${quote(digits)} at offset ${pos} is not an integer`)
    return end + 1
  }
  if (c === 0x6c /* l */ || c === 0x64 /* d */) {
    const keys = c === 0x64 ? new Set<string>() : undefined
    const unterminated = () => new TorrentError(`bencode: unterminated ${keys ? 'dictionary' : 'list'} starting at offset ${pos} (the data ends at ${buf.length})`)
    let p = pos + 1
    while (buf[p] !== 0x65) {
      if (p >= buf.length) throw unterminated()
      if (keys) {
        const keyEnd = skipString(buf, p, 'dictionary key')
        const key = buf.toString('latin1', buf.indexOf(0x3a, p) + 1, keyEnd)
        if (key === '__proto__') throw new TorrentError(`bencode: dictionary key "__proto__" at offset ${p} is not allowed`)
        if (keys.has(key)) throw new TorrentError(`bencode: dictionary key ${quote(key)} appears twice (again at offset ${p})`)
        keys.add(key)
        p = keyEnd
        if (p >= buf.length) throw unterminated()
        if (buf[p] === 0x65) throw new TorrentError(`bencode: dictionary key ${quote(key)} has no value (offset ${p})`)
      }
      p = skipValue(buf, p, depth + 1)
    }
    return p + 1
  }
  if (c !== undefined && c >= 0x30 && c <= 0x39) return skipString(buf, pos, 'string')
  throw new TorrentError(`bencode: unexpected byte 0x${(c ?? 0).toString(16)} at offset ${pos}`)
}

/**
 * Decode one bencoded value from an untrusted source (a tracker's answer),
 * checked strictly first like a torrent; bytes after the value are ignored.
 * Throws TorrentError naming the problem.
 */
export function decodeBencode(data: Uint8Array): unknown {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (buf.length === 0) throw new TorrentError('bencode: no data')
  return bencode.decode(buf.subarray(0, skipValue(buf, 0)))
}

/** End position of the byte string (`<length>:<bytes>`) starting at `pos`. */
function skipString(buf: Buffer, pos: number, what: string): number {
  const colon = buf.indexOf(0x3a, pos)
  const digits = colon < 0 ? '' : buf.toString('latin1', pos, colon)
  if (!DIGITS.test(digits)) throw new TorrentError(`bencode: expected a ${what} (<length>:<bytes>) at offset ${pos}`)
  const end = colon + 1 + Number(digits)
  if (end > buf.length) throw new TorrentError(`bencode: ${what} at offset ${pos} runs past the end of the data`)
  return end
}

/** The raw bytes of the top-level `info` value. */
function rawInfo(buf: Buffer): Buffer {
  if (buf[0] !== 0x64) throw new TorrentError('not a torrent: the data is not a bencoded dictionary')
  let p = 1
  while (p < buf.length && buf[p] !== 0x65) {
    const keyEnd = skipValue(buf, p)
    const colon = buf.indexOf(0x3a, p)
    const key = buf.toString('latin1', colon + 1, keyEnd)
    const valueEnd = skipValue(buf, keyEnd)
    if (key === 'info') return buf.subarray(keyEnd, valueEnd)
    p = valueEnd
  }
  throw new TorrentError('not a torrent: no "info" dictionary')
}

export interface ParseOptions {
  /** Where the bytes came from, for error messages. */
  readonly source?: string
}

/** Parse and validate an extent torrent. Throws TorrentError naming the problem. */
export function parseTorrent(data: Uint8Array, opts: ParseOptions = {}): ExtentTorrent {
  const raw = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  try {
    return parse(raw)
  } catch (err) {
    const prefix = opts.source ? `${opts.source}: ` : ''
    if (err instanceof TorrentError) throw new TorrentError(prefix + err.message)
    if (err instanceof ExtentError) throw new TorrentError(`${prefix}bad extent: ${err.message}`)
    throw new TorrentError(`${prefix}not a valid torrent: ${(err as Error).message}`)
  }
}

function parse(raw: Buffer): ExtentTorrent {
  if (raw.length === 0) throw new TorrentError('empty file')
  skipValue(raw, 0)
  let top: unknown
  try {
    top = bencode.decode(raw)
  } catch (err) {
    throw new TorrentError(`not bencoded data (${(err as Error).message})`)
  }
  if (!isDict(top)) throw new TorrentError('not a torrent: top level is not a dictionary')
  const info = top.info
  if (!isDict(info)) throw new TorrentError(`"info" is not a dictionary (got ${describe(info)})`)
  const infoHash = createHash('sha1').update(rawInfo(raw)).digest('hex')

  const name = text(info['name.utf-8']) ?? text(info.name)
  if (name === undefined || name === '') throw new TorrentError('info.name is missing or empty')
  if (name.includes('/') || name.includes('\\') || name === '.' || name === '..' || name.includes('\0')) {
    throw new TorrentError(`info.name ${quote(name)} is not a safe directory name`)
  }

  const pieceLength = int(info['piece length'], 'info["piece length"]')
  if (pieceLength < MIN_PIECE_LENGTH || pieceLength > MAX_PIECE_LENGTH || (pieceLength & (pieceLength - 1)) !== 0) {
    throw new TorrentError(`info["piece length"] ${pieceLength} is not a power of two between 16 KiB and 256 MiB`)
  }

  if (info.length !== undefined && info.files === undefined) {
    throw new TorrentError('single-file torrent: an extent torrent has a "files" list of hex offsets')
  }
  if (!Array.isArray(info.files)) throw new TorrentError(`info.files is not a list (got ${describe(info.files)})`)
  const files = info.files.map((f: unknown, i: number) => {
    if (!isDict(f)) throw new TorrentError(`file entry ${i} is not a dictionary`)
    const pathList = f['path.utf-8'] ?? f.path
    if (!Array.isArray(pathList)) throw new TorrentError(`file entry ${i}: path is not a list`)
    const path = pathList.map((p: unknown) => {
      const s = text(p)
      if (s === undefined) throw new TorrentError(`file entry ${i}: path component is not a string`)
      return s
    })
    return { path, length: int(f.length, `file entry ${i} (${path.map(quote).join('/')}): length`) }
  })
  const extents = validateExtents(files)
  const totalLength = extentsTotal(extents)

  if (!(info.pieces instanceof Uint8Array)) throw new TorrentError(`info.pieces is not a byte string (got ${describe(info.pieces)})`)
  const pieceCount = Math.ceil(totalLength / pieceLength)
  if (info.pieces.length !== pieceCount * 20) {
    throw new TorrentError(
      `info.pieces is ${info.pieces.length} bytes; ${pieceCount} pieces of ${pieceLength} over ${totalLength} bytes need ${pieceCount * 20}`,
    )
  }

  const trackers: string[] = []
  const addTracker = (v: unknown) => {
    const s = text(v)
    if (s && !trackers.includes(s)) trackers.push(s)
  }
  addTracker(top.announce)
  if (Array.isArray(top['announce-list'])) {
    for (const tier of top['announce-list']) if (Array.isArray(tier)) tier.forEach(addTracker)
  }
  const urlList = top['url-list']
  const webSeeds = (Array.isArray(urlList) ? urlList : [urlList]).map(text).filter((s): s is string => !!s)

  const meta = parseMeta(top.blockswarm, extentsEnd(extents))
  return {
    infoHash,
    name,
    pieceLength,
    pieceCount,
    pieces: Buffer.from(info.pieces),
    extents,
    totalLength,
    layout: makeLayout(extents, pieceLength),
    trackers,
    webSeeds,
    meta,
    createdBy: text(top['created by']),
    comment: text(top.comment),
    raw,
  }
}

function parseMeta(v: unknown, end: number): BlockswarmMeta {
  if (v === undefined) return { gaps: 'dont-care' }
  if (!isDict(v)) throw new TorrentError(`"blockswarm" metadata is not a dictionary (got ${describe(v)})`)
  // a gaps value of the wrong type must not quietly become "dont-care": the gaps of a zero-scan torrent would stay unzeroed
  if (v.gaps !== undefined && !(v.gaps instanceof Uint8Array)) throw new TorrentError(`blockswarm.gaps is not a string (got ${describe(v.gaps)})`)
  if (v.source !== undefined && !(v.source instanceof Uint8Array)) throw new TorrentError(`blockswarm.source is not a string (got ${describe(v.source)})`)
  const gapsText = text(v.gaps) ?? 'dont-care'
  if (gapsText !== 'dont-care' && gapsText !== 'zero') {
    throw new TorrentError(`blockswarm.gaps ${quote(gapsText)} is neither "dont-care" nor "zero"`)
  }
  let targetSize: number | undefined
  if (v['target size'] !== undefined) {
    targetSize = int(v['target size'], 'blockswarm["target size"]')
    if (targetSize < end) throw new TorrentError(`blockswarm["target size"] ${targetSize} is smaller than the last extent's end ${end}`)
  }
  const images = v['web seed image']
  const webSeedImages = images === undefined ? undefined : (Array.isArray(images) ? images : [images]).map(text).filter((u): u is string => !!u)
  return { gaps: gapsText, targetSize, source: text(v.source), webSeedImages: webSeedImages?.length ? webSeedImages : undefined }
}

// ---------------------------------------------------------------------------
// Building

export interface BuildInput {
  readonly name: string
  readonly pieceLength: number
  /** Concatenated 20-byte SHA-1 piece hashes. */
  readonly pieces: Uint8Array
  /** Sorted, non-overlapping extents; file names are generated (32 hex digits) unless given. */
  readonly extents: readonly { offset: number; length: number; name?: string }[]
  readonly trackers?: readonly string[]
  readonly webSeeds?: readonly string[]
  readonly meta: BlockswarmMeta
  readonly createdBy?: string
  readonly comment?: string
  /** Seconds since the epoch; omitted → no creation date (reproducible output). */
  readonly creationDate?: number
}

/** Build a .torrent and parse it back (so what we write always passes our own validation). */
export function buildTorrent(input: BuildInput): { buffer: Buffer; torrent: ExtentTorrent } {
  const info: Dict = {
    files: input.extents.map((e) => ({ length: e.length, path: [e.name ?? extentName(e.offset)] })),
    name: input.name,
    'piece length': input.pieceLength,
    pieces: Buffer.from(input.pieces),
  }
  const top: Dict = { info }
  const trackers = input.trackers ?? []
  if (trackers.length > 0) top.announce = trackers[0]
  if (trackers.length > 1) top['announce-list'] = trackers.map((t) => [t])
  if (input.webSeeds && input.webSeeds.length > 0) top['url-list'] = [...input.webSeeds]
  const meta: Dict = { gaps: input.meta.gaps, version: 1 }
  if (input.meta.targetSize !== undefined) meta['target size'] = input.meta.targetSize
  if (input.meta.source !== undefined) meta.source = input.meta.source
  if (input.meta.webSeedImages?.length) meta['web seed image'] = [...input.meta.webSeedImages]
  top.blockswarm = meta
  top['created by'] = input.createdBy ?? 'blockswarm'
  if (input.comment !== undefined) top.comment = input.comment
  if (input.creationDate !== undefined) top['creation date'] = input.creationDate
  const buffer = Buffer.from(bencode.encode(top))
  return { buffer, torrent: parseTorrent(buffer) }
}
