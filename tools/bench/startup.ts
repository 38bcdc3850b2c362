/**
 * `npm run bench:startup`: what one node pays before it does any work, and
 * how much memory a deploy holds at its peak.
 *
 *   npm run bench:startup -- [--runs 3] [--size 256M] [--peers 32] [--parts startup,rss]
 *
 * 1. Startup CPU: CPU seconds (all threads, utime + stime) of a process from
 *    its exec to a moment:
 *    - `node -e 0` (the reference), `blockswarm --help`, `blockswarm inspect`:
 *      to their exit (the children's reaped CPU time);
 *    - `blockswarm deploy`: to the first BitTorrent REQUEST it sends. The
 *      peer it asks is a loopback peer written here (it has every piece and
 *      unchokes at once); when the REQUEST arrives it reads the deploy's
 *      /proc/PID/stat, and VmHWM (the peak RSS so far). The deploy finds that
 *      peer by --peer (a torrent without a tracker), or through opentracker
 *      over HTTP or UDP (the torrent's announce URL; the peer announced itself
 *      there first).
 * 2. Peak RSS: VmHWM (polled) of a whole deploy of --size bytes (16 MiB
 *    pieces) onto an image file, from a loopback `blockswarm seed`, found
 *    through opentracker (HTTP) together with --peers − 1 more peers that
 *    announced there (written here: each is interested, asks the deploy for
 *    blocks of the pieces it announces, and so makes it upload). The deploy
 *    runs with --max-connections high enough that it dials all of them
 *    (dialLimit: it dials 40% of its connections at most; the seeder may be
 *    any of them, and it does not dial the deploy). The
 *    reference in the same run: the same deploy from a seeder given by --peer,
 *    no tracker, no other peer.
 *
 * Every blockswarm process runs as the installed command does (bin/blockswarm.js
 * by its #! line, with its V8 flags); deploys use --skip-check (a fresh
 * target). Median of --runs runs. Needs opentracker (Debian's, whitelist
 * mode). Cleans up (processes by PID, temp files) on exit and on SIGINT/SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { chmodSync, closeSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { get } from 'node:http'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import bencode from 'bencode'
import { handshakeMessage, MSG, writeHeader } from '../../src/swarm/wire-messages.js'
import { buildTorrent, type ExtentTorrent } from '../../src/torrent/metainfo.js'
import { dialLimit } from '../../src/swarm/peers.js'
import { parseSize } from '../../src/util/size.js'
import { liveCpu, memoryOf, reapedCpu, textTable } from '../lib/process-stats.js'

const ROOT = resolve(import.meta.dirname, '../../..')
const CLI = join(ROOT, 'bin/blockswarm.js')
const PIECE = 16 * 1024 * 1024
const BLOCK = 16 * 1024
const MiB = 1024 * 1024
const GOAL_STARTUP_CPU = 0.3
const GOAL_RSS = 128 * MiB
const DEPLOY_TIMEOUT_MS = 120_000
/** Requests each extra peer keeps in flight while the deploy unchokes it. */
const PEER_QUEUE = 4

type Part = 'startup' | 'rss'
const PARTS: Part[] = ['startup', 'rss']

interface Options {
  runs: number
  size: number
  peers: number
  parts: Part[]
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { runs: 3, size: parseSize('256M'), peers: 32, parts: PARTS }
  for (let i = 0; i < argv.length; i += 2) {
    const v = argv[i + 1]
    if (v === undefined) throw new Error(`${argv[i]} needs a value (see the header of tools/bench/startup.ts)`)
    const whole = (lo: number, hi: number) => {
      const n = Number(v)
      if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${argv[i]} ${v}: a whole number from ${lo} to ${hi}`)
      return n
    }
    switch (argv[i]) {
      case '--runs':
        opts.runs = whole(1, 20)
        break
      case '--peers':
        opts.peers = whole(1, 200)
        break
      case '--parts':
        opts.parts = v.split(',').map((p) => {
          if (!PARTS.includes(p as Part)) throw new Error(`--parts: ${p} is not one of ${PARTS.join(', ')}`)
          return p as Part
        })
        break
      case '--size':
        opts.size = parseSize(v)
        if (opts.size < PIECE) throw new Error(`--size ${v}: at least one piece (16M)`)
        break
      default:
        throw new Error(`unknown option ${argv[i]} (see the header of tools/bench/startup.ts)`)
    }
  }
  return opts
}

// ---------------------------------------------------------------------------
// Clean-up of everything this run made

const children = new Set<ChildProcess>()
const servers: Server[] = []
const sockets = new Set<Socket>()
let work: string | undefined

function cleanup(): void {
  for (const s of sockets) s.destroy()
  for (const s of servers) s.close()
  for (const c of children) {
    if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  }
  if (work) rmSync(work, { recursive: true, force: true })
  work = undefined
}

function start(cmd: string, args: string[]): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  child.stderr!.on('data', (d) => (out += d))
  const exited = new Promise<number | null>((res) =>
    child.once('exit', (code, signal) => {
      children.delete(child)
      res(code ?? (signal ? 128 : null))
    }),
  )
  return { child, out: () => out, exited }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms / 1000} s`)), ms))),
  ])
}

async function until(what: string, pred: () => boolean | Promise<boolean>, ms: number, detail: () => string = () => ''): Promise<void> {
  const end = Date.now() + ms
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000} s\n${detail()}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

function listen(onSocket: (s: Socket) => void): Promise<number> {
  const server = createServer((s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    onSocket(s)
  })
  servers.push(server)
  return new Promise((res, rej) => {
    server.once('error', rej)
    server.listen(0, '127.0.0.1', () => res((server.address() as { port: number }).port))
  })
}

/** A free TCP port on 127.0.0.1 (closed again). */
async function freePort(): Promise<number> {
  const port = await listen(() => {})
  servers.pop()!.close()
  return port
}

// ---------------------------------------------------------------------------
// The image and its torrents (one extent, 16 MiB pieces, pseudo-random bytes)

interface Fixture {
  readonly image: string
  readonly hashes: Buffer
  readonly torrents: Record<'plain' | 'http' | 'udp' | 'solo' | 'swarm', { file: string; torrent: ExtentTorrent }>
}

function makeFixture(dir: string, size: number, trackerPort: number): Fixture {
  const image = join(dir, 'golden.img')
  const fd = openSync(image, 'w')
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update('bench:startup').digest(), Buffer.alloc(16))
  const zeros = Buffer.alloc(PIECE)
  const hashes: Buffer[] = []
  for (let at = 0; at < size; at += PIECE) {
    const piece = cipher.update(zeros.subarray(0, Math.min(PIECE, size - at)))
    hashes.push(createHash('sha1').update(piece).digest())
    writeSync(fd, piece, 0, piece.length, at)
  }
  closeSync(fd)
  const pieces = Buffer.concat(hashes)
  const http = `http://127.0.0.1:${trackerPort}/announce`
  const make = (name: string, trackers: string[]) => {
    const { buffer, torrent } = buildTorrent({
      name,
      pieceLength: PIECE,
      pieces,
      extents: [{ offset: 0, length: size }],
      trackers,
      meta: { gaps: 'dont-care', targetSize: size, source: 'bench' },
      createdBy: 'bench:startup',
    })
    const file = join(dir, `${name}.torrent`)
    writeFileSync(file, buffer)
    return { file, torrent }
  }
  return {
    image,
    hashes: pieces,
    torrents: {
      plain: make('plain', []),
      http: make('http', [http]),
      udp: make('udp', [`udp://127.0.0.1:${trackerPort}/announce`]),
      solo: make('solo', [http]),
      swarm: make('swarm', [http]),
    },
  }
}

/** A sparse file of `size` bytes: a fresh target. */
function freshTarget(path: string, size: number): string {
  const fd = openSync(path, 'w')
  ftruncateSync(fd, size)
  closeSync(fd)
  return path
}

/** Every piece on `target` hashes to the torrent's value. */
function verified(target: string, f: Fixture, size: number): boolean {
  const fd = openSync(target, 'r')
  const buf = Buffer.allocUnsafe(PIECE)
  try {
    for (let p = 0, at = 0; at < size; p++, at += PIECE) {
      const n = Math.min(PIECE, size - at)
      if (readSync(fd, buf, 0, n, at) !== n) return false
      if (!createHash('sha1').update(buf.subarray(0, n)).digest().equals(f.hashes.subarray(p * 20, p * 20 + 20))) return false
    }
    return true
  } finally {
    closeSync(fd)
  }
}

// ---------------------------------------------------------------------------
// opentracker, and announcing the peers written here to it

function escapeBytes(b: Buffer): string {
  return [...b].map((x) => '%' + x.toString(16).padStart(2, '0')).join('')
}

/** One HTTP announce ('stopped' leaves no trace: a probe); the seeds the tracker counts. */
function announce(trackerPort: number, t: ExtentTorrent, peerId: Buffer, port: number, left: number, event = 'started'): Promise<number> {
  const path =
    `/announce?info_hash=${escapeBytes(Buffer.from(t.infoHash, 'hex'))}&peer_id=${escapeBytes(peerId)}&port=${port}` +
    `&uploaded=0&downloaded=0&left=${left}&compact=1&numwant=0&event=${event}`
  return new Promise((res, rej) => {
    get({ host: '127.0.0.1', port: trackerPort, path, agent: false }, (r) => {
      const chunks: Buffer[] = []
      r.on('data', (c) => chunks.push(c))
      r.on('end', () => {
        try {
          const body = bencode.decode(Buffer.concat(chunks)) as Record<string, unknown>
          if (body['failure reason']) throw new Error(`opentracker refused: ${Buffer.from(body['failure reason'] as Uint8Array)}`)
          res(Number(body.complete ?? 0))
        } catch (err) {
          rej(err)
        }
      })
    }).on('error', rej)
  })
}

async function startOpentracker(dir: string, port: number, torrents: ExtentTorrent[]): Promise<void> {
  writeFileSync(join(dir, 'whitelist'), torrents.map((t) => t.infoHash + '\n').join(''), { mode: 0o644 })
  // opentracker chroots into -d and reads the whitelist as nobody: the directory must be searchable
  chmodSync(dir, 0o755)
  const ot = start('opentracker', ['-i', '127.0.0.1', '-p', String(port), '-P', String(port), '-d', dir, '-w', '/whitelist'])
  const probe = randomBytes(20)
  await until(
    'opentracker to answer',
    () =>
      announce(port, torrents[0], probe, 1, 0, 'stopped').then(
        () => true,
        () => ot.child.exitCode !== null && Promise.reject(new Error(`opentracker exited:\n${ot.out()}`)),
      ),
    20_000,
    ot.out,
  )
}

// ---------------------------------------------------------------------------
// Peers written here: the wire's handshake, then length-prefixed messages

function message(id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(5 + payload.length)
  payload.copy(b, writeHeader(b, 0, id, payload.length))
  return b
}

function requestMessage(index: number, begin: number, length: number): Buffer {
  const p = Buffer.alloc(12)
  p.writeUInt32BE(index, 0)
  p.writeUInt32BE(begin, 4)
  p.writeUInt32BE(length, 8)
  return message(MSG.request, p)
}

/** Frames one connection: `onHandshake` with the other side's info-hash, then `onMessage` for each message. */
function frame(s: Socket, onHandshake: (infoHash: string) => void, onMessage: (id: number, payload: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0)
  let shook = false
  s.on('data', (d: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d
    if (!shook) {
      if (buf.length < 68) return
      shook = true
      onHandshake(buf.subarray(28, 48).toString('hex'))
      buf = buf.subarray(68)
    }
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0)
      if (buf.length < 4 + len) break
      if (len > 0) onMessage(buf[4], buf.subarray(5, 4 + len))
      buf = buf.subarray(4 + len)
    }
  })
}

const benchPeerId = () => Buffer.concat([Buffer.from('-BSBENCH-'), randomBytes(11)])

/**
 * A peer that has every piece of the torrents given and unchokes whoever
 * connects; calls `onRequest` at the first REQUEST of each connection.
 */
async function recordingSeed(torrents: ExtentTorrent[], onRequest: () => void): Promise<number> {
  const byHash = new Map(torrents.map((t) => [t.infoHash, t]))
  return listen((s) => {
    let asked = false
    frame(
      s,
      (infoHash) => {
        const t = byHash.get(infoHash)
        if (!t) return s.destroy()
        const bits = Buffer.alloc(Math.ceil(t.pieceCount / 8))
        for (let i = 0; i < t.pieceCount; i++) bits[i >> 3] |= 0x80 >> (i & 7)
        s.write(Buffer.concat([handshakeMessage(Buffer.from(infoHash, 'hex'), benchPeerId()), message(MSG.bitfield, bits), message(MSG.unchoke)]))
      },
      (id) => {
        if (id !== MSG.request || asked) return
        asked = true
        onRequest()
      },
    )
  })
}

/**
 * A leecher: interested in every peer, asks for blocks of the pieces a peer
 * announced by HAVE (so only of a deploy, which has pieces one by one), up
 * to PEER_QUEUE at a time while unchoked.
 */
async function askingPeer(t: ExtentTorrent, rand: () => number): Promise<number> {
  return listen((s) => {
    const has: number[] = []
    let unchoked = false
    let inFlight = 0
    const fill = () => {
      while (unchoked && inFlight < PEER_QUEUE && has.length > 0) {
        const index = has[Math.floor(rand() * has.length)]
        const pieceLen = Math.min(t.pieceLength, t.totalLength - index * t.pieceLength)
        const begin = Math.floor((rand() * pieceLen) / BLOCK) * BLOCK
        s.write(requestMessage(index, begin, Math.min(BLOCK, pieceLen - begin)))
        inFlight++
      }
    }
    frame(
      s,
      (infoHash) => {
        if (infoHash !== t.infoHash) return s.destroy()
        s.write(Buffer.concat([handshakeMessage(Buffer.from(infoHash, 'hex'), benchPeerId()), message(MSG.interested)]))
      },
      (id, payload) => {
        if (id === MSG.have) has.push(payload.readUInt32BE(0))
        else if (id === MSG.unchoke) unchoked = true
        else if (id === MSG.choke) {
          unchoked = false
          inFlight = 0
        } else if (id === MSG.piece) inFlight = Math.max(0, inFlight - 1)
        fill()
      },
    )
  })
}

// ---------------------------------------------------------------------------
// Measurements

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]
const mib = (b: number) => (b / MiB).toFixed(0)

/** CPU seconds of a command from exec to exit. */
async function cpuToExit(cmd: string, args: string[]): Promise<number> {
  const cpu0 = reapedCpu()
  const p = start(cmd, args)
  const code = await withTimeout(p.exited, 30_000, `${cmd} ${args.join(' ')}`)
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${p.out()}`)
  return reapedCpu() - cpu0
}

interface Startup {
  cpu: number
  hwm: number
}

/** The seed written here, and what it saw of the deploy being measured. */
interface Recorder {
  readonly port: number
  expect(pid: number): Promise<Startup>
}

async function recorder(torrents: ExtentTorrent[]): Promise<Recorder> {
  let waiting: { pid: number; resolve: (s: Startup) => void } | undefined
  const port = await recordingSeed(torrents, () => {
    if (!waiting) return
    const { pid, resolve } = waiting
    waiting = undefined
    resolve({ cpu: liveCpu(pid), hwm: memoryOf(pid)?.hwm ?? 0 })
  })
  return { port, expect: (pid) => new Promise((resolve) => (waiting = { pid, resolve })) }
}

/** A deploy's CPU seconds and peak RSS from exec to its first REQUEST; then it is stopped (SIGTERM). */
async function cpuToFirstRequest(rec: Recorder, torrentFile: string, target: string, extra: string[]): Promise<Startup> {
  const args = ['deploy', torrentFile, target, '--skip-check', '--port', String(await freePort()), '--bind', '127.0.0.1', '--log-level', 'warn', ...extra]
  const p = start(CLI, args)
  try {
    return await withTimeout(
      Promise.race([rec.expect(p.child.pid!), p.exited.then((code) => Promise.reject(new Error(`deploy exited ${code} before its first request:\n${p.out()}`)))]),
      30_000,
      `deploy's first request (${args.join(' ')})\n${p.out()}`,
    )
  } finally {
    p.child.kill('SIGTERM')
    await withTimeout(p.exited, 20_000, 'deploy stop').catch(() => p.child.kill('SIGKILL'))
  }
}

interface Whole {
  wall: number
  cpu: number
  hwm: number
  /** Peak RssAnon (RSS less the mapped files: the node binary's pages, libraries). */
  anon: number
  peers: number
  verified: boolean
}

/** A whole deploy (to exit 0): wall and CPU seconds, peak RSS, the most peers a progress line showed. */
async function wholeDeploy(f: Fixture, size: number, torrentFile: string, target: string, extra: string[]): Promise<Whole> {
  freshTarget(target, size)
  const args = ['deploy', torrentFile, target, '--skip-check', '--port', String(await freePort()), '--bind', '127.0.0.1', '--seed-idle', '0', '--log-level', 'warn']
  args.push('--progress-interval', '0.2', ...extra)
  const cpu0 = reapedCpu()
  const t0 = performance.now()
  const p = start(CLI, args)
  let hwm = 0
  let anon = 0
  const poll = setInterval(() => {
    const m = memoryOf(p.child.pid!)
    hwm = Math.max(hwm, m?.hwm ?? 0)
    anon = Math.max(anon, m?.anon ?? 0)
  }, 10)
  const code = await withTimeout(p.exited, DEPLOY_TIMEOUT_MS, 'the deploy').finally(() => clearInterval(poll))
  const wall = (performance.now() - t0) / 1000
  if (code !== 0) throw new Error(`deploy ${args.join(' ')} exited ${code}:\n${p.out().slice(-4000)}`)
  const peers = Math.max(0, ...[...p.out().matchAll(/peers (\d+) \(/g)].map((m) => Number(m[1])))
  return { wall, cpu: reapedCpu() - cpu0, hwm, anon, peers, verified: verified(target, f, size) }
}

const say = (s: string) => process.stdout.write(s + '\n')

/** The fewest --max-connections under which a deploy dials `peers` peers (peers.ts's dialLimit). */
function connectionsToDial(peers: number): number {
  let m = peers
  while (dialLimit(m) < peers) m++
  return m
}

/** Part 1: CPU seconds to exit or to the first request; prints its table, returns the slowest deploy's. */
async function startupPart(opts: Options, f: Fixture, trackerPort: number): Promise<number> {
  const { plain, http, udp } = f.torrents
  const rec = await recorder([plain.torrent, http.torrent, udp.torrent])
  for (const t of [http.torrent, udp.torrent]) await announce(trackerPort, t, benchPeerId(), rec.port, 0)
  const target = freshTarget(join(work!, 'startup-target.img'), opts.size)
  const exitCases: [string, string, string[]][] = [
    ['node -e 0 (reference)', process.execPath, ['-e', '0']],
    ['blockswarm --help', CLI, ['--help']],
    ['blockswarm inspect', CLI, ['inspect', plain.file]],
  ]
  const deployCases: [string, string, string[]][] = [
    ['blockswarm deploy --peer (no tracker)', plain.file, ['--peer', `127.0.0.1:${rec.port}`]],
    ['blockswarm deploy, HTTP tracker', http.file, []],
    ['blockswarm deploy, UDP tracker', udp.file, []],
  ]
  const rows: { name: string; until: string; cpu: number; hwm?: number }[] = []
  for (const [name, cmd, args] of exitCases) {
    const cpus: number[] = []
    for (let r = 0; r < opts.runs; r++) cpus.push(await cpuToExit(cmd, args))
    rows.push({ name, until: 'exit', cpu: median(cpus) })
    say(`${name}: ${median(cpus).toFixed(2)} CPU-s`)
  }
  for (const [name, torrentFile, extra] of deployCases) {
    const runs: Startup[] = []
    for (let r = 0; r < opts.runs; r++) runs.push(await cpuToFirstRequest(rec, torrentFile, target, extra))
    rows.push({ name, until: 'first REQUEST', cpu: median(runs.map((x) => x.cpu)), hwm: median(runs.map((x) => x.hwm)) })
    say(`${name}: ${median(runs.map((x) => x.cpu)).toFixed(2)} CPU-s to the first request`)
  }
  const ref = rows[0].cpu
  say('')
  say('startup: CPU seconds (all threads) from exec to the moment named; VmHWM = peak RSS by then')
  say(
    textTable(
      ['command', 'until', 'CPU-s', '× node -e 0', 'VmHWM MiB'],
      rows.map((r) => [r.name, r.until, r.cpu.toFixed(2), (r.cpu / ref).toFixed(1), r.hwm === undefined ? '–' : mib(r.hwm)]),
    ),
  )
  say('')
  return Math.max(...rows.filter((r) => r.until !== 'exit').map((r) => r.cpu))
}

/** Part 2: peak RSS of whole deploys; prints its table, returns the median peak with the tracker and every peer. */
async function rssPart(opts: Options, f: Fixture, trackerPort: number): Promise<number> {
  const { plain, solo, swarm } = f.torrents
  const startSeed = async (t: { file: string }) => start(CLI, ['seed', t.file, f.image, '--port', String(await freePort()), '--bind', '127.0.0.1', '--log-level', 'warn'])
  const seeds = [await startSeed(plain), await startSeed(solo), await startSeed(swarm)]
  const [refSeed, , seed] = seeds
  try {
    for (const s of seeds) await until('blockswarm seed to start', () => s.out().includes('opentracker whitelist line') || s.child.exitCode !== null, 30_000, s.out)
    const refPort = Number(/^ {2}peer port +(\d+)/m.exec(refSeed.out())?.[1])
    let rand = 0x9e3779b9
    const next = () => ((rand = (Math.imul(rand, 1664525) + 1013904223) >>> 0) / 2 ** 32)
    for (let i = 1; i < opts.peers; i++) await announce(trackerPort, swarm.torrent, benchPeerId(), await askingPeer(swarm.torrent, next), swarm.torrent.totalLength)
    for (const t of [solo.torrent, swarm.torrent]) {
      await until('opentracker to count the seeder', async () => (await announce(trackerPort, t, benchPeerId(), 1, 0, 'stopped')) >= 1, 30_000, seed.out)
    }

    const cases: [string, string, string[]][] = [
      ['deploy, seeder by --peer, no tracker (reference)', plain.file, ['--peer', `127.0.0.1:${refPort}`]],
      ['deploy, HTTP tracker, the seeder alone', solo.file, []],
      [`deploy, HTTP tracker, seeder + ${opts.peers - 1} peers`, swarm.file, ['--max-connections', String(connectionsToDial(opts.peers))]],
    ]
    const rows: { name: string; runs: Whole[] }[] = []
    for (const [name, torrentFile, extra] of cases) {
      const runs: Whole[] = []
      for (let r = 0; r < opts.runs; r++) {
        runs.push(await wholeDeploy(f, opts.size, torrentFile, join(work!, 'rss-target.img'), extra))
        say(`${name}, run ${r + 1}: peak RSS ${mib(runs[r].hwm)} MiB, ${runs[r].peers} peers${runs[r].verified ? '' : ' NOT VERIFIED'}`)
      }
      rows.push({ name, runs })
    }
    const refHwm = median(rows[0].runs.map((x) => x.hwm))
    say('')
    say(`whole deploy of ${mib(opts.size)} MiB onto an image file (--skip-check, --seed-idle 0); peers = most connected at once`)
    say(
      textTable(
        ['deploy', 'peers', 'wall s', 'CPU-s', 'peak RSS MiB (RssAnon)', '× reference', 'verified'],
        rows.map(({ name, runs }) => {
          const m = (k: keyof Whole) => median(runs.map((x) => Number(x[k])))
          const rss = `${mib(m('hwm'))} (${mib(m('anon'))})`
          return [name, String(m('peers')), m('wall').toFixed(1), m('cpu').toFixed(1), rss, (m('hwm') / refHwm).toFixed(2), runs.every((x) => x.verified) ? 'yes' : 'NO']
        }),
      ),
    )
    say('')
    if (!rows.every((r) => r.runs.every((x) => x.verified))) process.exitCode = 1
    return median(rows[2].runs.map((x) => x.hwm))
  } finally {
    for (const s of seeds) s.child.kill('SIGTERM')
    await Promise.all(seeds.map((s) => withTimeout(s.exited, 10_000, 'seed stop').catch(() => s.child.kill('SIGKILL'))))
  }
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2))
  process.on('exit', cleanup)
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) process.on(sig, () => process.exit(code))

  work = mkdtempSync(join(tmpdir(), 'bsw-startup-'))
  const trackerPort = await freePort()
  const f = makeFixture(work, opts.size, trackerPort)
  await startOpentracker(
    work,
    trackerPort,
    (['http', 'udp', 'solo', 'swarm'] as const).map((k) => f.torrents[k].torrent),
  )
  say(`image ${mib(opts.size)} MiB, ${f.torrents.plain.torrent.pieceCount} pieces of 16 MiB; opentracker on 127.0.0.1:${trackerPort} (HTTP and UDP); ${opts.runs} run(s) each, median`)
  const slowest = opts.parts.includes('startup') ? await startupPart(opts, f, trackerPort) : undefined
  const peak = opts.parts.includes('rss') ? await rssPart(opts, f, trackerPort) : undefined

  // G3 of issue 11: startup ≤ 0.3 CPU-s in every deploy case, peak RSS ≤ 128 MiB with the tracker and all the peers
  if (slowest !== undefined) say(`deploy startup, slowest case ${slowest.toFixed(2)} CPU-s (goal ≤ ${GOAL_STARTUP_CPU}) ${slowest <= GOAL_STARTUP_CPU ? 'met' : 'NOT met'}`)
  if (peak !== undefined) say(`peak RSS with the tracker and ${opts.peers} peers ${mib(peak)} MiB (goal ≤ ${GOAL_RSS / MiB}) ${peak <= GOAL_RSS ? 'met' : 'NOT met'}`)
}

main()
  .catch((err) => {
    process.stderr.write(`bench:startup: ${(err as Error).message}\n`)
    process.exitCode = 1
  })
  .finally(cleanup)
