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
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseSize } from '../../src/util/size.js'
import {
  CLI,
  cleanup,
  type Fixture,
  freePort,
  loops,
  makeFixture,
  MiB,
  PIECE,
  prefill,
  PYTHON,
  rawWrite,
  sha1Rate,
  startSeeder,
  startWatched,
  verifyTarget,
  withTimeout,
  workDir,
} from '../lib/bench-kit.js'
import { liveCpu, reapedCpu, textTable } from '../lib/process-stats.js'

const LT_PEER = join(resolve(import.meta.dirname, '../../..'), 'tools/bench/libtorrent-peer.py')
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

async function transfer(c: CaseName, f: Fixture, targets: { file: string; loop: string; work: string }, memory?: string): Promise<Result> {
  const seedKind = c.startsWith('lt') ? 'lt' : 'bs'
  const leechKind = c.endsWith('lt') ? 'lt' : 'bs'
  const seedPort = await freePort()
  const leechPort = await freePort()
  const seeder = await startSeeder(seedKind, f, seedPort, memory)
  try {
    let leechArgs: [string, string[]]
    let target: string
    if (leechKind === 'lt') {
      target = join(targets.work, 'lt-leech')
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
  const work = workDir('transfer')
  const say = (s: string) => process.stdout.write(s + '\n')
  const f = makeFixture(work, opts.size)
  const targets = { file: join(work, 'target.img'), loop: '', work }
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
