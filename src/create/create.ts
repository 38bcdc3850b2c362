/**
 * The creator: from a source (disk, partition, image) or a partclone
 * `torrent.info`, find the extents, hash the pieces and build the extent
 * torrent; optionally also lay the extents out as plain files for standard
 * clients. Nothing here writes to the source (it is opened read-only).
 */
import { realpath, stat } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { describeUser } from '../storage/device-store.js'
import { changingSourceUsers, stableSourceFixes } from '../storage/source-users.js'
import { targetInfo } from '../storage/device-size.js'
import { type ByteRange, extentName } from '../torrent/extents.js'
import {
  buildTorrent,
  DEFAULT_PIECE_LENGTH,
  type ExtentTorrent,
  type GapPolicy,
  MAX_PIECE_LENGTH,
  MIN_PIECE_LENGTH,
} from '../torrent/metainfo.js'
import { ExtentFilesReader, ExtentFilesWriter, type NamedExtent } from './extents-dir.js'
import { hashPieces, type ReaderSpec } from './hasher.js'
import { PARTCLONE_PIECE_LENGTH, type PartcloneInfo, readPartcloneInfo } from './partclone-info.js'
import { Source } from './source.js'
import { usedBlocks, type UsedMode } from './used-blocks.js'

export interface CreateOptions {
  /** Block device, partition or image file; with `fromPartclone` also partclone's output directory, or omitted. */
  readonly source?: string
  /** info.name; default: the source's basename (or partclone's output directory's). */
  readonly name?: string
  readonly pieceLength?: number
  readonly trackers?: readonly string[]
  readonly webSeeds?: readonly string[]
  /** Raw disk images over HTTP holding the source (blockswarm's own dictionary: other clients are unaffected). */
  readonly webSeedImages?: readonly string[]
  readonly mode?: UsedMode
  /** Path of a partclone torrent.info: take the extents (and, if they fit, the hashes) from it. */
  readonly fromPartclone?: string
  /** Also write DIR/NAME/<hex offset>, one file per extent. */
  readonly extentsDir?: string
  /** Image a block device even while it is mounted read-write (or swap): its content may change while it is read. */
  readonly force?: boolean
  /** Called once the extents are known, with the number of bytes that will be read (0: none). */
  readonly onStart?: (bytesToRead: number) => void
  readonly onProgress?: (bytesRead: number) => void
}

export interface CreateResult {
  readonly buffer: Buffer
  readonly torrent: ExtentTorrent
  /** The source path, or null when only a torrent.info was used. */
  readonly source: string | null
  /** How the extents were found: the filesystem, 'zero', 'raw', or 'partclone'. */
  readonly fs: string
  readonly gaps: GapPolicy
  /** Bytes read and hashed (0 when partclone's hashes were taken as they are). */
  readonly bytes: number
  readonly seconds: number
  readonly hashesFrom: 'source' | 'partclone'
  /** DIR/NAME, when an extents directory was written. */
  readonly extentsDir: string | null
  /** What the user should know about how the extents were found (zero-scanned regions, table warnings). */
  readonly notes: readonly string[]
}

/** What to hash and how to describe it, before any data is read. */
interface Plan {
  readonly extents: readonly NamedExtent[]
  /** Where to read the data; null when partclone's hashes are taken as they are. */
  readonly data: ReaderSpec | null
  readonly targetSize: number
  readonly gaps: GapPolicy
  readonly fs: string
  readonly name: string
  /** Hashes that need no reading (partclone's), when they fit the piece size. */
  readonly knownPieces: Buffer | null
  readonly notes: readonly string[]
}

export function checkPieceLength(n: number): number {
  if (!Number.isSafeInteger(n) || n < MIN_PIECE_LENGTH || n > MAX_PIECE_LENGTH || (n & (n - 1)) !== 0) {
    throw new Error(`piece size ${n} is not a power of two between 16 KiB and 256 MiB`)
  }
  return n
}

function checkInsideSource(extents: readonly ByteRange[], source: string, size: number): void {
  const last = extents[extents.length - 1]
  if (last && last.offset + last.length > size) {
    throw new Error(`extent 0x${last.offset.toString(16)}+${last.length} ends past ${source} (size ${size})`)
  }
}

async function planFromSource(path: string, mode: UsedMode, name: string | undefined): Promise<Plan> {
  const source = await Source.open(path)
  try {
    const used = await usedBlocks(source, mode)
    if (used.ranges.length === 0) {
      throw new Error(`${path}: no used bytes found (mode ${mode}, ${used.fs}); there is nothing to put in a torrent`)
    }
    checkInsideSource(used.ranges, path, source.size)
    return {
      extents: used.ranges.map((r) => ({ offset: r.offset, length: r.length, name: extentName(r.offset) })),
      data: { kind: 'source', path },
      targetSize: used.targetSize,
      gaps: used.gaps,
      fs: used.fs,
      name: name ?? basename(path),
      knownPieces: null,
      notes: used.notes,
    }
  } finally {
    await source.close()
  }
}

/**
 * From partclone's torrent.info. The data, when it has to be read, comes from
 * `source`: a device/image (read at the extents' offsets) or a directory of
 * partclone's extent files; without `source`, from the extent files beside
 * the torrent.info.
 */
async function planFromPartclone(infoPath: string, source: string | undefined, name: string | undefined, pieceLength: number, mustRead: boolean): Promise<Plan> {
  const info: PartcloneInfo = await readPartcloneInfo(infoPath)
  const extents = info.extents
  const knownPieces = info.complete && pieceLength === PARTCLONE_PIECE_LENGTH ? info.pieces : null
  const read = !knownPieces || mustRead
  const dataPath = source ?? dirname(infoPath)
  const common = {
    extents,
    gaps: 'dont-care' as const,
    fs: 'partclone',
    name: name ?? basename(resolve(dataPath)),
    knownPieces,
    notes: read && !knownPieces ? [`${infoPath} has ${info.pieces.length / 20} sha1 lines of 16 MiB pieces; hashed the data for ${pieceLength}-byte pieces`] : [],
  }
  if ((await stat(dataPath).catch(() => undefined))?.isDirectory()) {
    // checks every extent file before a byte is read
    if (read) await ExtentFilesReader.open(dataPath, extents)
    const last = extents[extents.length - 1]
    const partcloneSize = info.blockSize !== null && info.blocksTotal !== null ? info.blockSize * info.blocksTotal : null
    return { ...common, data: read ? { kind: 'extent-files', dir: dataPath, extents } : null, targetSize: partcloneSize ?? last.offset + last.length }
  }
  const src = await Source.open(dataPath)
  try {
    checkInsideSource(extents, dataPath, src.size)
    return { ...common, data: read ? { kind: 'source', path: dataPath } : null, targetSize: src.size }
  } finally {
    await src.close()
  }
}

/**
 * Refuse a block-device source that may change while it is read (mounted
 * read-write, its partitions or stacked devices included, or swap): the torrent
 * would match no state of it. With `force`, a note saying so instead.
 */
async function checkSourceNotChanging(source: string | undefined, force: boolean | undefined): Promise<string[]> {
  if (!source) return []
  const info = await targetInfo(source).catch(() => undefined)
  if (info?.kind !== 'block' || info.devno === undefined) return []
  const users = await changingSourceUsers(info.devno)
  if (users.length === 0) return []
  const what = `${source} is in use: ${users.map(describeUser).join('; ')}`
  if (!force) {
    throw new Error(`${what}; its content may change while it is read, so the torrent would match no state of it (${stableSourceFixes(users)}; or use --force)`)
  }
  return [`--force: ${what}; the torrent may not match what is on it, and its seed will then fail the peers' piece checks`]
}

/** Refuse to write the torrent or extent files over the source. */
async function checkNotSource(what: string, path: string | undefined, source: string | undefined): Promise<void> {
  if (!path || !source) return
  const real = async (p: string) => realpath(p).catch(() => resolve(p))
  if ((await real(path)) === (await real(source))) throw new Error(`${what} ${path} is the source itself; it would be overwritten`)
}

/**
 * Find the extents, hash (or take partclone's hashes), optionally write the
 * extents directory, and build the torrent. `outputPath` is only checked
 * (it must not be the source); the caller writes the returned buffer.
 */
export async function createTorrent(opts: CreateOptions, outputPath?: string): Promise<CreateResult> {
  const pieceLength = checkPieceLength(opts.pieceLength ?? DEFAULT_PIECE_LENGTH)
  if (!opts.source && !opts.fromPartclone) throw new Error('no source given (a block device, partition or image file)')
  await checkNotSource('output', outputPath, opts.source)
  await checkNotSource('--extents-dir', opts.extentsDir, opts.source)
  const forceNotes = await checkSourceNotChanging(opts.source, opts.force)
  const started = performance.now()

  const plan = opts.fromPartclone
    ? await planFromPartclone(opts.fromPartclone, opts.source, opts.name, pieceLength, opts.extentsDir !== undefined)
    : await planFromSource(opts.source!, opts.mode ?? 'auto', opts.name)

  let pieces: Buffer
  let bytes = 0
  let extentsDir: string | null = null
  if (plan.data === null) {
    opts.onStart?.(0)
    pieces = plan.knownPieces!
  } else {
    const writer = opts.extentsDir ? await ExtentFilesWriter.create(opts.extentsDir, plan.name, plan.extents) : null
    extentsDir = writer?.path ?? null
    bytes = plan.extents.reduce((n, e) => n + e.length, 0)
    opts.onStart?.(bytes)
    try {
      pieces = await hashPieces(plan.data, plan.extents, {
        pieceLength,
        onProgress: opts.onProgress,
        onData: writer ? (offset, data) => writer.write(offset, data) : undefined,
      })
      if (plan.knownPieces && !plan.knownPieces.equals(pieces)) {
        const at = firstDifferentPiece(plan.knownPieces, pieces)
        const from = plan.data.kind === 'source' ? plan.data.path : plan.data.dir
        throw new Error(`piece ${at} read from ${from} does not match partclone's sha1 in ${opts.fromPartclone}: the data changed since partclone read it`)
      }
      await writer?.close()
    } catch (err) {
      await writer?.abort()
      throw err
    }
  }

  const { buffer, torrent } = buildTorrent({
    name: plan.name,
    pieceLength,
    pieces,
    extents: plan.extents,
    trackers: opts.trackers,
    webSeeds: opts.webSeeds,
    meta: { targetSize: plan.targetSize, gaps: plan.gaps, source: plan.fs, webSeedImages: opts.webSeedImages },
  })
  return {
    buffer,
    torrent,
    source: opts.source ?? null,
    fs: plan.fs,
    gaps: plan.gaps,
    bytes,
    seconds: (performance.now() - started) / 1000,
    hashesFrom: plan.data === null ? 'partclone' : 'source',
    extentsDir,
    notes: [...forceNotes, ...plan.notes],
  }
}

function firstDifferentPiece(a: Buffer, b: Buffer): number {
  for (let i = 0; i * 20 < a.length; i++) if (!a.subarray(i * 20, i * 20 + 20).equals(b.subarray(i * 20, i * 20 + 20))) return i
  return -1
}
