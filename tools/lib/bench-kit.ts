/**
 * What the one-seeder benchmarks share (bench:transfer, bench:check): a
 * pseudo-random image with extents of a filesystem's shape and its torrent
 * (16 MiB pieces), the same extents as plain files for libtorrent, prefilled
 * targets, the raw-write and SHA-1 references, and processes started, watched
 * (peak RSS), timed and cleaned up.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { createCipheriv, createHash } from 'node:crypto'
import { closeSync, fdatasyncSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { extentName } from '../../src/torrent/extents.js'
import { buildTorrent, type ExtentTorrent, pieceHash } from '../../src/torrent/metainfo.js'
import { mapPieceRange, pieceSize } from '../../src/torrent/piece-map.js'
import { memoryOf, processGone } from './process-stats.js'
import { mulberry32 } from './random.js'

const ROOT = resolve(import.meta.dirname, '../../..')
export const CLI = join(ROOT, 'bin/blockswarm.js')
const LT_PEER = join(ROOT, 'tools/bench/libtorrent-peer.py')
export const PYTHON = '/usr/bin/python3'
export const PIECE = 16 * 1024 * 1024
export const MiB = 1024 * 1024
const BLOCK = 4096

const children = new Set<ChildProcess>()
/** Loop devices the bench attached (detached by cleanup). */
export const loops: string[] = []
let work: string | undefined
let benchName = 'bench'

/**
 * The bench's temporary directory, removed with everything else by cleanup()
 * on exit, on error and on SIGINT/SIGTERM.
 */
export function workDir(name: string): string {
  benchName = name
  process.on('exit', cleanup)
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) process.on(sig, () => process.exit(code))
  work = mkdtempSync(join(tmpdir(), `bsw-${name}-`))
  return work
}

/** Kill the processes started (by PID), detach the loop devices, remove the work directory. */
export function cleanup(): void {
  for (const c of children) {
    if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) continue
    c.kill('SIGKILL')
    // the loop device is busy until the process is gone
    for (let i = 0; i < 100 && !processGone(c.pid); i++) execFileSync('sleep', ['0.02'])
  }
  for (const dev of loops.splice(0)) {
    try {
      execFileSync('losetup', ['-d', dev], { stdio: 'ignore' })
    } catch {
      process.stderr.write(`bench:${benchName}: could not detach ${dev}; detach it with: losetup -d ${dev}\n`)
    }
  }
  if (work) rmSync(work, { recursive: true, force: true })
  work = undefined
}

// ---------------------------------------------------------------------------
// The image, the torrent and the plain-file copy for libtorrent

/** A small deterministic PRNG, so every run has the same extents. */
const prng = mulberry32

/**
 * Extents shaped like a filesystem's used blocks: most bytes in runs of
 * 1-16 MiB (file data), nine in ten extents small (4-256 KiB: metadata,
 * small files), gaps of 4-256 KiB and now and then 4-16 MiB of free space.
 */
export function planExtents(total: number): { offset: number; length: number }[] {
  const rand = prng(20240601)
  const blocks = (lo: number, hi: number) => (lo + Math.floor(rand() * (hi - lo + 1))) * BLOCK
  const out: { offset: number; length: number }[] = []
  let pos = 0
  let left = total
  while (left > 0) {
    const want = rand() < 0.9 ? blocks(1, 64) : blocks(256, 4096)
    const length = Math.min(want, left)
    out.push({ offset: pos, length })
    left -= length
    pos += length + (rand() < 0.97 ? blocks(1, 64) : blocks(1024, 4096))
  }
  return out
}

export interface Fixture {
  readonly image: string
  readonly imageSize: number
  readonly torrentFile: string
  readonly torrent: ExtentTorrent
  /** save_path for libtorrent's seed (holds NAME/<hex offset> files). */
  readonly ltSeedDir: string
}

/** Write the image (sparse gaps), the extent files and the torrent; the data is AES-CTR pseudo-random. */
export function makeFixture(dir: string, size: number): Fixture {
  const extents = planExtents(size)
  const last = extents[extents.length - 1]
  const imageSize = Math.ceil((last.offset + last.length + 8 * MiB) / MiB) * MiB
  const name = 'bench'
  const image = join(dir, 'golden.img')
  const ltSeedDir = join(dir, 'lt-seed')
  mkdirSync(join(ltSeedDir, name), { recursive: true })
  const img = openSync(image, 'w')
  writeSync(img, Buffer.alloc(1), 0, 1, imageSize - 1)
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update('bench:transfer').digest(), Buffer.alloc(16))
  const zeros = Buffer.alloc(PIECE)
  const hashes: Buffer[] = []
  let e = 0
  let within = 0
  let ext = openSync(join(ltSeedDir, name, extentName(extents[0].offset)), 'w')
  for (let done = 0; done < size; done += PIECE) {
    const piece = cipher.update(zeros.subarray(0, Math.min(PIECE, size - done)))
    hashes.push(createHash('sha1').update(piece).digest())
    let at = 0
    while (at < piece.length) {
      const x = extents[e]
      const n = Math.min(x.length - within, piece.length - at)
      writeSync(img, piece, at, n, x.offset + within)
      writeSync(ext, piece, at, n)
      at += n
      within += n
      if (within === x.length && e + 1 < extents.length) {
        closeSync(ext)
        e++
        within = 0
        ext = openSync(join(ltSeedDir, name, extentName(extents[e].offset)), 'w')
      }
    }
  }
  closeSync(ext)
  closeSync(img)
  const { buffer, torrent } = buildTorrent({
    name,
    pieceLength: PIECE,
    pieces: Buffer.concat(hashes),
    extents,
    meta: { gaps: 'dont-care', targetSize: imageSize, source: 'bench' },
    createdBy: 'bench:transfer',
  })
  const torrentFile = join(dir, 'bench.torrent')
  writeFileSync(torrentFile, buffer)
  return { image, imageSize, torrentFile, torrent, ltSeedDir }
}

/** A file of `size` bytes written through (not sparse), so deploys overwrite allocated blocks. */
export function prefill(path: string, size: number): void {
  const fd = openSync(path, 'w')
  const buf = Buffer.alloc(PIECE, 0x5a)
  for (let pos = 0; pos < size; pos += PIECE) writeSync(fd, buf, 0, Math.min(PIECE, size - pos), pos)
  fdatasyncSync(fd)
  closeSync(fd)
}

// ---------------------------------------------------------------------------
// References: raw writes of the same bytes to the same target, SHA-1

/** Every piece's bytes written where a deploy writes them (piece order, one write per slice), then fdatasync; MB/s of the writes. */
export function rawWrite(f: Fixture, target: string): number {
  const src = openSync(f.image, 'r')
  const dst = openSync(target, 'r+')
  const buf = Buffer.allocUnsafe(PIECE)
  const { layout } = f.torrent
  let ns = 0n
  try {
    for (let p = 0; p < layout.pieceCount; p++) {
      const slices = mapPieceRange(layout, p, 0, pieceSize(layout, p))
      for (const s of slices) readSync(src, buf, s.bufferOffset, s.length, s.diskOffset)
      const t0 = process.hrtime.bigint()
      for (const s of slices) {
        let done = 0
        while (done < s.length) done += writeSync(dst, buf, s.bufferOffset + done, s.length - done, s.diskOffset + done)
      }
      ns += process.hrtime.bigint() - t0
    }
    const t0 = process.hrtime.bigint()
    fdatasyncSync(dst)
    ns += process.hrtime.bigint() - t0
  } finally {
    closeSync(src)
    closeSync(dst)
  }
  return layout.totalLength / (Number(ns) / 1e9) / 1e6
}

/** Node's SHA-1 (node:crypto, main thread) over 16 MiB pieces, MB/s. */
export function sha1Rate(size: number): number {
  const piece = createCipheriv('aes-256-ctr', Buffer.alloc(32, 1), Buffer.alloc(16)).update(Buffer.alloc(PIECE))
  const n = Math.max(4, Math.round(size / PIECE))
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) createHash('sha1').update(piece).digest()
  return (n * PIECE) / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6
}

// ---------------------------------------------------------------------------
// Processes: start, watch (RSS), time, stop

export interface Watched {
  readonly child: ChildProcess
  readonly exited: Promise<number | null>
  out: string
  err: string
  /** Peak VmHWM and RssAnon seen, bytes. */
  hwm: number
  anon: number
  sample(): void
  stopWatching(): void
}

export function startWatched(cmd: string, args: string[]): Watched {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  const w: Watched = {
    child,
    out: '',
    err: '',
    hwm: 0,
    anon: 0,
    exited: new Promise((res) =>
      child.once('exit', (code) => {
        children.delete(child)
        clearInterval(timer)
        res(code)
      }),
    ),
    sample() {
      const m = child.pid === undefined ? undefined : memoryOf(child.pid)
      if (!m) return
      w.hwm = Math.max(w.hwm, m.hwm)
      w.anon = Math.max(w.anon, m.anon)
    },
    stopWatching: () => clearInterval(timer),
  }
  const timer = setInterval(() => w.sample(), 20)
  child.stdout!.on('data', (d) => (w.out += d))
  child.stderr!.on('data', (d) => (w.err += d))
  return w
}

export async function waitFor(what: string, w: Watched, pred: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms
  while (!pred()) {
    if (w.child.exitCode !== null || w.child.signalCode !== null) throw new Error(`${what}: the process exited (${w.child.exitCode ?? w.child.signalCode}):\n${w.out}${w.err}`)
    if (Date.now() > until) throw new Error(`${what}: not ready within ${ms / 1000} s:\n${w.out}${w.err}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} did not finish within ${ms / 1000} s`)), ms))),
  ])
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => res(typeof a === 'object' && a ? a.port : 0))
    })
  })
}

/** A seeder of the fixture on 127.0.0.1:port, ready; blockswarm's takes `extra` arguments (e.g. --upload-rate). */
export async function startSeeder(kind: 'bs' | 'lt', f: Fixture, port: number, memory?: string, extra: string[] = []): Promise<Watched> {
  if (kind === 'lt') {
    const w = startWatched(PYTHON, [LT_PEER, 'seed', f.torrentFile, f.ltSeedDir, String(port)])
    await waitFor('libtorrent seed', w, () => w.out.includes('"ready"'), 30_000)
    return w
  }
  const args = ['seed', f.torrentFile, f.image, '--port', String(port), '--bind', '127.0.0.1', '--log-level', 'warn']
  if (memory) args.push('--memory', memory)
  const w = startWatched(CLI, [...args, ...extra])
  await waitFor('blockswarm seed', w, () => w.out.includes('opentracker whitelist line'), 30_000)
  return w
}

/** Every extent on `target` holds the image's bytes (each piece hashes to the torrent's value). */
export function verifyTarget(t: ExtentTorrent, target: string): boolean {
  const fd = openSync(target, 'r')
  const buf = Buffer.allocUnsafe(PIECE)
  try {
    for (let p = 0; p < t.pieceCount; p++) {
      const size = pieceSize(t.layout, p)
      for (const s of mapPieceRange(t.layout, p, 0, size)) if (readSync(fd, buf, s.bufferOffset, s.length, s.diskOffset) !== s.length) return false
      if (!createHash('sha1').update(buf.subarray(0, size)).digest().equals(pieceHash(t, p))) return false
    }
    return true
  } finally {
    closeSync(fd)
  }
}

