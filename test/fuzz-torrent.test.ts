/**
 * Hostile .torrent files. Hundreds of malformed torrents, generated with
 * fast-check, go to parseTorrent; a sample of them to `blockswarm inspect` as a
 * real process; valid torrents whose extents end past a small target go to
 * openStore.
 *
 * parseTorrent must either return a torrent that holds every invariant the
 * rest of blockswarm trusts, or throw a TorrentError whose one-line message
 * names the problem. Each call runs under a vm timeout, so a hang fails the
 * test instead of freezing the run.
 *
 * Reproducible by default (fixed seed); FUZZ_SEED=<n> and FUZZ_RUNS=<n> explore.
 */
import { readFile, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import vm from 'node:vm'
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import { extentsEnd } from '../src/torrent/extents.js'
import { type ExtentTorrent, MAX_PIECE_LENGTH, MIN_PIECE_LENGTH, parseTorrent, TorrentError } from '../src/torrent/metainfo.js'
import { openStore } from '../src/storage/store.js'
import { TargetRefused } from '../src/storage/types.js'
import { Status } from 'nice-grpc'
import { connectControl } from '../src/control/client.js'
import { extentDigest, makeImage, makeTarget, startInProcessDaemon, startSeeder } from './helpers/grpc-fixtures.js'
import { cleanupAll, cli, loopAttach, onCleanup, pseudoRandom, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)

const SEED = Number(process.env.FUZZ_SEED ?? 20240611)
const RUNS = Number(process.env.FUZZ_RUNS ?? 300)
const KiB = 1024

// ---------------------------------------------------------------------------
// A small bencoder of our own: keys sorted, and raw fragments (bad integers,
// bombs) spliced in where a value stands.

class Raw {
  constructor(readonly bytes: Buffer) {}
}
type Value = number | string | Buffer | Raw | Value[] | { [key: string]: Value }
type Dict = { [key: string]: Value }

const raw = (text: string): Raw => new Raw(Buffer.from(text, 'latin1'))

function encode(v: Value): Buffer {
  if (v instanceof Raw) return v.bytes
  if (typeof v === 'number') return Buffer.from(`i${v}e`)
  if (typeof v === 'string' || Buffer.isBuffer(v)) {
    const bytes = Buffer.from(v)
    return Buffer.concat([Buffer.from(`${bytes.length}:`), bytes])
  }
  if (Array.isArray(v)) return Buffer.concat([Buffer.from('l'), ...v.map(encode), Buffer.from('e')])
  const keys = Object.keys(v).sort()
  return Buffer.concat([Buffer.from('d'), ...keys.flatMap((k) => [encode(k), encode(v[k])]), Buffer.from('e')])
}

// ---------------------------------------------------------------------------
// Valid torrents, described plainly, then turned into bencode.

type NameStyle = 'pad32' | 'pad16' | 'bare' | 'upper'

interface ExtentSpec {
  offset: number
  length: number
  style: NameStyle
  /** Directory components before the hex name (safe, but of any characters). */
  dirs: string[]
}

interface TorrentSpec {
  name: string
  pieceLength: number
  extents: ExtentSpec[]
  meta?: { gaps: 'dont-care' | 'zero'; targetExtra?: number; source?: string }
}

function hexName(offset: number, style: NameStyle): string {
  const bare = offset.toString(16)
  if (style === 'pad32') return bare.padStart(32, '0')
  if (style === 'pad16') return bare.padStart(16, '0')
  return style === 'upper' ? bare.toUpperCase() : bare
}

const totalOf = (s: TorrentSpec): number => s.extents.reduce((n, e) => n + e.length, 0)
const endOf = (s: TorrentSpec): number => s.extents[s.extents.length - 1].offset + s.extents[s.extents.length - 1].length

function torrentValue(s: TorrentSpec): Dict {
  const top: Dict = {
    announce: 'http://127.0.0.1:6969/announce',
    info: {
      files: s.extents.map((e) => ({ length: e.length, path: [...e.dirs, hexName(e.offset, e.style)] })),
      name: s.name,
      'piece length': s.pieceLength,
      pieces: Buffer.alloc(20 * Math.ceil(totalOf(s) / s.pieceLength), 0xa5),
    },
  }
  if (s.meta) {
    const meta: Dict = { gaps: s.meta.gaps }
    if (s.meta.targetExtra !== undefined) meta['target size'] = endOf(s) + s.meta.targetExtra
    if (s.meta.source !== undefined) meta.source = s.meta.source
    top.blockswarm = meta
  }
  return top
}

const isUnsafeComponent = (p: string): boolean => p === '' || p === '.' || p === '..' || /[/\\\0]/.test(p)
/** Any characters, control characters and non-ASCII included, that still make a safe path component. */
const safeComponent = fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }).filter((p) => !isUnsafeComponent(Buffer.from(p).toString()))

function specArb(opts: { maxGap: number; maxLength: number; maxExtents: number; pieceLengths?: fc.Arbitrary<number> }): fc.Arbitrary<TorrentSpec> {
  const extent = fc.record({
    gap: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 1, max: opts.maxGap })),
    length: fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: opts.maxLength })),
    style: fc.constantFrom<NameStyle>('pad32', 'pad16', 'bare', 'upper'),
    dirs: fc.array(safeComponent, { maxLength: 1 }),
  })
  return fc
    .record({
      name: fc.oneof(fc.constantFrom('sda1', 'nvme0n1p2', 'disk'), safeComponent),
      pieceLength: opts.pieceLengths ?? fc.integer({ min: 14, max: 28 }).map((b) => 2 ** b),
      extents: fc.array(extent, { minLength: 1, maxLength: opts.maxExtents }),
      meta: fc.option(
        fc.record({
          gaps: fc.constantFrom<'dont-care' | 'zero'>('dont-care', 'zero'),
          targetExtra: fc.option(fc.nat(1 << 20), { nil: undefined }),
          source: fc.option(fc.constantFrom('ext4', 'zero', 'ntfs'), { nil: undefined }),
        }),
        { nil: undefined },
      ),
    })
    .map(({ extents, ...rest }) => {
      let pos = 0
      const placed = extents.map(({ gap, length, style, dirs }) => {
        const offset = pos + gap
        pos = offset + length
        return { offset, length, style, dirs }
      })
      return { ...rest, extents: placed }
    })
}

const validSpec = specArb({ maxGap: 2 ** 40, maxLength: 4 * 1024 * 1024, maxExtents: 10 })

// ---------------------------------------------------------------------------
// Cases: bytes, what they are, and what parseTorrent must say.

interface Case {
  readonly what: string
  readonly bytes: Buffer
  /** A rejection is required and its message must match; undefined: accepting (with every invariant) is fine too. */
  readonly reject?: RegExp
}

function makeCase(what: string, bytes: Buffer, reject?: RegExp): Case {
  return {
    what,
    bytes,
    reject,
    [fc.toStringMethod]: () => `${what}: ${JSON.stringify(bytes.length > 600 ? bytes.toString('latin1', 0, 600) + '…' : bytes.toString('latin1'))}`,
  } as Case
}

type Key = string | number
type Container = Dict | Value[]

function parentOf(root: Dict, path: readonly Key[]): Container {
  let node: Value = root
  for (const k of path.slice(0, -1)) node = (node as Container)[k as never]
  return node as Container
}

/** Replace (or, with undefined, delete) the value at `path`. */
function setAt(root: Dict, path: readonly Key[], v: Value | undefined): void {
  const parent = parentOf(root, path) as Record<Key, Value>
  const k = path[path.length - 1]
  if (v === undefined) delete parent[k]
  else parent[k] = v
}

type SlotType = 'int' | 'string' | 'list' | 'dict'
interface Slot {
  path: Key[]
  type: SlotType
  message: RegExp
  /** Optional keys may be absent: deleting them is no error. */
  optional?: boolean
}

/** Every key whose type the parser depends on, for file entry `i` and path component `j`. */
function slotsOf(i: number, j: number): Slot[] {
  const file = ['info', 'files', i]
  return [
    { path: ['info'], type: 'dict', message: /^"info" is not a dictionary/ },
    { path: ['info', 'name'], type: 'string', message: /^info\.name is missing or empty/ },
    { path: ['info', 'piece length'], type: 'int', message: /^info\["piece length"\] is not an integer/ },
    { path: ['info', 'pieces'], type: 'string', message: /^info\.pieces is not a byte string/ },
    { path: ['info', 'files'], type: 'list', message: /^info\.files is not a list/ },
    { path: file, type: 'dict', message: new RegExp(`^file entry ${i} is not a dictionary`) },
    { path: [...file, 'length'], type: 'int', message: new RegExp(`^file entry ${i} \\(.*\\): length is not an integer`) },
    { path: [...file, 'path'], type: 'list', message: new RegExp(`^file entry ${i}: path is not a list`) },
    { path: [...file, 'path', j], type: 'string', message: new RegExp(`^file entry ${i}: path component is not a string`) },
    { path: ['blockswarm'], type: 'dict', message: /^"blockswarm" metadata is not a dictionary/, optional: true },
    { path: ['blockswarm', 'gaps'], type: 'string', message: /^blockswarm\.gaps is not a string/, optional: true },
    { path: ['blockswarm', 'target size'], type: 'int', message: /^blockswarm\["target size"\] is not an integer/, optional: true },
    { path: ['blockswarm', 'source'], type: 'string', message: /^blockswarm\.source is not a string/, optional: true },
  ]
}

const WRONG: Record<SlotType, (Value | undefined)[]> = {
  int: [Buffer.from('16384'), Buffer.alloc(0), [], [16384], {}, { length: 1 }, undefined],
  string: [7, 0, -1, [], ['sda1'], {}, { a: 1 }, undefined],
  list: [1, Buffer.from('x'), Buffer.alloc(0), {}, { path: ['0'] }, undefined],
  dict: [1, Buffer.from('x'), [], [{}], undefined],
}

/** A spec with every optional key present, so that each slot exists. */
function withFullMeta(s: TorrentSpec): TorrentSpec {
  return { ...s, meta: { gaps: 'zero', targetExtra: 0, source: 'ext4' } }
}

const wrongTypeCase = fc.tuple(validSpec, fc.nat(), fc.nat(), fc.nat(), fc.nat()).map(([spec, a, b, c, d]) => {
  const s = withFullMeta(spec)
  const i = a % s.extents.length
  const j = b % (s.extents[i].dirs.length + 1)
  const slot = slotsOf(i, j)[c % slotsOf(i, j).length]
  // a list element cannot go missing (that would be a shorter list), nor can an optional key
  const deletable = !slot.optional && typeof slot.path[slot.path.length - 1] === 'string'
  const choices = WRONG[slot.type].filter((v) => v !== undefined || deletable)
  const value = choices[d % choices.length]
  const top = torrentValue(s)
  setAt(top, slot.path, value)
  const label = value === undefined ? 'missing' : `wrong type (${JSON.stringify(value)})`
  return makeCase(`${slot.path.join('.')} ${label}`, encode(top), slot.message)
})

/** Integers that bencode can carry but no slot may hold, and integer syntax that is not bencode at all. */
const BAD_NUMBERS: Record<string, string[]> = {
  'piece length': ['0', '-16384', '16385', '1024', '8192', '536870912', '9007199254740993', '99999999999999999999999999', '1.5', '16384.5', '1e4', '', '+16384', '-', '0x4000', '16 384'],
  length: ['0', '-1', '-0', '1.5', '4.0', '1e3', '', '+5', '9007199254740991', '9007199254740993', '99999999999999999999999', '-99999999999999999999', '--1'],
  'target size': ['-1', '0', '1.5', '', '+1', '99999999999999999999999', '1e9'],
}
/** A syntax error, or the number's key (or, for a length, the extent it breaks) named. */
const NUMBER_REJECTION = /^(bencode: |bad extent: file entry |file entry \d+ \(.*\): length is not an integer|info\["piece length"\] |info\.pieces is \d+ bytes|blockswarm\["target size"\] )/

const badNumberCase = fc.tuple(validSpec, fc.constantFrom(...Object.keys(BAD_NUMBERS)), fc.nat(), fc.nat()).map(([spec, key, a, b]) => {
  const s = withFullMeta(spec)
  const i = a % s.extents.length
  const path = key === 'length' ? ['info', 'files', i, 'length'] : key === 'piece length' ? ['info', 'piece length'] : ['blockswarm', 'target size']
  const digits = BAD_NUMBERS[key][b % BAD_NUMBERS[key].length]
  const top = torrentValue(s)
  setAt(top, path, raw(`i${digits}e`))
  return makeCase(`${path.join('.')} = i${digits}e`, encode(top), NUMBER_REJECTION)
})

const TRAVERSAL = ['..', '.', '', '/', 'a/b', '../etc', '/etc/passwd', '\\', '..\\x', 'x\0', '\0']
const NOT_HEX = ['0'.repeat(33), 'f'.repeat(32), '20000000000000', '0x10', '-1', '+1', '1.5', ' 1', '1 ', 'g', '١٢', 'ｆｆ', 'é', '0\n', '\u001b[31m00']
const badExtentName = fc.oneof(
  fc.constantFrom(...TRAVERSAL, ...NOT_HEX),
  fc.string({ unit: 'binary', maxLength: 40 }).filter((n) => !/^[0-9a-fA-F]{1,32}$/.test(n)),
  fc.bigInt({ min: 2n ** 53n, max: 16n ** 32n - 1n }).map((n) => n.toString(16)),
)

const badNameCase = fc.tuple(validSpec, fc.nat(), badExtentName, fc.constantFrom('name', 'dir', 'path.utf-8', 'info.name', 'name.utf-8')).map(([spec, a, bad, where]) => {
  const top = torrentValue(spec)
  const i = a % spec.extents.length
  const file = (top.info as Dict).files as Dict[]
  const good = file[i].path as string[]
  if (where === 'info.name' || where === 'name.utf-8') {
    // info.name only has to be a safe directory name: only traversal-like names are wrong there
    const name = TRAVERSAL.includes(bad) ? bad : '..'
    ;(top.info as Dict)[where === 'info.name' ? 'name' : 'name.utf-8'] = name
    return makeCase(`${where} ${JSON.stringify(name)}`, encode(top), /^info\.name (.* is not a safe directory name|is missing or empty)/)
  }
  if (where === 'dir') {
    const dir = TRAVERSAL.includes(bad) ? bad : '..'
    file[i].path = [dir, ...good]
    return makeCase(`file ${i} directory ${JSON.stringify(dir)}`, encode(top), new RegExp(`^bad extent: file entry ${i} .*unsafe path component`))
  }
  const path = [...good.slice(0, -1), bad]
  if (where === 'name') file[i].path = path
  else file[i]['path.utf-8'] = path
  return makeCase(`file ${i} ${where} ${JSON.stringify(bad)}`, encode(top), new RegExp(`^bad extent: file entry ${i} .*(unsafe path component|is not a hex offset|beyond 2\\^53)`))
})

const manyExtents = validSpec.filter((s) => s.extents.length >= 2)
const badLayoutCase = fc.tuple(manyExtents, fc.nat(), fc.nat(), fc.constantFrom('unsorted', 'overlap', 'zero-length', 'no files')).map(([spec, a, b, kind]) => {
  const extents = spec.extents.map((e) => ({ ...e }))
  const i = a % (extents.length - 1)
  if (kind === 'unsorted') {
    ;[extents[i], extents[i + 1]] = [extents[i + 1], extents[i]]
  } else if (kind === 'overlap') {
    extents[i + 1].offset = extents[i].offset + (b % extents[i].length)
  } else if (kind === 'zero-length') {
    extents[i].length = 0
  }
  const s = { ...spec, extents }
  const top = torrentValue(s)
  if (kind === 'no files') ((top.info as Dict).files as Value[]).length = 0
  const at = kind === 'unsorted' || kind === 'overlap' ? i + 1 : i
  const message = {
    unsorted: `^bad extent: file entry ${at} .*must be sorted by offset`,
    overlap: `^bad extent: file entry ${at} .*overlaps the previous extent 0x${extents[i].offset.toString(16)}\\+${extents[i].length} `,
    'zero-length': `^bad extent: file entry ${at} .*length 0 is not a positive integer`,
    'no files': '^bad extent: torrent has no file entries',
  }[kind]
  return makeCase(`${kind} at file entry ${at}`, encode(top), new RegExp(message))
})

const badPiecesCase = fc.tuple(validSpec, fc.constantFrom(-20, -1, 1, 19, 20, -Infinity)).map(([spec, delta]) => {
  const top = torrentValue(spec)
  const info = top.info as Dict
  const pieces = info.pieces as Buffer
  // pieces is at least 20 bytes, so each change makes it a different length
  const n = delta === -Infinity ? 0 : Math.max(0, pieces.length + delta)
  info.pieces = Buffer.alloc(n, 1)
  return makeCase(`pieces of ${n} bytes instead of ${pieces.length}`, encode(top), new RegExp(`^info\\.pieces is ${n} bytes; \\d+ pieces of \\d+ over \\d+ bytes need ${pieces.length}$`))
})

/** Lists or dictionaries nested `depth` deep (a bencode bomb for a recursive decoder). */
function nested(depth: number, kind: 'list' | 'dict'): Raw {
  return kind === 'list' ? raw('l'.repeat(depth) + 'e'.repeat(depth)) : raw('d1:a'.repeat(depth) + 'i0e' + 'e'.repeat(depth))
}

const bombCase = fc
  .tuple(validSpec, fc.integer({ min: 70, max: 20000 }), fc.constantFrom<'list' | 'dict'>('list', 'dict'), fc.constantFrom('top', 'info', 'files', 'path', 'blockswarm', 'whole', 'unterminated'))
  .map(([spec, depth, kind, where]) => {
    if (where === 'whole') return makeCase(`a ${kind} nested ${depth} deep`, nested(depth, kind).bytes, /^bencode nesting is too deep/)
    if (where === 'unterminated') return makeCase(`${depth} unterminated lists`, Buffer.from('d4:info' + 'l'.repeat(depth)), /^bencode nesting is too deep/)
    const top = torrentValue(spec)
    const bomb = nested(depth, kind)
    if (where === 'top') top.x = bomb
    if (where === 'info') (top.info as Dict).x = bomb
    if (where === 'files') (top.info as Dict).files = bomb
    if (where === 'path') ((top.info as Dict).files as Dict[])[0].path = bomb
    if (where === 'blockswarm') top.blockswarm = { gaps: 'zero', x: bomb }
    return makeCase(`a ${kind} nested ${depth} deep at ${where}`, encode(top), /^bencode nesting is too deep/)
  })

const shallowNestingCase = fc.tuple(validSpec, fc.integer({ min: 1, max: 60 }), fc.constantFrom<'list' | 'dict'>('list', 'dict')).map(([spec, depth, kind]) => {
  const top = torrentValue(spec)
  top.x = nested(depth, kind)
  return makeCase(`an unknown top-level key nested ${depth} deep (allowed)`, encode(top))
})

const badMetaCase = fc
  .tuple(validSpec, fc.constantFrom('maybe', '', 'ZERO', 'zero ', 'dont care'), fc.nat(), fc.constantFrom('gaps', 'target size'))
  .map(([spec, gaps, shortBy, key]) => {
    const top = torrentValue(spec)
    if (key === 'gaps') {
      top.blockswarm = { gaps }
      return makeCase(`blockswarm.gaps ${JSON.stringify(gaps)}`, encode(top), /^blockswarm\.gaps ".*" is neither "dont-care" nor "zero"/)
    }
    const size = endOf(spec) - 1 - (shortBy % endOf(spec))
    top.blockswarm = { gaps: 'zero', 'target size': size }
    return makeCase(`blockswarm["target size"] ${size} < end ${endOf(spec)}`, encode(top), new RegExp(`^blockswarm\\["target size"\\] ${size} is smaller than the last extent's end ${endOf(spec)}`))
  })

const truncatedCase = fc.tuple(validSpec, fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })).map(([spec, at]) => {
  const bytes = encode(torrentValue(spec))
  const cut = Math.floor(at * bytes.length)
  return makeCase(`cut at ${cut} of ${bytes.length}`, bytes.subarray(0, cut), /^(empty file|bencode: )/)
})

const flippedCase = fc
  .tuple(validSpec, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }))
  .map(([spec, flips]) => {
    const bytes = Buffer.from(encode(torrentValue(spec)))
    // flips in the structure rather than in the 20-byte hashes (which take any value)
    const pieces = bytes.indexOf('6:pieces')
    const where = flips.map(([p, x]) => {
      const at = p % bytes.length
      const pos = at >= pieces && bytes.length > 2000 ? at % pieces : at
      bytes[pos] ^= x
      return pos
    })
    return makeCase(`bytes flipped at ${where.join(', ')}`, bytes)
  })

/** Inputs that once hung, crashed or were misread; each must be refused with this message. */
const REGRESSIONS: [string, RegExp][] = [
  ['d4:infol-3:ee', /^bencode: unexpected byte 0x2d at offset 8/], // the bencode package loops forever on a negative string length
  ['d4:infod4:name-1:xee', /^bencode: unexpected byte 0x2d at offset 14/],
  ['d4:infoi1.5ee', /^bencode: "1\.5" at offset 7 is not an integer/], // would read as 1
  ['d4:infoiee', /^bencode: "" at offset 7 is not an integer/], // would read as 0
  ['d4:infod9:__proto__3:abcee', /^bencode: dictionary key "__proto__" at offset 8 is not allowed/], // crashed on a fake Uint8Array prototype
  ['d4:infod4:name1:xe4:infod4:name1:yee', /^bencode: dictionary key "info" appears twice/], // hash of the first, content of the second
  ['di1e4:infoe', /^bencode: expected a dictionary key/],
  ['d4:infod4:namee', /^bencode: dictionary key "name" has no value/],
  ['d4:info', /^bencode: unterminated dictionary starting at offset 0/],
  ['d99999999999999999999:x', /^bencode: dictionary key at offset 1 runs past the end/],
]

// ---------------------------------------------------------------------------
// The checks.

const vmContext = vm.createContext({ parseTorrent, input: undefined as Buffer | undefined, options: {} })
const parseInVm = new vm.Script('parseTorrent(input, options)')
/** Per-call bound: generous (a call takes well under a millisecond), only there to turn a hang into a failure. */
const PARSE_BOUND_MS = 5000

type Outcome = { torrent: ExtentTorrent } | { error: unknown }

function boundedParse(bytes: Buffer, source?: string): Outcome {
  vmContext.input = bytes
  vmContext.options = { source }
  try {
    return { torrent: parseInVm.runInContext(vmContext, { timeout: PARSE_BOUND_MS }) as ExtentTorrent }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT') throw new Error(`parseTorrent did not return within ${PARSE_BOUND_MS} ms`)
    return { error }
  }
}

/** What everything downstream of parseTorrent trusts without checking again. */
function checkInvariants(t: ExtentTorrent): void {
  expect(t.infoHash).toMatch(/^[0-9a-f]{40}$/)
  expect(t.name).not.toBe('')
  expect(isUnsafeComponent(t.name)).toBe(false)
  expect(Number.isSafeInteger(t.pieceLength) && t.pieceLength >= MIN_PIECE_LENGTH && t.pieceLength <= MAX_PIECE_LENGTH).toBe(true)
  expect(t.pieceLength & (t.pieceLength - 1)).toBe(0)
  expect(t.extents.length).toBeGreaterThan(0)
  let start = 0
  let prevEnd = -1
  for (const e of t.extents) {
    for (const n of [e.offset, e.length, e.start, e.offset + e.length]) expect(Number.isSafeInteger(n)).toBe(true)
    expect(e.offset).toBeGreaterThanOrEqual(0)
    expect(e.length).toBeGreaterThan(0)
    expect(e.offset).toBeGreaterThanOrEqual(prevEnd) // sorted and non-overlapping
    expect(e.start).toBe(start)
    expect(e.name).toMatch(/^[0-9a-fA-F]{1,32}$/)
    expect(BigInt('0x' + e.name)).toBe(BigInt(e.offset))
    prevEnd = e.offset + e.length
    start += e.length
  }
  expect(Number.isSafeInteger(start)).toBe(true)
  expect(t.totalLength).toBe(start)
  expect(t.pieceCount).toBe(Math.ceil(start / t.pieceLength))
  expect(t.pieces.length).toBe(20 * t.pieceCount)
  expect(t.layout).toMatchObject({ pieceLength: t.pieceLength, totalLength: start, pieceCount: t.pieceCount })
  expect(['dont-care', 'zero']).toContain(t.meta.gaps)
  if (t.meta.targetSize !== undefined) expect(Number.isSafeInteger(t.meta.targetSize) && t.meta.targetSize >= extentsEnd(t.extents)).toBe(true)
}

/** parseTorrent's catch-all wraps an unexpected exception in these: seeing one means the parser crashed. */
const CRASH = /^(not a valid torrent: |not bencoded data )/

function checkCase(c: Case): void {
  const outcome = boundedParse(c.bytes)
  if ('torrent' in outcome) {
    if (c.reject) throw new Error(`${c.what}: accepted, but should be refused with ${c.reject}`)
    checkInvariants(outcome.torrent)
    return
  }
  const err = outcome.error as Error
  if (!(err instanceof TorrentError)) throw new Error(`${c.what}: threw ${err?.name} (not a TorrentError): ${err?.message}`)
  expect(err.message, `${c.what}: the parser crashed`).not.toMatch(CRASH)
  expect(err.message, `${c.what}: the message is not one clean line`).not.toMatch(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/)
  if (c.reject) expect(err.message, c.what).toMatch(c.reject)
}

const malformed: [string, fc.Arbitrary<Case>][] = [
  ['truncated at a random point', truncatedCase],
  ['a wrong type (or nothing) for each key', wrongTypeCase],
  ['bad integers: negative, zero, huge, BigInt-sized, floats, bad syntax', badNumberCase],
  ['non-hex, traversal and oversized names', badNameCase],
  ['unsorted, overlapping, zero-length and missing extents', badLayoutCase],
  ['a pieces string of the wrong length', badPiecesCase],
  ['bencode bombs: lists and dictionaries nested far too deep', bombCase],
  ['a blockswarm meta dictionary with bad values', badMetaCase],
]

describe('parseTorrent on hostile input', () => {
  it('accepts valid torrents of every shape and reads them as written', () => {
    fc.assert(
      fc.property(validSpec, (spec) => {
        const out = boundedParse(encode(torrentValue(spec)))
        if (!('torrent' in out)) throw out.error
        const t = out.torrent
        checkInvariants(t)
        expect(t.name).toBe(Buffer.from(spec.name).toString())
        expect(t.pieceLength).toBe(spec.pieceLength)
        expect(t.extents.map((e) => [e.offset, e.length, e.name])).toEqual(spec.extents.map((e) => [e.offset, e.length, hexName(e.offset, e.style)]))
        expect(t.meta.gaps).toBe(spec.meta?.gaps ?? 'dont-care')
        expect(t.meta.targetSize).toBe(spec.meta?.targetExtra === undefined ? undefined : endOf(spec) + spec.meta.targetExtra)
      }),
      { seed: SEED, numRuns: RUNS },
    )
  })

  for (const [what, arb] of malformed) {
    it(`refuses ${what} with a TorrentError naming the problem`, () => {
      fc.assert(fc.property(arb, checkCase), { seed: SEED, numRuns: RUNS })
    })
  }

  it('random byte flips: a torrent that holds every invariant, or a TorrentError', () => {
    fc.assert(fc.property(flippedCase, checkCase), { seed: SEED, numRuns: 2 * RUNS })
  })

  it('allows unknown keys nested up to the depth limit', () => {
    fc.assert(fc.property(shallowNestingCase, checkCase), { seed: SEED, numRuns: 50 })
  })

  it.each(REGRESSIONS)('refuses %j (the bencode package hangs, crashes or misreads it)', (text, message) => {
    checkCase(makeCase(text, Buffer.from(text, 'latin1'), message))
  })
})

describe('blockswarm inspect on hostile input', () => {
  it('exits non-zero with one line on stderr, "blockswarm: <file>: <problem>", and no stack trace', async () => {
    const dir = await tempDir('bsw-fuzz-')
    const cases = [
      ...fc.sample(fc.oneof(...malformed.map(([, arb]) => arb)), { seed: SEED, numRuns: 28 }),
      ...REGRESSIONS.slice(0, 2).map(([text]) => makeCase(text, Buffer.from(text, 'latin1'))),
    ]
    const files = await Promise.all(
      cases.map(async (c, i) => {
        const file = join(dir, `case-${i}.torrent`)
        await writeFile(file, c.bytes)
        return file
      }),
    )
    const results: { file: string; what: string; code: number; stdout: string; stderr: string; expected: string }[] = []
    // three processes at a time: each is a node start-up, the CI has two cores
    for (let i = 0; i < cases.length; i += 3) {
      const batch = cases.slice(i, i + 3).map(async (c, k) => {
        const file = files[i + k]
        const parsed = boundedParse(c.bytes, file)
        const expected = 'error' in parsed ? `blockswarm: ${(parsed.error as Error).message}\n` : ''
        const r = await cli(['inspect', file], { timeoutMs: 30_000 })
        return { file, what: c.what, expected, ...r }
      })
      results.push(...(await Promise.all(batch)))
    }
    for (const r of results) {
      expect(r.expected, `${r.what}: parseTorrent accepted it`).not.toBe('')
      expect(r.code, r.what).toBe(1)
      expect(r.stdout, r.what).toBe('')
      expect(r.stderr, r.what).toBe(r.expected)
      expect(r.stderr.split('\n')).toHaveLength(2)
      expect(r.stderr).toMatch(new RegExp(`^blockswarm: ${r.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `))
      expect(r.stderr).not.toMatch(/\n\s+at /)
    }
  })
})

describe('openStore on valid torrents whose extents end past the target', () => {
  /** Small extents (all within 512 KiB) and a target size that cuts into or before the last of them. */
  const pastEnd = fc
    .tuple(specArb({ maxGap: 64 * KiB, maxLength: 64 * KiB, maxExtents: 8, pieceLengths: fc.constant(16 * KiB) }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }))
    .filter(([spec]) => endOf(spec) <= 512 * KiB && endOf(spec) > 1)
    .map(([spec, at]) => ({ spec, size: 1 + Math.floor(at * (endOf(spec) - 1)) }))

  const firstPastEnd = (t: ExtentTorrent, size: number) => t.extents.find((e) => e.offset + e.length > size)!

  it('an image file of a known pattern: refused naming the first extent that does not fit and the size; not a byte changes', async () => {
    const dir = await tempDir('bsw-fuzz-')
    let n = 0
    await fc.assert(
      fc.asyncProperty(pastEnd, async ({ spec, size }) => {
        const t = parseTorrent(encode(torrentValue(spec)))
        const file = join(dir, `target-${n}.img`)
        const pattern = pseudoRandom(size, ++n)
        await writeFile(file, pattern)
        const err = await openStore(t, file, { mode: 'write' }).then(
          async (store) => {
            await store.close()
            return undefined
          },
          (e: unknown) => e,
        )
        expect(err).toBeInstanceOf(TargetRefused)
        expect((err as TargetRefused).problem).toBe('too-small')
        const e = firstPastEnd(t, size)
        expect((err as Error).message.startsWith(`extent 0x${e.offset.toString(16)}+${e.length} ends past ${file} (size ${size})`), (err as Error).message).toBe(true)
        expect((await readFile(file)).equals(pattern)).toBe(true)
        await unlink(file)
      }),
      { seed: SEED, numRuns: 60 },
    )
  })

  it('a loop device: refused the same way, the device unchanged; a torrent that ends exactly at its end is accepted', async () => {
    const dir = await tempDir('bsw-fuzz-')
    const size = 128 * KiB
    const file = join(dir, 'loop.img')
    const pattern = pseudoRandom(size, 77)
    await writeFile(file, pattern)
    const dev = await loopAttach(file)
    const cases = fc.sample(
      pastEnd.filter(({ spec }) => endOf(spec) > size),
      { seed: SEED, numRuns: 15 },
    )
    for (const { spec } of cases) {
      const t = parseTorrent(encode(torrentValue(spec)))
      const err = await openStore(t, dev, { mode: 'write' }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TargetRefused)
      const e = firstPastEnd(t, size)
      expect((err as Error).message).toBe(`extent 0x${e.offset.toString(16)}+${e.length} ends past ${dev} (size ${size})`)
    }
    const exact = parseTorrent(
      encode(torrentValue({ name: 'loop', pieceLength: 16 * KiB, extents: [{ offset: size - 5000, length: 5000, style: 'pad32', dirs: [] }] })),
    )
    await (await openStore(exact, dev, { mode: 'write' })).close()
    expect((await readFile(dev)).equals(pattern)).toBe(true)
    expect((await readFile(file)).equals(pattern)).toBe(true)
  })
})

describe('AddTorrent over gRPC on hostile input', () => {
  it('answers every malformed torrent with INVALID_ARGUMENT naming the problem, writes nothing, and keeps deploying meanwhile', async () => {
    const dir = await tempDir('bsw-fuzz-grpc-')
    // A real deploy in progress (a slow seeder), so "keeps serving" is a fact, not an assumption.
    const image = await makeImage(dir, 'golden', 4 * 1024 * 1024)
    const seeder = await startSeeder(image, 1024 * 1024)
    const daemon = await startInProcessDaemon({ peers: [seeder.peer] })
    const good = await makeTarget(dir, 'good.img', image.size)
    const client = connectControl(daemon.address)
    onCleanup(async () => client.close())
    await client.ezio.AddTorrent({ torrent: image.torrent.raw, savePath: good, seedingMode: false, maxUploads: 0, maxConnections: 0, sequentialDownload: false })
    // A target of a known pattern that every malformed add names: not one byte may change.
    const victim = join(dir, 'victim.img')
    const pattern = pseudoRandom(256 * 1024, 99)
    await writeFile(victim, pattern)

    const cases = fc.sample(fc.oneof(...malformed.map(([, arb]) => arb)), { seed: SEED, numRuns: 200 })
    for (const c of cases) {
      const parsed = boundedParse(c.bytes)
      if ('torrent' in parsed) continue // a case that happens to be valid (e.g. a harmless flip) is not the point here
      let status: { code?: number; details?: string } | undefined
      try {
        await client.ezio.AddTorrent({ torrent: c.bytes, savePath: victim, seedingMode: false, maxUploads: 0, maxConnections: 0, sequentialDownload: false })
      } catch (err) {
        status = err as { code?: number; details?: string }
      }
      expect(status, `${c.what}: accepted over gRPC`).toBeDefined()
      expect(status!.code, `${c.what}: ${status!.details}`).toBe(Status.INVALID_ARGUMENT)
      // the control layer answers an empty request itself ("torrent is empty: …"); anything else carries the parser's reason
      if (c.bytes.length === 0) expect(status!.details, c.what).toMatch(/^torrent is empty/)
      else expect(status!.details, c.what).toContain((parsed.error as Error).message)
    }
    expect((await readFile(victim)).equals(pattern)).toBe(true)
    expect(daemon.session.status().map((s) => s.infoHash)).toEqual([image.torrent.infoHash])
    expect(daemon.exits).toEqual([])
    // The deploy that ran meanwhile finishes exact.
    const until = Date.now() + 60_000
    while (!daemon.session.get(image.torrent.infoHash)?.finishedAt && Date.now() < until) await new Promise((r) => setTimeout(r, 200))
    const done = daemon.session.get(image.torrent.infoHash)!
    expect(done.error).toBeUndefined()
    expect(done.piecesDone).toBe(done.pieceCount)
    expect(extentDigest(image.torrent, await readFile(good))).toBe(extentDigest(image.torrent, image.bytes))
  })
})
