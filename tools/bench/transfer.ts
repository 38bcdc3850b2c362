/**
 * `npm run bench:transfer`: one seeder to one leecher over loopback, the
 * engine against the standard C++ client (libtorrent) in the same run.
 *
 *   npm run bench:transfer -- [--size 1G] [--runs 1] [--warmup 1] [--memory 64M]
 *                             [--cases bs-file,bs-loop,lt-lt,lt-bs,bs-lt]
 *
 * Makes a pseudo-random image with extents of a filesystem's shape (large
 * file runs, many small ones, gaps between) and a torrent over it (16 MiB
 * pieces), plus the same extents as plain files for libtorrent. Then, as
 * separate processes:
 *   bs-file  blockswarm seed → blockswarm deploy onto a prefilled image file
 *   bs-loop  blockswarm seed → blockswarm deploy onto a loop device (losetup)
 *   lt-lt    libtorrent seed → libtorrent leech into plain files (the reference)
 *   lt-bs    libtorrent seed → blockswarm deploy onto the image file
 *   bs-lt    blockswarm seed → libtorrent leech
 * A transfer is timed from the leecher's add to "verified and on the disk"
 * (deploy's fdatasync; libtorrent's fsync of every file), which excludes
 * process start-up (shown apart as wall time, spawn to exit). References in
 * the same run: positioned writes of the same bytes to the same target +
 * fdatasync, and Node's SHA-1 rate on 16 MiB pieces. MB/s = 10^6 bytes/s.
 * CPU-s: the leecher's whole process (reaped-children times); the seeder's
 * during the transfer. Peak RSS: VmHWM polled from /proc (RssAnon peak in
 * brackets: libtorrent maps its files, which counts file pages as RSS).
 * blockswarm runs as the installed command does: bin/blockswarm.js by its #!
 * line (with its V8 flags). Deploys use --skip-check (a fresh target) and the
 * default --memory unless given.
 * Needs root (losetup). Cleans up (processes by PID, the loop device, temp
 * files) on exit, on error and on SIGINT/SIGTERM.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { createCipheriv, createHash } from 'node:crypto'
import { closeSync, existsSync, fdatasyncSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { extentName } from '../../src/torrent/extents.js'
import { buildTorrent, type ExtentTorrent, pieceHash } from '../../src/torrent/metainfo.js'
import { mapPieceRange, pieceSize } from '../../src/torrent/piece-map.js'
import { parseSize } from '../../src/util/size.js'
import { liveCpu, memoryOf, processGone, reapedCpu, textTable } from '../lib/process-stats.js'
import { mulberry32 } from '../lib/random.js'

const ROOT = resolve(import.meta.dirname, '../../..')
const CLI = join(ROOT, 'bin/blockswarm.js')
const LT_PEER = join(ROOT, 'tools/bench/libtorrent-peer.py')
const PYTHON = '/usr/bin/python3'
const PIECE = 16 * 1024 * 1024
const MiB = 1024 * 1024
const BLOCK = 4096
const TRANSFER_TIMEOUT_MS = 300_000
const GOAL_RATIO = 1.1
const GOAL_RSS = 128 * MiB

type CaseName = 'bs-file' | 'bs-loop' | 'lt-lt' | 'lt-bs' | 'bs-lt'
const ALL_CASES: CaseName[] = ['bs-file', 'bs-loop', 'lt-lt', 'lt-bs', 'bs-lt']

interface Options {
  size: number
  runs: number
  warmup: number
  memory?: string
  cases: CaseName[]
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { size: parseSize('1G'), runs: 1, warmup: 1, cases: ALL_CASES }
  for (let i = 0; i < argv.length; i += 2) {
    const v = argv[i + 1]
    if (v === undefined) throw new Error(`${argv[i]} needs a value (see the header of tools/bench/transfer.ts)`)
    switch (argv[i]) {
      case '--size':
        opts.size = parseSize(v)
        if (opts.size < PIECE) throw new Error(`--size ${v}: at least one piece (16M)`)
        break
      case '--runs':
      case '--warmup': {
        const n = Number(v)
        if (!Number.isInteger(n) || n < (argv[i] === '--runs' ? 1 : 0) || n > 20) throw new Error(`${argv[i]} ${v}: a small whole number`)
        if (argv[i] === '--runs') opts.runs = n
        else opts.warmup = n
        break
      }
      case '--memory':
        parseSize(v)
        opts.memory = v
        break
      case '--cases':
        opts.cases = v.split(',').map((c) => {
          if (!ALL_CASES.includes(c as CaseName)) throw new Error(`--cases: ${c} is not one of ${ALL_CASES.join(', ')}`)
          return c as CaseName
        })
        break
      default:
        throw new Error(`unknown option ${argv[i]} (see the header of tools/bench/transfer.ts)`)
    }
  }
  return opts
}

// ---------------------------------------------------------------------------
// Clean-up of everything this run made, also on SIGINT

const children = new Set<ChildProcess>()
const loops: string[] = []
let work: string | undefined

function cleanup(): void {
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
      process.stderr.write(`bench:transfer: could not detach ${dev}; detach it with: losetup -d ${dev}\n`)
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
function planExtents(total: number): { offset: number; length: number }[] {
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

interface Fixture {
  readonly image: string
  readonly imageSize: number
  readonly torrentFile: string
  readonly torrent: ExtentTorrent
  /** save_path for libtorrent's seed (holds NAME/<hex offset> files). */
  readonly ltSeedDir: string
}

/** Write the image (sparse gaps), the extent files and the torrent; the data is AES-CTR pseudo-random. */
function makeFixture(dir: string, size: number): Fixture {
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
function prefill(path: string, size: number): void {
  const fd = openSync(path, 'w')
  const buf = Buffer.alloc(PIECE, 0x5a)
  for (let pos = 0; pos < size; pos += PIECE) writeSync(fd, buf, 0, Math.min(PIECE, size - pos), pos)
  fdatasyncSync(fd)
  closeSync(fd)
}

// ---------------------------------------------------------------------------
// References: raw writes of the same bytes to the same target, SHA-1

/** Every piece's bytes written where a deploy writes them (piece order, one write per slice), then fdatasync; MB/s of the writes. */
function rawWrite(f: Fixture, target: string): number {
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
function sha1Rate(size: number): number {
  const piece = createCipheriv('aes-256-ctr', Buffer.alloc(32, 1), Buffer.alloc(16)).update(Buffer.alloc(PIECE))
  const n = Math.max(4, Math.round(size / PIECE))
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) createHash('sha1').update(piece).digest()
  return (n * PIECE) / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6
}

// ---------------------------------------------------------------------------
// Processes: start, watch (RSS), time, stop

interface Watched {
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

function startWatched(cmd: string, args: string[]): Watched {
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

async function waitFor(what: string, w: Watched, pred: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms
  while (!pred()) {
    if (w.child.exitCode !== null || w.child.signalCode !== null) throw new Error(`${what}: the process exited (${w.child.exitCode ?? w.child.signalCode}):\n${w.out}${w.err}`)
    if (Date.now() > until) throw new Error(`${what}: not ready within ${ms / 1000} s:\n${w.out}${w.err}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} did not finish within ${ms / 1000} s`)), ms))),
  ])
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => res(typeof a === 'object' && a ? a.port : 0))
    })
  })
}

// ---------------------------------------------------------------------------
// One transfer

interface Result {
  mbps: number
  wall: number
  leechCpu: number
  leechHwm: number
  leechAnon: number
  seedCpu: number
  seedHwm: number
  seedAnon: number
  verified: boolean
}

async function startSeeder(kind: 'bs' | 'lt', f: Fixture, port: number, memory?: string): Promise<Watched> {
  if (kind === 'lt') {
    const w = startWatched(PYTHON, [LT_PEER, 'seed', f.torrentFile, f.ltSeedDir, String(port)])
    await waitFor('libtorrent seed', w, () => w.out.includes('"ready"'), 30_000)
    return w
  }
  const args = ['seed', f.torrentFile, f.image, '--port', String(port), '--bind', '127.0.0.1', '--log-level', 'warn']
  if (memory) args.push('--memory', memory)
  const w = startWatched(CLI, args)
  await waitFor('blockswarm seed', w, () => w.out.includes('opentracker whitelist line'), 30_000)
  return w
}

/** Every extent on `target` holds the image's bytes (each piece hashes to the torrent's value). */
function verifyTarget(t: ExtentTorrent, target: string): boolean {
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

async function transfer(c: CaseName, f: Fixture, targets: { file: string; loop: string }, memory?: string): Promise<Result> {
  const seedKind = c.startsWith('lt') ? 'lt' : 'bs'
  const leechKind = c.endsWith('lt') ? 'lt' : 'bs'
  const seedPort = await freePort()
  const leechPort = await freePort()
  const seeder = await startSeeder(seedKind, f, seedPort, memory)
  try {
    let leechArgs: [string, string[]]
    let target: string
    if (leechKind === 'lt') {
      target = join(work!, 'lt-leech')
      rmSync(target, { recursive: true, force: true })
      mkdirSync(target)
      leechArgs = [PYTHON, [LT_PEER, 'leech', f.torrentFile, target, String(leechPort), `127.0.0.1:${seedPort}`]]
    } else {
      target = c === 'bs-loop' ? targets.loop : targets.file
      const args = ['deploy', f.torrentFile, target, '--port', String(leechPort), '--bind', '127.0.0.1', '--peer', `127.0.0.1:${seedPort}`]
      args.push('--skip-check', '--seed-idle', '0', '--json', '--log-level', 'warn')
      if (memory) args.push('--memory', memory)
      leechArgs = [CLI, args]
    }
    const seedCpu0 = liveCpu(seeder.child.pid!)
    const cpu0 = reapedCpu()
    const t0 = performance.now()
    const leecher = startWatched(...leechArgs)
    const code = await withTimeout(leecher.exited, TRANSFER_TIMEOUT_MS, `${c} transfer`)
    const wall = (performance.now() - t0) / 1000
    const leechCpu = reapedCpu() - cpu0
    seeder.sample()
    const seedCpu = liveCpu(seeder.child.pid!) - seedCpu0
    if (code !== 0) throw new Error(`${c}: the leecher exited ${code}:\n${leecher.out}${leecher.err.slice(-4000)}`)
    const last = JSON.parse(leechKind === 'lt' ? leecher.out.trim().split('\n').pop()! : leecher.out) as Record<string, number | boolean>
    const seconds = Number(leechKind === 'lt' ? last.seconds : last.downloadSeconds)
    const verified = leechKind === 'lt' ? last.failed === 0 && last.bytes === f.torrent.totalLength : last.ok === true && verifyTarget(f.torrent, target)
    return {
      mbps: f.torrent.totalLength / seconds / 1e6,
      wall,
      leechCpu,
      leechHwm: leecher.hwm,
      leechAnon: leecher.anon,
      seedCpu,
      seedHwm: seeder.hwm,
      seedAnon: seeder.anon,
      verified,
    }
  } finally {
    seeder.child.kill('SIGTERM')
    await withTimeout(seeder.exited, 20_000, `${seedKind} seeder exit`).catch(() => seeder.child.kill('SIGKILL'))
  }
}

// ---------------------------------------------------------------------------
// Report

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]
const mib = (b: number) => (b / MiB).toFixed(0)

const DESCRIBE: Record<CaseName, string> = {
  'bs-file': 'blockswarm → blockswarm, image file',
  'bs-loop': 'blockswarm → blockswarm, loop device',
  'lt-lt': 'libtorrent → libtorrent, plain files',
  'lt-bs': 'libtorrent → blockswarm, image file',
  'bs-lt': 'blockswarm → libtorrent, plain files',
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2))
  if (process.getuid?.() !== 0) throw new Error('bench:transfer needs root (losetup)')
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: install python3-libtorrent`)
  process.on('exit', cleanup)
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) process.on(sig, () => process.exit(code))

  work = mkdtempSync(join(tmpdir(), 'bsw-transfer-'))
  const say = (s: string) => process.stdout.write(s + '\n')
  const f = makeFixture(work, opts.size)
  const targets = { file: join(work, 'target.img'), loop: '' }
  prefill(targets.file, f.imageSize)
  const backing = join(work, 'loop-backing.img')
  prefill(backing, f.imageSize)
  targets.loop = execFileSync('losetup', ['--find', '--show', backing]).toString().trim()
  loops.push(targets.loop)
  const t = f.torrent
  say(
    `image ${mib(f.imageSize)} MiB, torrent ${(t.totalLength / MiB).toFixed(0)} MiB in ${t.extents.length} extents ` +
      `(${t.extents.filter((e) => e.length < MiB).length} under 1 MiB), ${t.pieceCount} pieces of ${t.pieceLength / MiB} MiB; ` +
      `loop device ${targets.loop}; memory ${opts.memory ?? 'default'}`,
  )

  // This VM pays for fresh pages: touch them with throwaway transfers first.
  for (let i = 0; i < opts.warmup; i++) {
    say(`warm-up ${i + 1}/${opts.warmup}…`)
    await transfer('bs-file', f, targets, opts.memory)
  }
  const raw = { file: [] as number[], loop: [] as number[] }
  const sha: number[] = []
  const results = new Map<CaseName, Result[]>(opts.cases.map((c) => [c, []]))
  for (let r = 0; r < opts.runs; r++) {
    raw.file.push(rawWrite(f, targets.file))
    raw.loop.push(rawWrite(f, targets.loop))
    sha.push(sha1Rate(opts.size))
    for (const c of opts.cases) {
      const res = await transfer(c, f, targets, opts.memory)
      results.get(c)!.push(res)
      say(`run ${r + 1}/${opts.runs} ${c}: ${res.mbps.toFixed(0)} MB/s${res.verified ? '' : ' NOT VERIFIED'}`)
    }
  }

  const rawFile = median(raw.file)
  const rawLoop = median(raw.loop)
  const lt = results.get('lt-lt')
  const ltRate = lt ? median(lt.map((x) => x.mbps)) : undefined
  const rows: string[][] = []
  for (const [c, rs] of results) {
    const m = (k: keyof Result) => median(rs.map((x) => Number(x[k])))
    const rate = m('mbps')
    const rawRef = c === 'bs-loop' ? rawLoop : rawFile
    rows.push([
      DESCRIBE[c],
      rate.toFixed(0),
      ltRate ? (rate / ltRate).toFixed(2) : '-',
      (rate / rawRef).toFixed(2),
      m('wall').toFixed(1),
      m('leechCpu').toFixed(1),
      `${mib(m('leechHwm'))} (${mib(m('leechAnon'))})`,
      m('seedCpu').toFixed(1),
      `${mib(m('seedHwm'))} (${mib(m('seedAnon'))})`,
      rs.every((x) => x.verified) ? 'yes' : 'NO',
    ])
  }
  say('')
  say(`references: raw write ${rawFile.toFixed(0)} MB/s to the image file, ${rawLoop.toFixed(0)} MB/s to ${targets.loop}; Node SHA-1 ${median(sha).toFixed(0)} MB/s`)
  say(`${opts.runs > 1 ? `median of ${opts.runs} runs; ` : ''}MB/s from the leecher's add to verified and on the disk; wall = spawn to exit`)
  say('')
  say(textTable(['seeder → leecher, target', 'MB/s', '×libtorrent', '×raw write', 'wall s', 'leech CPU-s', 'leech peak RSS MiB', 'seed CPU-s', 'seed peak RSS MiB', 'verified'], rows))

  // The issue's goals: ≥ 1.1× libtorrent in the same run, RSS ≤ 128 MiB on both sides.
  const goals: string[] = []
  for (const c of ['bs-file', 'bs-loop'] as const) {
    const rs = results.get(c)
    if (!rs) continue
    const rate = median(rs.map((x) => x.mbps))
    const hwm = Math.max(median(rs.map((x) => x.leechHwm)), median(rs.map((x) => x.seedHwm)))
    const speedOk = ltRate !== undefined && rate >= GOAL_RATIO * ltRate
    const rssOk = hwm <= GOAL_RSS
    if (!rs.every((x) => x.verified)) process.exitCode = 1
    goals.push(
      `${c}: ${ltRate ? `${(rate / ltRate).toFixed(2)}× libtorrent (goal ≥ ${GOAL_RATIO}) ${speedOk ? 'met' : 'NOT met'}` : 'no libtorrent reference (add lt-lt to --cases)'}; ` +
        `peak RSS ${mib(hwm)} MiB (goal ≤ ${GOAL_RSS / MiB}) ${rssOk ? 'met' : 'NOT met'}`,
    )
  }
  if (goals.length > 0) say('\n' + goals.join('\n'))
}

main()
  .catch((err) => {
    process.stderr.write(`bench:transfer: ${(err as Error).message}\n`)
    process.exitCode = 1
  })
  .finally(cleanup)
