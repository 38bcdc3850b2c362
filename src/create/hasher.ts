/**
 * Piece hashing for the creator: SHA-1 per piece over the extents
 * concatenated in offset order.
 *
 * Reads are large (up to `readSize`), issued `depth` at a time ahead of the
 * hashing into a fixed ring of buffers (bounded memory: depth × readSize), so
 * the disk (or page cache copy, in libuv's thread pool) runs while the thread
 * hashes. Extents separated by a small gap share one read; the gap's bytes
 * are read and skipped, which beats many tiny reads on fragmented filesystems.
 *
 * SHA-1 is the bottleneck once data comes from the page cache or a fast SSD,
 * so `hashPieces` splits the pieces into groups (≥ 64 MiB each) and hashes
 * them in worker threads, one per core (measured on 2 cores: see
 * tools/bench/create.ts); each worker opens the data itself and runs the same
 * read-ahead pipeline over its groups.
 */
import { createHash, type Hash } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import type { ByteRange } from '../torrent/extents.js'
import { ExtentFilesReader, type NamedExtent } from './extents-dir.js'
import { Source } from './source.js'

/** Anything that reads bytes at an offset: a Source, or a directory of extent files. */
export interface ReadAt {
  read(offset: number, length: number, into: Buffer): Promise<Buffer>
}

export interface HashOptions {
  readonly pieceLength: number
  /** Largest single read, bytes (default 8 MiB). */
  readonly readSize?: number
  /** Reads in flight ahead of the hasher (default 3). */
  readonly depth?: number
  /** Extents closer than this share one read (default 64 KiB); 0 never joins. */
  readonly joinGap?: number
  /** Called after each read is hashed with the total bytes hashed so far. */
  readonly onProgress?: (bytesHashed: number) => void
  /**
   * Also hands each run of stream bytes (within one extent, at disk byte
   * `offset`) to a consumer, in stream order; awaited before its buffer is reused.
   */
  readonly onData?: (offset: number, data: Buffer) => Promise<void> | void
  /** Worker threads for `hashPieces` (default: one per core, at most 4; 0 or 1: hash in this thread). */
  readonly workers?: number
}

/** Where the data is, in a form a worker thread can open for itself. */
export type ReaderSpec =
  | { readonly kind: 'source'; readonly path: string }
  | { readonly kind: 'extent-files'; readonly dir: string; readonly extents: readonly NamedExtent[] }

async function openReader(spec: ReaderSpec): Promise<{ reader: ReadAt; close: () => Promise<void> }> {
  if (spec.kind === 'source') {
    const source = await Source.open(spec.path)
    return { reader: source, close: () => source.close() }
  }
  return { reader: await ExtentFilesReader.open(spec.dir, spec.extents), close: async () => {} }
}

export const DEFAULT_READ_SIZE = 8 * 1024 * 1024
export const DEFAULT_DEPTH = 3
export const DEFAULT_JOIN_GAP = 64 * 1024
/** Smallest run of consecutive pieces one worker hashes on its own. */
export const WORKER_GROUP_BYTES = 64 * 1024 * 1024
export const MAX_WORKERS = 4

/** One read from the source: a disk range and the parts of it that belong to the extent stream. */
interface PlannedRead {
  readonly offset: number
  readonly length: number
  /** [start, end) within the read buffer, in stream order. */
  readonly parts: readonly (readonly [number, number])[]
}

/**
 * Cut the extents into reads that never cross a `readSize`-aligned boundary
 * of the disk (so each is at most `readSize` bytes and aligned for long
 * extents); extents less than `joinGap` apart within one window share a read.
 */
export function* planReads(extents: readonly ByteRange[], readSize: number, joinGap: number): Generator<PlannedRead> {
  let cur: { offset: number; end: number; windowEnd: number; parts: [number, number][] } | undefined
  for (const e of extents) {
    let pos = e.offset
    const end = e.offset + e.length
    while (pos < end) {
      const windowEnd = (Math.floor(pos / readSize) + 1) * readSize
      const n = Math.min(end, windowEnd) - pos
      if (cur && pos < cur.windowEnd && pos - cur.end <= joinGap) {
        cur.parts.push([pos - cur.offset, pos - cur.offset + n])
        cur.end = pos + n
      } else {
        if (cur) yield { offset: cur.offset, length: cur.end - cur.offset, parts: cur.parts }
        cur = { offset: pos, end: pos + n, windowEnd, parts: [[0, n]] }
      }
      pos += n
    }
  }
  if (cur) yield { offset: cur.offset, length: cur.end - cur.offset, parts: cur.parts }
}

/** Feeds stream bytes into per-piece SHA-1s; collects the 20-byte digests in order. */
class PieceHasher {
  private hash: Hash = createHash('sha1')
  private filled = 0
  private piece = 0
  readonly digests: Buffer

  constructor(
    private readonly pieceLength: number,
    private readonly total: number,
  ) {
    this.digests = Buffer.alloc(Math.ceil(total / pieceLength) * 20)
  }

  update(data: Buffer): void {
    let at = 0
    while (at < data.length) {
      const want = Math.min(this.pieceLength, this.total - this.piece * this.pieceLength) - this.filled
      const n = Math.min(want, data.length - at)
      this.hash.update(n === data.length ? data : data.subarray(at, at + n))
      this.filled += n
      at += n
      if (n === want) {
        this.hash.digest().copy(this.digests, this.piece * 20)
        this.piece++
        this.filled = 0
        this.hash = createHash('sha1')
      }
    }
  }

  /** Pieces completed so far. */
  get done(): number {
    return this.piece
  }
}

/**
 * SHA-1 of every piece of the stream formed by `extents` (sorted, disjoint
 * byte ranges of `source`) concatenated. Returns pieceCount × 20 bytes.
 */
export async function hashExtents(source: ReadAt, extents: readonly ByteRange[], opts: HashOptions): Promise<Buffer> {
  const readSize = opts.readSize ?? DEFAULT_READ_SIZE
  const depth = Math.max(1, opts.depth ?? DEFAULT_DEPTH)
  const total = extents.reduce((n, e) => n + e.length, 0)
  const hasher = new PieceHasher(opts.pieceLength, total)
  const plan = planReads(extents, readSize, opts.joinGap ?? DEFAULT_JOIN_GAP)

  const free: Buffer[] = Array.from({ length: depth }, () => Buffer.allocUnsafe(readSize))
  const inflight: Promise<{ read: PlannedRead; buf: Buffer }>[] = []
  const issue = () => {
    while (free.length > 0) {
      const next = plan.next()
      if (next.done) return
      const read = next.value
      const buf = free.pop()!
      inflight.push(source.read(read.offset, read.length, buf).then(() => ({ read, buf })))
    }
  }

  let hashed = 0
  issue()
  try {
    while (inflight.length > 0) {
      const { read, buf } = await inflight.shift()!
      for (const [a, b] of read.parts) {
        hasher.update(buf.subarray(a, b))
        hashed += b - a
        if (opts.onData) await opts.onData(read.offset + a, buf.subarray(a, b))
      }
      free.push(buf)
      issue()
      opts.onProgress?.(hashed)
    }
  } finally {
    // let reads still in flight settle before their buffers are dropped
    await Promise.allSettled(inflight)
  }
  if (hasher.done * 20 !== hasher.digests.length) {
    throw new Error(`hashed ${hashed} of ${total} bytes: the read plan ended early`)
  }
  return hasher.digests
}

/** The part of the extent stream [from, to) as disk ranges. */
function streamSlice(extents: readonly ByteRange[], starts: readonly number[], from: number, to: number): ByteRange[] {
  let lo = 0
  let hi = extents.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1
    if (starts[mid] <= from) lo = mid
    else hi = mid - 1
  }
  const out: ByteRange[] = []
  for (let i = lo; i < extents.length && starts[i] < to; i++) {
    const a = Math.max(from, starts[i])
    const b = Math.min(to, starts[i] + extents[i].length)
    if (b > a) out.push({ offset: extents[i].offset + a - starts[i], length: b - a })
  }
  return out
}

const WORKER_TAG = 'blockswarm-piece-hasher'

/**
 * One worker's share: several groups of whole pieces, their disk ranges
 * concatenated. Every group but the stream's last is a whole number of
 * pieces, so hashing the concatenation yields each group's pieces in turn.
 */
interface WorkerJob {
  readonly tag: typeof WORKER_TAG
  readonly spec: ReaderSpec
  readonly pieceLength: number
  readonly readSize?: number
  readonly depth?: number
  readonly joinGap?: number
  readonly extents: readonly ByteRange[]
}

type WorkerMessage = { kind: 'progress'; bytes: number } | { kind: 'done'; digests: Uint8Array }

/**
 * SHA-1 of every piece of the stream formed by `extents` of the data that
 * `spec` names. Hashes in worker threads unless told otherwise or `onData`
 * needs the bytes in stream order here.
 */
export async function hashPieces(spec: ReaderSpec, extents: readonly ByteRange[], opts: HashOptions): Promise<Buffer> {
  const total = extents.reduce((n, e) => n + e.length, 0)
  const groupPieces = Math.max(1, Math.ceil(WORKER_GROUP_BYTES / opts.pieceLength))
  const pieceCount = Math.ceil(total / opts.pieceLength)
  const groupCount = Math.ceil(pieceCount / groupPieces)
  const workers = opts.onData ? 0 : Math.min(opts.workers ?? Math.min(availableParallelism(), MAX_WORKERS), groupCount)
  if (workers <= 1) {
    const { reader, close } = await openReader(spec)
    try {
      return await hashExtents(reader, extents, opts)
    } finally {
      await close()
    }
  }

  // group g (pieces g*groupPieces …) goes to worker g % workers
  const starts: number[] = []
  extents.reduce((pos, e) => (starts.push(pos), pos + e.length), 0)
  const shares: ByteRange[][] = Array.from({ length: workers }, () => [])
  for (let g = 0; g < groupCount; g++) {
    const from = g * groupPieces * opts.pieceLength
    const to = Math.min(total, from + groupPieces * opts.pieceLength)
    shares[g % workers].push(...streamSlice(extents, starts, from, to))
  }

  const digests = Buffer.alloc(pieceCount * 20)
  let hashed = 0
  const running = shares.map((share) => {
    const job: WorkerJob = { tag: WORKER_TAG, spec, pieceLength: opts.pieceLength, readSize: opts.readSize, depth: opts.depth, joinGap: opts.joinGap, extents: share }
    // no inherited node flags (e.g. --input-type, --eval): the worker only runs this module
    return new Worker(new URL(import.meta.url), { workerData: job, execArgv: [] })
  })
  const place = (w: number, ours: Buffer) => {
    // the worker's k-th group is group w + k*workers
    const groupDigestBytes = groupPieces * 20
    for (let k = 0; k * groupDigestBytes < ours.length; k++) {
      ours.copy(digests, (w + k * workers) * groupDigestBytes, k * groupDigestBytes, (k + 1) * groupDigestBytes)
    }
  }
  try {
    await Promise.all(
      running.map(
        (worker, w) =>
          new Promise<void>((resolve, reject) => {
            worker.on('message', (m: WorkerMessage) => {
              if (m.kind === 'progress') {
                hashed += m.bytes
                opts.onProgress?.(hashed)
              } else place(w, Buffer.from(m.digests.buffer, m.digests.byteOffset, m.digests.byteLength))
            })
            worker.on('error', reject)
            worker.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`piece hashing worker exited with code ${code}`))))
          }),
      ),
    )
  } finally {
    await Promise.all(running.map((w) => w.terminate()))
  }
  return digests
}

/** A worker thread's part of hashPieces. */
async function runWorker(job: WorkerJob): Promise<void> {
  const { reader, close } = await openReader(job.spec)
  try {
    let reported = 0
    const digests = await hashExtents(reader, job.extents, {
      pieceLength: job.pieceLength,
      readSize: job.readSize,
      depth: job.depth,
      joinGap: job.joinGap,
      onProgress: (n) => {
        parentPort!.postMessage({ kind: 'progress', bytes: n - reported } satisfies WorkerMessage)
        reported = n
      },
    })
    parentPort!.postMessage({ kind: 'done', digests } satisfies WorkerMessage)
  } finally {
    await close()
  }
}

if (!isMainThread && (workerData as WorkerJob | undefined)?.tag === WORKER_TAG) {
  // a rejection ends the worker; hashPieces receives it as the worker's 'error' event
  void runWorker(workerData as WorkerJob)
}
