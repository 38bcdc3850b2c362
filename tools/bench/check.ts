/**
 * `npm run bench:check`: what the resume check costs a deploy, one seeder to
 * one deploy over loopback, onto an image file in three states:
 *   fresh  stale bytes everywhere (a new or wiped disk)
 *   half   a random half of the pieces already there (a deploy cut off mid-way)
 *   full   every piece already there (a re-run)
 * each with the check beside the download (the default: a probe first),
 * with --check-first (the check before the download, as up to this round) and
 * with --skip-check (no check: the reference for a fresh disk).
 *
 *   npm run bench:check -- [--size 1G] [--rate 100M] [--runs 1]
 *
 * The seeder's upload is capped at --rate (bytes/s; 100M ≈ a 1 Gbit link),
 * so that the network, not the disk, bounds the deploy, as in a datacenter.
 * Before every deploy the target is rewritten, flushed and dropped from the
 * page cache (dd oflag=nocache), so that the check reads from the disk.
 * Times are from the deploy's add: to its first payload byte ("first byte")
 * and to verified and flushed ("deploy"). References in the same run: a
 * sequential read of the whole target from the disk (what a full check must
 * read), Node's SHA-1 rate and the network cap.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, openSync, readSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { mapPieceRange, pieceSize } from '../../src/torrent/piece-map.js'
import { parseSize } from '../../src/util/size.js'
import { CLI, cleanup, type Fixture, freePort, makeFixture, MiB, PIECE, prefill, sha1Rate, startSeeder, startWatched, verifyTarget, withTimeout, workDir } from '../lib/bench-kit.js'
import { textTable } from '../lib/process-stats.js'
import { mulberry32 } from '../lib/random.js'

type State = 'fresh' | 'half' | 'full'
type Mode = 'beside' | 'check-first' | 'skip-check'
const STATES: State[] = ['fresh', 'half', 'full']
const MODES: Mode[] = ['beside', 'check-first', 'skip-check']
const MODE_FLAGS: Record<Mode, string[]> = { beside: [], 'check-first': ['--check-first'], 'skip-check': ['--skip-check'] }
const DEPLOY_TIMEOUT_MS = 600_000
/** The issue's goals: a fresh disk within 2% of --skip-check; the others never slower than --check-first. */
const FRESH_GOAL = 1.02

interface Options {
  size: number
  rate: string
  runs: number
}

function parseArgs(argv: string[]): Options {
  const o: Options = { size: parseSize('1G'), rate: '100M', runs: 1 }
  for (let i = 0; i < argv.length; i += 2) {
    const v = argv[i + 1]
    if (v === undefined) throw new Error(`${argv[i]} needs a value (see the header of tools/bench/check.ts)`)
    if (argv[i] === '--size') o.size = parseSize(v)
    else if (argv[i] === '--rate') o.rate = v
    else if (argv[i] === '--runs') o.runs = Number(v)
    else throw new Error(`unknown option ${argv[i]} (see the header of tools/bench/check.ts)`)
  }
  if (o.size < 4 * PIECE) throw new Error('--size: at least 4 pieces (64M)')
  if (!Number.isInteger(o.runs) || o.runs < 1 || o.runs > 10) throw new Error('--runs: 1 to 10')
  parseSize(o.rate)
  return o
}

/** The target in `state`: stale bytes, with none, a random half or all of the pieces copied in from the golden image; flushed and out of the page cache. */
function prepare(f: Fixture, target: string, state: State, seed: number): void {
  prefill(target, f.imageSize)
  const { layout } = f.torrent
  const rand = mulberry32(seed)
  const src = openSync(f.image, 'r')
  const dst = openSync(target, 'r+')
  const buf = Buffer.allocUnsafe(PIECE)
  try {
    for (let p = 0; p < layout.pieceCount; p++) {
      if (state === 'fresh' || (state === 'half' && rand() < 0.5)) continue
      for (const s of mapPieceRange(layout, p, 0, pieceSize(layout, p))) {
        readSync(src, buf, 0, s.length, s.diskOffset)
        writeSync(dst, buf, 0, s.length, s.diskOffset)
      }
    }
  } finally {
    closeSync(src)
    closeSync(dst)
  }
  dropCache(target)
}

/** fdatasync the file and drop its pages from the cache (GNU dd's nocache), so the next read comes from the disk. */
function dropCache(path: string): void {
  execFileSync('dd', ['if=/dev/null', `of=${path}`, 'oflag=nocache', 'conv=notrunc,fdatasync', 'count=0'], { stdio: 'ignore' })
}

/** Read the whole target once, sequentially, from the disk: MB/s. */
function diskRead(path: string, size: number): number {
  dropCache(path)
  const fd = openSync(path, 'r')
  const buf = Buffer.allocUnsafe(PIECE)
  const t0 = performance.now()
  try {
    for (let at = 0; at < size; at += PIECE) readSync(fd, buf, 0, Math.min(PIECE, size - at), at)
  } finally {
    closeSync(fd)
  }
  return size / ((performance.now() - t0) / 1000) / 1e6
}

interface Result {
  firstByte: number
  seconds: number
  checked: number
  reused: number
  downloaded: number
  verified: boolean
}

async function deploy(f: Fixture, target: string, seedPort: number, mode: Mode): Promise<Result> {
  const args = ['deploy', f.torrentFile, target, '--port', String(await freePort()), '--bind', '127.0.0.1', '--peer', `127.0.0.1:${seedPort}`]
  args.push(...MODE_FLAGS[mode], '--seed-idle', '0', '--json', '--log-level', 'warn')
  const w = startWatched(CLI, args)
  const code = await withTimeout(w.exited, DEPLOY_TIMEOUT_MS, `deploy (${mode})`)
  if (code !== 0) throw new Error(`deploy (${mode}) exited ${code}:\n${w.out}${w.err.slice(-4000)}`)
  const j = JSON.parse(w.out) as { ok: boolean; downloadSeconds: number; firstByteSeconds: number | null; checked: number; reused: number; downloaded: number }
  return {
    firstByte: j.firstByteSeconds ?? Number.NaN,
    seconds: j.downloadSeconds,
    checked: j.checked,
    reused: j.reused,
    downloaded: j.downloaded,
    verified: j.ok && verifyTarget(f.torrent, target),
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]
const mib = (b: number) => (b / MiB).toFixed(0)
const s2 = (x: number) => (Number.isNaN(x) ? '-' : x.toFixed(2))

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  const work = workDir('check')
  const say = (s: string) => process.stdout.write(s + '\n')
  const f = makeFixture(work, o.size)
  const target = join(work, 'target.img')
  prefill(target, f.imageSize)
  const readRate = diskRead(target, f.imageSize)
  const sha = sha1Rate(o.size)
  const seedPort = await freePort()
  const seeder = await startSeeder('bs', f, seedPort, undefined, ['--upload-rate', o.rate])
  const t = f.torrent
  say(`torrent ${mib(t.totalLength)} MiB in ${t.pieceCount} pieces of ${t.pieceLength / MiB} MiB on a ${mib(f.imageSize)} MiB image file; seeder capped at ${o.rate}/s`)
  const results = new Map<string, Result[]>()
  try {
    for (let r = 0; r < o.runs; r++) {
      for (const state of STATES) {
        for (const mode of MODES) {
          prepare(f, target, state, 1000 + r)
          const res = await deploy(f, target, seedPort, mode)
          const key = `${state} ${mode}`
          results.set(key, [...(results.get(key) ?? []), res])
          say(`run ${r + 1}/${o.runs} ${key}: first byte ${s2(res.firstByte)} s, deploy ${res.seconds.toFixed(2)} s${res.verified ? '' : ' NOT VERIFIED'}`)
        }
      }
    }
  } finally {
    seeder.child.kill('SIGTERM')
    await withTimeout(seeder.exited, 20_000, 'seeder exit').catch(() => seeder.child.kill('SIGKILL'))
  }

  const m = (key: string, k: keyof Result) => median(results.get(key)!.map((x) => Number(x[k])))
  const rows: string[][] = []
  for (const state of STATES) {
    const skip = m(`${state} skip-check`, 'seconds')
    const first = m(`${state} check-first`, 'seconds')
    for (const mode of MODES) {
      const key = `${state} ${mode}`
      const sec = m(key, 'seconds')
      rows.push([
        state,
        mode === 'beside' ? 'beside (default)' : `--${mode}`,
        s2(m(key, 'firstByte')),
        sec.toFixed(2),
        (sec / skip).toFixed(3),
        (sec / first).toFixed(3),
        mib(m(key, 'checked')),
        mib(m(key, 'reused')),
        mib(m(key, 'downloaded')),
        results.get(key)!.every((x) => x.verified) ? 'yes' : 'NO',
      ])
    }
  }
  say('')
  say(
    `references: sequential read of the whole target from the disk ${readRate.toFixed(0)} MB/s (${(f.imageSize / readRate / 1e6).toFixed(2)} s); ` +
      `Node SHA-1 ${sha.toFixed(0)} MB/s; network ${o.rate}/s (${(t.totalLength / parseSize(o.rate)).toFixed(2)} s for the torrent)`,
  )
  say(`${o.runs > 1 ? `median of ${o.runs} runs; ` : ''}seconds from the deploy's add; "read back" = bytes the check read from the target`)
  say('')
  say(textTable(['target', 'check', 'first byte s', 'deploy s', '÷ skip-check', '÷ check-first', 'read back MiB', 're-used MiB', 'downloaded MiB', 'verified'], rows))
  const ratio = (a: string, b: string) => m(a, 'seconds') / m(b, 'seconds')
  const fresh = ratio('fresh beside', 'fresh skip-check')
  say('')
  say(`fresh: beside ÷ --skip-check ${fresh.toFixed(3)} (goal ≤ ${FRESH_GOAL}) ${fresh <= FRESH_GOAL ? 'met' : 'NOT met'}`)
  for (const state of ['half', 'full'] as const) {
    const x = ratio(`${state} beside`, `${state} check-first`)
    say(`${state}: beside ÷ --check-first ${x.toFixed(3)} (goal ≤ 1) ${x <= 1 ? 'met' : 'NOT met'}`)
  }
  if ([...results.values()].some((rs) => rs.some((x) => !x.verified))) process.exitCode = 1
}

main()
  .catch((err) => {
    process.stderr.write(`bench:check: ${(err as Error).message}\n`)
    process.exitCode = 1
  })
  .finally(cleanup)
