/**
 * `npm run sim`: the swarm simulator (swarm.ts) over the scenarios of
 * scenarios.ts, a table per scenario and the scaling plot.
 *
 *   npm run sim -- [--scenario all|equal,slow,late,dying,seeders,bench] [--nodes 1,2,4,…]
 *                  [--size 116M] [--piece-size 256K] [--unit 32K] [--rate 100mbit] [--seeder-rate RATE] [--goodput 0.96]
 *                  [--slots 0] [--connections 25] [--choking fleet|tit-for-tat] [--rtt 1ms] [--have-hold 50ms] [--startup 0.3] [--seed-idle 5] [--death silent|reset]
 *                  [--memory 64M] [--turns N] [--turn-order age|completion|rarest] [--turns-saturated-only] [--turns-end-on-have] [--turns-measured] [--turns-seeder-only] [--move-requests [S]]
 *                  [--epoch S] [--seed N] [--bench-csv FILE]… [--plot docs/swarm-scaling.png | --no-plot] [--markdown]
 *
 * Defaults are bench:swarm's image and links (a 128 MiB ext4 image holds
 * ~116 MiB of used blocks; 256 KiB pieces; 100 Mbit links carrying 96% of
 * that as TCP goodput, as the bench measures) and the engine's defaults, as
 * bench:swarm runs it: 25 connections per node (DEFAULT_MAX_CONNECTIONS),
 * the default choking policy and its upload slots (--slots 0: under 'fleet'
 * every interested peer). T* = max(S/C_seed, S/C, N·S/(C_seed + N·C)) as
 * tools/bench/swarm.ts prints it (bound.ts: generalised to unequal links,
 * late joins and deaths); unicast = N·S/C_seed.
 *
 * --bench-csv FILE: bench:swarm's numbers, a header line naming the columns
 * N, last, T* (and optionally unicast, startup: the bench's median startup
 * for that N), then one row per N; '#' lines are comments, and a line
 * '# sim: OPTIONS' says how to simulate what the bench ran (its rate, size,
 * slots, connections). The `bench` scenario runs those N on equal links with
 * those options and that startup, and prints sim and bench side by side;
 * the plot gets the bench's points. --bench-csv may be given more than once
 * (e.g. one file per link rate): a table and a pair of lines per file.
 */
import { readFileSync } from 'node:fs'
import { Command, InvalidArgumentError, Option } from 'commander'
import { DEFAULT_CHOKING, DEFAULT_MAX_CONNECTIONS, effectiveMaxUploads } from '../../src/session/session.js'
import { CHOKING_POLICIES, type ChokingPolicy } from '../../src/swarm/choker.js'
import { TURN_ORDERS } from './upload-turns.js'
import { MOVE_BACKLOG_SECONDS } from './request-move.js'
import { BLOCK_SIZE } from '../../src/swarm/wire-messages.js'
import { type Point, writeChartPng } from './plot.js'
import { type Base, scenario, SCENARIOS } from './scenarios.js'
import { summarize } from './summary.js'
import { simulate } from './swarm.js'

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 }

/** "116M", "42.6M", "256K", "4096": bytes (binary units), rounded to a whole byte. */
function bytesArg(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kmg]?)(?:i?b)?$/i.exec(text.trim())
  if (!m) throw new InvalidArgumentError('a size, e.g. 116M, 42.6M, 256K')
  return Math.round(Number(m[1]) * UNITS[m[2].toLowerCase()])
}

/** tc's rate form, "100mbit", "20mbit", "1gbit": bits/s. */
function bitsArg(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kmg]?)bit$/i.exec(text.trim())
  if (!m) throw new InvalidArgumentError("a rate in tc's form, e.g. 100mbit")
  return Number(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g']!
}

/** "1ms", "0.2ms", "0.05s", "0.001": seconds. */
function secondsArg(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text.trim())
  if (!m) throw new InvalidArgumentError('a time, e.g. 1ms or 0.05s')
  return Number(m[1]) / (m[2] === 'ms' ? 1000 : 1)
}

function numberArg(text: string): number {
  const x = Number(text)
  if (!Number.isFinite(x) || x < 0) throw new InvalidArgumentError('a number ≥ 0')
  return x
}

function slotsArg(text: string): number {
  const x = Number(text)
  if (!Number.isInteger(x) || x < 0) throw new InvalidArgumentError("a whole number ≥ 1, or 0 for the engine's default")
  return x
}

function countArg(text: string): number {
  const x = Number(text)
  if (!Number.isInteger(x) || x < 1) throw new InvalidArgumentError('a whole number ≥ 1')
  return x
}

function listArg(text: string): number[] {
  return text.split(',').map((t) => countArg(t))
}

interface BenchRow {
  readonly n: number
  readonly last: number
  readonly tStar: number
  readonly unicast?: number
  readonly startup?: number
}

/** The rows, and the simulator options of its '# sim: --rate 20mbit …' line (how to simulate what the bench ran). */
function readBenchCsv(path: string): { rows: BenchRow[]; settings: string[] } {
  const all = readFileSync(path, 'utf8')
    .split('\n')
    .map((l) => l.trim())
  const settings = all.filter((l) => l.startsWith('# sim:')).flatMap((l) => l.slice('# sim:'.length).trim().split(/\s+/).filter(Boolean))
  const lines = all.filter((l) => l && !l.startsWith('#'))
  const head = lines[0].split(',').map((h) => h.trim().toLowerCase())
  const col = (name: string) => head.indexOf(name)
  for (const need of ['n', 'last', 't*']) if (col(need) < 0) throw new Error(`${path}: the header must name the columns N, last, T* (it is: ${lines[0]})`)
  const rows = lines.slice(1).map((l, i) => {
    const cells = l.split(',').map((c) => c.trim())
    const num = (name: string) => {
      const at = col(name)
      if (at < 0 || cells[at] === undefined || cells[at] === '') return undefined
      const x = Number(cells[at])
      if (!Number.isFinite(x)) throw new Error(`${path}: row ${i + 1}: ${name} is ${JSON.stringify(cells[at])}, not a number`)
      return x
    }
    return { n: num('n')!, last: num('last')!, tStar: num('t*')!, unicast: num('unicast'), startup: num('startup') }
  })
  return { rows, settings }
}

interface Row {
  readonly n: number
  readonly last: number
  readonly tStar: number
  readonly cells: string[]
  readonly ratio: number
  readonly unicastRatio: number
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-')
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-')

function printTable(title: string, header: string[], rows: string[][], markdown: boolean): void {
  if (markdown) {
    process.stdout.write(`\n**${title}**\n\n| ${header.join(' | ')} |\n| ${header.map(() => '---:').join(' | ')} |\n`)
    for (const r of rows) process.stdout.write(`| ${r.join(' | ')} |\n`)
    return
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join('  ')
  process.stdout.write(`\n${title}\n${line(header)}\n${rows.map(line).join('\n')}\n`)
}

const HEADER = ['N', 'first s', 'median s', 'last s', 'T* s', 'last/T*', 'unicast s', 'unicast/T*', 'from peers', 'seeder use', 'dup', 'dead', 'finished', 'events', 'wall s']

function runOne(name: string, n: number, base: Base): Row {
  const built = scenario(name).build(n, base)
  const t0 = performance.now()
  const r = simulate(built.sim)
  const wall = (performance.now() - t0) / 1000
  const s = summarize(r, built.sim.nodes.reduce((sum, x) => sum + (x.seeder ? x.up : 0), 0))
  process.stderr.write(`sim ${name} N=${n}: last ${f1(s.last)} s, T* ${f1(built.tStar)} s, ${r.events} events in ${f1(wall)} s${r.timedOut ? ' (stopped at the time limit)' : ''}\n`)
  return {
    n,
    last: s.last,
    tStar: built.tStar,
    ratio: s.last / built.tStar,
    unicastRatio: built.unicast / built.tStar,
    cells: [
      String(n),
      f1(s.first),
      f1(s.median),
      f1(s.last),
      f1(built.tStar),
      f2(s.last / built.tStar),
      f1(built.unicast),
      f2(built.unicast / built.tStar),
      `${Math.round(100 * s.fromPeers)}%`,
      `${Math.round(100 * s.seederUse)}%`,
      `${(100 * s.duplicates).toFixed(1)}%`,
      String(s.dead),
      `${s.finished}/${s.counted}`,
      String(r.events),
      f1(wall),
    ],
  }
}

function command(): Command {
  return new Command('sim')
    .description('discrete-event simulation of a blockswarm swarm, driving the engine’s own picker, choker and seeding policy')
    .option('--scenario <list>', `all, or some of: ${[...SCENARIOS.map((s) => s.name), 'bench'].join(', ')}`, 'all')
    .option('--nodes <list>', 'node counts (default: 1,2,4,8,16,32,100,300,1000 for equal; 100,300,1000 for the others)', listArg)
    .option('--size <bytes>', 'torrent size', bytesArg, bytesArg('116M'))
    .option('--piece-size <bytes>', 'piece size', bytesArg, bytesArg('256K'))
    .option('--unit <bytes>', 'bytes per simulated request (a multiple of 16 KiB; default: an eighth of a piece)', bytesArg)
    .option('--rate <rate>', "every node's link, both ways (tc's form)", bitsArg, bitsArg('100mbit'))
    .option('--seeder-rate <rate>', "the seeders' links (default: --rate)", bitsArg)
    .option('--goodput <fraction>', 'TCP payload carried per link bit (bench:swarm measures 0.96)', numberArg, 0.96)
    .option('--slots <n>', "unchoke slots per node (--max-uploads; 0: the engine's default for the policy)", slotsArg, 0)
    .option('--connections <n>', 'connections per node (--max-connections)', countArg, DEFAULT_MAX_CONNECTIONS)
    .addOption(new Option('--choking <policy>', 'who gets the upload slots (--choking)').choices([...CHOKING_POLICIES]).default(DEFAULT_CHOKING))
    .option('--rtt <time>', 'round trip between two nodes', secondsArg, secondsArg('1ms'))
    .option('--have-hold <time>', 'longest a HAVE to a peer that lacks the piece is held (default: the engine\'s HAVE_HOLD_MS)', secondsArg)
    .option('--startup <s>', 'median startup per node (drawn from [0, 2 × this])', numberArg, 0.3)
    .option('--seed-idle <s>', "the nodes' done policy (deploy --seed-idle; bench:swarm uses 5)", numberArg, 5)
    .addOption(new Option('--death <how>', 'how a dying node dies: silent (power cut) or reset (connections closed)').choices(['silent', 'reset']).default('silent'))
    .option('--memory <bytes>', "each node's piece buffers (--memory; default the engine's): at most memory / piece size pieces in progress", bytesArg)
    .option('--turns <n>', 'depth-first serving (upload-turns.ts): peers each uplink serves at once, a piece a turn (0: every requester at once)', slotsArg, 0)
    .addOption(new Option('--turn-order <order>', 'who gets a free turn: the longest waiting (age), or the one we sent most of its next piece (completion)').choices([...TURN_ORDERS]).default('age'))
    .option('--turns-saturated-only', 'one turn more whenever the turns leave a tenth of the uplink idle')
    .option('--turns-end-on-have', 'a turn holds its slot until the receiver announces the piece (as behind kernel send buffers)')
    .option('--turns-seeder-only', 'only the seeders serve in turns')
    .option('--turns-measured', 'saturation judged against the measured peak upload (uplink-gauge.ts), not the true capacity')
    .addOption(
      new Option('--move-requests [s]', 'a receiver with nothing new to ask of a peer moves to it the request the most backed-up peer would serve last, if that backlog is over s seconds (request-move.ts); not in the engine')
        .preset(MOVE_BACKLOG_SECONDS)
        .argParser(numberArg),
    )
    .option('--epoch <s>', 'rates are recomputed at most this often (default: half a unit’s time on a link)', numberArg)
    .option('--seed <n>', 'random seed', countArg, 1)
    .option(
      '--bench-csv <file>',
      "bench:swarm's measured rows (N,last,T*[,unicast][,startup]; a '# sim: OPTIONS' line gives its settings) for the bench scenario and the plot; may be repeated",
      (file: string, files: string[] = []) => [...files, file],
    )
    .option('--plot <file>', 'write the scaling plot here (PNG)', 'docs/swarm-scaling.png')
    .option('--no-plot', 'no plot')
    .option('--markdown', 'print the tables as Markdown')
}

type Opts = ReturnType<Command['opts']>

function baseOf(o: Opts): Base {
  if (o.pieceSize % BLOCK_SIZE !== 0) throw new Error(`--piece-size ${o.pieceSize}: a multiple of 16 KiB`)
  return {
    size: o.size,
    pieceSize: o.pieceSize,
    unit: o.unit,
    rate: (o.rate / 8) * o.goodput,
    seederRate: ((o.seederRate ?? o.rate) / 8) * o.goodput,
    slots: o.slots === 0 ? effectiveMaxUploads(o.choking as ChokingPolicy, undefined, o.connections) : o.slots,
    connections: o.connections,
    choking: o.choking,
    rtt: o.rtt,
    startup: o.startup,
    seedIdle: o.seedIdle,
    death: o.death,
    epoch: o.epoch,
    seed: o.seed,
    memory: o.memory,
    moveBacklog: o.moveRequests as number | undefined,
    haveHold: o.haveHold as number | undefined,
    turns: o.turns > 0 ? { slots: o.turns, order: o.turnOrder, saturatedOnly: o.turnsSaturatedOnly === true, endOnHave: o.turnsEndOnHave === true, measured: o.turnsMeasured === true, seederOnly: o.turnsSeederOnly === true } : undefined,
  }
}

const MiB = 2 ** 20

function describe(base: Base, o: Opts): string {
  return (
    `S = ${f1(base.size / MiB)} MiB in ${Math.ceil(base.size / base.pieceSize)} pieces of ${base.pieceSize / 1024} KiB; ` +
    `links ${o.rate / 1e6} Mbit (goodput C = ${f1(base.rate / 1e6)} MB/s${o.seederRate ? `, seeder ${f1(base.seederRate / 1e6)} MB/s` : ''}); ` +
    `${base.connections} connections per node, ${base.choking === 'fleet' && base.slots >= base.connections ? 'every interested peer unchoked' : `${base.slots} upload slots`}, choking ${base.choking}; ${base.turns ? `depth-first serving: ${base.turns.slots} at a time by ${base.turns.order}${base.turns.saturatedOnly ? ', more while the uplink is not saturated' : ''}` : 'every requester served at once'}${base.moveBacklog !== undefined ? `; requests moved to idle peers from backlogs over ${base.moveBacklog} s` : ''}; RTT ${base.rtt * 1000} ms; startup ~${base.startup} s; seed-idle ${base.seedIdle} s`
  )
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2)
  const o = command().parse(argv, { from: 'user' }).opts()
  const base = baseOf(o)
  const benches = ((o.benchCsv ?? []) as string[]).map((file) => ({ file, ...readBenchCsv(file) }))
  const wanted: string[] = o.scenario === 'all' ? [...SCENARIOS.map((s) => s.name), ...(benches.length > 0 ? ['bench'] : [])] : o.scenario.split(',')
  for (const w of wanted) if (w !== 'bench') scenario(w)
  if (wanted.includes('bench') && benches.length === 0) throw new Error('the bench scenario needs --bench-csv FILE')
  const subtitle: string[] = []
  if (wanted.some((w) => w !== 'bench')) {
    process.stdout.write(`${describe(base, o)}\n`)
    subtitle.push(`sim: ${describe(base, o)}`)
  }
  const points: Point[] = []
  /** The bench's own settings (its '# sim:' line) over the command line's, and a name for its lines in the plot (by link rate when there are several files). */
  const benchSetup = (bench: (typeof benches)[number]) => {
    const bo = command().parse([...argv, ...bench.settings], { from: 'user' }).opts()
    const tag = benches.length > 1 ? `, ${bo.rate / 1e6} Mbit` : ''
    return { bo, bb: baseOf(bo), tag }
  }
  const measuredPoints = (bench: (typeof benches)[number], tag: string) => {
    for (const b of bench.rows) points.push({ series: `bench:swarm (measured${tag})`, n: b.n, ratio: b.last / b.tStar })
    for (const b of bench.rows) if (b.unicast !== undefined) points.push({ series: `unicast, bench:swarm (measured${tag})`, n: b.n, ratio: b.unicast / b.tStar })
  }
  for (const name of wanted) {
    if (name === 'bench') {
      for (const bench of benches) {
        const { bo, bb, tag } = benchSetup(bench)
        process.stdout.write(`\nbench:swarm's settings (${bench.file}): ${describe(bb, bo)}\n`)
        const header = ['N', 'sim last s', 'bench last s', 'sim/bench', 'sim T* s', 'bench T* s', 'sim last/T*', 'bench last/T*', 'startup s']
        const rows: string[][] = []
        for (const b of bench.rows) {
          const startup = b.startup ?? bb.startup
          const row = runOne('equal', b.n, { ...bb, startup })
          rows.push([String(b.n), f1(row.last), f1(b.last), f2(row.last / b.last), f1(row.tStar), f1(b.tStar), f2(row.ratio), f2(b.last / b.tStar), f1(startup)])
          points.push({ series: `sim: bench:swarm's settings${tag}`, n: b.n, ratio: row.ratio })
        }
        printTable(`bench: the simulator beside bench:swarm's measured last finish (${bench.file})`, header, rows, o.markdown === true)
        subtitle.push(`bench:swarm and "sim: bench:swarm's settings${tag}": ${describe(bb, bo)} (${bench.file})`)
        measuredPoints(bench, tag)
      }
      continue
    }
    const sc = scenario(name)
    const ns: number[] = o.nodes ?? (name === 'equal' ? [1, 2, 4, 8, 16, 32, 100, 300, 1000] : [100, 300, 1000])
    const rows = ns.map((n) => runOne(name, n, base))
    printTable(`${name}: ${sc.title}`, HEADER, rows.map((r) => r.cells), o.markdown === true)
    for (const r of rows) points.push({ series: `sim: ${sc.short}`, n: r.n, ratio: r.ratio })
    if (name === 'equal') for (const r of rows) points.push({ series: 'unicast, N·S/C_seed', n: r.n, ratio: r.unicastRatio })
  }
  if (!wanted.includes('bench')) {
    for (const bench of benches) {
      measuredPoints(bench, benchSetup(bench).tag)
      subtitle.push(`bench:swarm: ${bench.file}`)
    }
  }
  if (o.plot && points.length > 0) {
    await writeChartPng(o.plot, points, 'blockswarm: last finish / T* against N', subtitle)
    process.stdout.write(`\nplot: ${o.plot}\n`)
  }
}

main().catch((err) => {
  process.stderr.write(`sim: ${(err as Error).message}\n`)
  process.exit(1)
})
