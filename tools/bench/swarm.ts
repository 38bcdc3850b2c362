/**
 * Swarm-scale benchmark: one image to N nodes over emulated links, the
 * experiment of EZIO's scaling table scaled to this machine.
 *
 *   npm run bench:swarm -- [--nodes 1,2,4,8,16,32] [--rate 100mbit] [--seeder-rate RATE]
 *                          [--size 128M] [--piece-size 256K] [--unicast-max N] [--timeout 900]
 *                          [--max-connections 25] [--max-uploads N] [--no-reference] [--cpu-prof DIR] [--daemons]
 *
 * --cpu-prof DIR: every deploy and the seeder run under node --cpu-prof (the
 * seeder's profile named seed-N<N>.cpuprofile), each profile written into DIR
 * when it exits (open in Chrome's DevTools; summed by tools/bench/profile-top.ts).
 *
 * Piece size matters: a node can re-serve only whole verified pieces, so the
 * swarm pipelines well only with many pieces per image. EZIO's 16 MiB pieces
 * over a 50 GB image are ~3,200 pieces; 256 KiB over 128 MiB is 512.
 *
 * For each N: a seeder (blockswarm seed, embedded tracker) in its namespace
 * and N `blockswarm deploy` processes in theirs, started at once; then the
 * unicast baseline in the same topology (an HTTP server on the seeder node
 * streaming the same bytes to N curl clients at once, as MAAS/Ironic/
 * image2disk do). Prints a table with the bound
 *   T* = max(S/C_seed, S/C, N·S/(C_seed + N·C))
 * where C is the TCP goodput of one link measured in the same run (the
 * nominal tc rate less headers and shaping: what a flow can really carry).
 *
 * The reference swarm (skipped with --no-reference): after each N's blockswarm
 * run, the same topology with no blockswarm process in it: Debian's opentracker
 * in node 0 on the tracker address and port the torrent names (the embedded
 * tracker's, which is gone by then; the torrent's info-hash whitelisted), a
 * libtorrent seed in node 0 (seed mode, every piece trusted, as EZIO seeds)
 * and N libtorrent leechers in nodes 1..N (tools/bench/libtorrent-peer.py on
 * Debian's python3-libtorrent, with EZIO's session settings: TCP only, no
 * encryption, no DHT/LSD/UPnP/NAT-PMP), into extent-file directories. A
 * leecher finishes when its data is complete and fsynced; every leecher keeps
 * seeding until all have finished (late nodes still fetch from early ones, as
 * blockswarm's do during --seed-idle), then all stop. Every libtorrent target
 * is checked piece by piece against the torrent, as blockswarm's are.
 *
 * --daemons: each node runs `blockswarm daemon`, started and answering on a
 * control socket before the clock starts; at t0 the bench adds the torrent to
 * every daemon over blockswarm.v1 (runDaemons), and the libtorrent leechers,
 * started as well, add it when told on stdin. That is a fleet's order (the
 * daemon is up from boot) and the issue's harness; without it, N deploy
 * processes start at t0 and on 2 cores their start-up (~0.3 CPU-s each) is a
 * few seconds of every finish at N = 32.
 *
 * --max-connections N and --max-uploads N go to both engines: blockswarm's
 * seed and deploy get the flags of the same name; libtorrent gets them as the
 * session's connections_limit / unchoke_slots_limit and the torrent's
 * max_connections / max_uploads (EZIO sets the latter per torrent). Without
 * --max-uploads every interested peer is unchoked (blockswarm's fleet choking;
 * libtorrent -1, unlimited). Both are printed above the table.
 *
 * Columns: unicast last s (the curl clients' last finish), swarm first /
 * median / last s (blockswarm deploys' finishes, from their start), T* s and
 * last/T*, unicast/T*, from peers (share of the bytes the nodes uploaded to
 * each other), twice (payload the nodes received beyond N·S: blocks that
 * came twice, endgame duplicates and answers to cancelled requests), startup
 * s (median: process start to download start), slowest start s (the node
 * that took longest: N processes start at once and share 2 cores), CPU-s
 * (every process of the blockswarm run, seeder and tracker included: the
 * children's CPU the bench reaped), wall-s, verified (targets whose every
 * piece hashes right). With the reference: lt last s (the last libtorrent
 * leecher's finish), bs/lt last (blockswarm last ÷ libtorrent last; < 1 is
 * blockswarm faster), lt CPU-s (opentracker, libtorrent seed and leechers,
 * measured the same way), bs/lt CPU (CPU-s ÷ lt CPU-s; same N, so also per
 * node) and lt verified.
 *
 * Needs root (network namespaces, tc); the reference also needs opentracker
 * and /usr/bin/python3 with libtorrent. Cleans up on exit and on SIGINT/SIGTERM.
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { type FileHandle, open } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { type ExtentTorrent, parseTorrent, pieceHash } from '../../src/torrent/metainfo.js'
import { mapPieceRange, pieceSize, type Slice } from '../../src/torrent/piece-map.js'
import { parseSize } from '../../src/util/size.js'
import { makeExt4Image } from './ext4-image.js'
import { Topology } from './netns.js'
import { connectControl } from '../../src/control/client.js'
import type { TorrentInfo } from '../../src/control/blockswarm-wire.js'

const ROOT = resolve(import.meta.dirname, '../../..')
const CLI = join(ROOT, 'bin/blockswarm.js')
const TRACKER_PORT = 8000
const BT_PORT = 6881
const HTTP_PORT = 8080
/** The reference peers: Debian's python3 (it has python3-libtorrent; pyenv's python has not). */
const PYTHON = '/usr/bin/python3'
const LT_PEER = join(ROOT, 'tools/bench/libtorrent-peer.py')

interface Options {
  nodes: number[]
  rate: string
  seederRate?: string
  size: number
  pieceSize: string
  timeout: number
  /** Largest N for which the unicast baseline is run (it takes N × S/C). */
  unicastMax: number
  /** Peer connections per torrent, both engines. */
  maxConnections: number
  /** Unchoke slots per torrent, both engines; undefined: every interested peer. */
  maxUploads?: number
  /** Run the libtorrent reference swarm after each blockswarm run. */
  reference: boolean
  /** Profile every deploy (node --cpu-prof) into this directory. */
  cpuProf?: string
  /** Nodes run `blockswarm daemon`, started before the clock; the torrent is added over gRPC at t0. */
  daemons: boolean
}

function countOption(name: string, v: string | undefined): number {
  const x = Number(v)
  if (v === undefined || !Number.isInteger(x) || x < 1) throw new Error(`${name}: ${v ?? '(nothing)'} is not a positive whole number`)
  return x
}

function parseArgs(argv: string[]): Options {
  const opts: Options = {
    nodes: [1, 2, 4, 8, 16, 32],
    rate: '100mbit',
    size: parseSize('128M'),
    pieceSize: '256K',
    timeout: 900,
    unicastMax: 1000,
    maxConnections: 25,
    reference: true,
    daemons: false,
  }
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1]
    switch (argv[i]) {
      case '--nodes':
        opts.nodes = v.split(',').map((n) => {
          const x = Number(n)
          if (!Number.isInteger(x) || x < 1 || x > 200) throw new Error(`--nodes: ${n} is not a node count from 1 to 200`)
          return x
        })
        i++
        break
      case '--rate':
        opts.rate = v
        i++
        break
      case '--seeder-rate':
        opts.seederRate = v
        i++
        break
      case '--size':
        opts.size = parseSize(v)
        i++
        break
      case '--piece-size':
        opts.pieceSize = v
        i++
        break
      case '--unicast-max':
        opts.unicastMax = Number(v)
        i++
        break
      case '--timeout':
        opts.timeout = Number(v)
        i++
        break
      case '--max-connections':
        opts.maxConnections = countOption('--max-connections', v)
        i++
        break
      case '--max-uploads':
        opts.maxUploads = countOption('--max-uploads', v)
        i++
        break
      case '--no-reference':
        opts.reference = false
        break
      case '--daemons':
        opts.daemons = true
        break
      case '--cpu-prof':
        opts.cpuProf = resolve(v)
        i++
        break
      default:
        throw new Error(`unknown option ${argv[i]} (see the header of tools/bench/swarm.ts)`)
    }
  }
  return opts
}

/** "100mbit" → bytes per second, for the nominal column. */
function rateBytes(rate: string): number {
  const m = /^(\d+(?:\.\d+)?)([kmg]?)bit$/i.exec(rate)
  if (!m) throw new Error(`--rate ${rate}: use tc's form, e.g. 100mbit`)
  return (Number(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g']!) / 8
}

/** CPU seconds used by reaped children so far, user and system apart (cutime, cstime of /proc/self/stat). */
function childCpuSplit(): { user: number; sys: number } {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')
  return { user: Number(fields[13]) / 100, sys: Number(fields[14]) / 100 }
}

/** CPU seconds of the children reaped since `start` (a childCpuSplit()): in all, and of it system time. */
function childCpuSince(start: { user: number; sys: number }): { cpu: number; sys: number } {
  const now = childCpuSplit()
  const sys = now.sys - start.sys
  return { cpu: now.user - start.user + sys, sys }
}

function collect(child: ChildProcess): Promise<{ code: number | null; out: string; err: string }> {
  let out = ''
  let err = ''
  child.stdout?.on('data', (d) => (out += d))
  child.stderr?.on('data', (d) => (err += d))
  return new Promise((res) => child.once('exit', (code) => res({ code, out, err })))
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} did not finish within ${ms / 1000} s`)), ms))),
  ])
}

async function waitHttp(topo: Topology, node: number, url: string, ms: number): Promise<void> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    const r = await collect(topo.spawn(node, 'curl', ['-s', '-o', '/dev/null', '-m', '2', url]))
    if (r.code === 0) return
    await new Promise((r2) => setTimeout(r2, 200))
  }
  throw new Error(`${url} did not answer within ${ms / 1000} s`)
}

/** Reads one slice of the torrent's data from a target into `buf`; resolves with the bytes read. */
type SliceReader = (s: Slice, buf: Buffer) => Promise<number>

/** Every piece, read slice by slice through `read`, hashes to the torrent's value. */
async function piecesHashRight(t: ExtentTorrent, read: SliceReader): Promise<boolean> {
  for (let p = 0; p < t.pieceCount; p++) {
    const h = createHash('sha1')
    for (const s of mapPieceRange(t.layout, p, 0, pieceSize(t.layout, p))) {
      const buf = Buffer.allocUnsafe(s.length)
      if ((await read(s, buf)) !== s.length) return false
      h.update(buf)
    }
    if (!h.digest().equals(pieceHash(t, p))) return false
  }
  return true
}

/** Every piece on `target` (an image file, the extents at their offsets) hashes to the torrent's value. */
async function verify(torrentFile: string, target: string): Promise<boolean> {
  const t = parseTorrent(readFileSync(torrentFile))
  const fh = await open(target, 'r')
  try {
    return await piecesHashRight(t, async (s, buf) => (await fh.read(buf, 0, s.length, s.diskOffset)).bytesRead)
  } finally {
    await fh.close()
  }
}

/**
 * The same check of a standard client's save path: one file per extent,
 * `save/NAME/<extent's name>`, as libtorrent stores the torrent. A missing
 * extent file fails the check.
 */
async function verifyExtentsDir(torrentFile: string, save: string): Promise<boolean> {
  const t = parseTorrent(readFileSync(torrentFile))
  const files = new Map<number, FileHandle>()
  try {
    return await piecesHashRight(t, async (s, buf) => {
      const extent = t.extents[s.extent]
      let fh = files.get(s.extent)
      if (!fh) {
        fh = await open(join(save, t.name, extent.name), 'r')
        files.set(s.extent, fh)
      }
      return (await fh.read(buf, 0, s.length, s.diskOffset - extent.offset)).bytesRead
    })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  } finally {
    for (const fh of files.values()) await fh.close()
  }
}

/** `serve-http IMAGE TORRENT ADDR PORT`: stream the torrent's extents from the image to every GET (unicast baseline). */
function serveHttp(image: string, torrentFile: string, addr: string, port: number): void {
  const t = parseTorrent(readFileSync(torrentFile))
  createServer(async (req, res) => {
    if (req.url === '/ping') {
      res.end('ok')
      return
    }
    res.writeHead(200, { 'content-length': String(t.totalLength), 'content-type': 'application/octet-stream' })
    for (const e of t.extents) {
      const stream = createReadStream(image, { start: e.offset, end: e.offset + e.length - 1, highWaterMark: 1 << 20 })
      for await (const chunk of stream) if (!res.write(chunk)) await new Promise((r) => res.once('drain', r))
    }
    res.end()
  }).listen(port, addr)
}

interface SwarmRun {
  n: number
  finishes: number[]
  /** Bytes the deploy nodes uploaded to each other (the rest came from the seeder). */
  peerBytes: number
  /** Payload bytes the deploy nodes received, in all (N·S when no block came twice). */
  receivedBytes: number
  /** Seconds from process start to the first downloaded byte's torrent start (startup + resume check), median. */
  startup: number
  /** The same for the node that started last. */
  slowestStartup: number
  verified: boolean
  cpu: number
  /** Of cpu, system time (the kernel's share: sockets, tc, the veths, the target's page cache). */
  sys: number
  wall: number
}

interface UnicastRun {
  n: number
  last: number
}

async function runUnicast(topo: Topology, n: number, image: string, torrentFile: string, work: string, timeoutMs: number): Promise<UnicastRun> {
  const addr = Topology.address(0)
  const server = topo.spawn(0, process.execPath, [join(ROOT, 'dist/tools/bench/swarm.js'), 'serve-http', image, torrentFile, addr, String(HTTP_PORT)])
  const serverExit = collect(server)
  try {
    await waitHttp(topo, 1, `http://${addr}:${HTTP_PORT}/ping`, 10_000)
    const clients = Array.from({ length: n }, (_, i) =>
      collect(topo.spawn(i + 1, 'curl', ['-s', '-o', join(work, `unicast-${i + 1}.bin`), '-w', '%{time_total}', `http://${addr}:${HTTP_PORT}/image`])),
    )
    const results = await withTimeout(Promise.all(clients), timeoutMs, `unicast N=${n}`)
    for (const [i, r] of results.entries()) if (r.code !== 0) throw new Error(`unicast client ${i + 1} failed: ${r.err}`)
    return { n, last: Math.max(...results.map((r) => Number(r.out))) }
  } finally {
    server.kill('SIGTERM')
    await serverExit
    for (let i = 1; i <= n; i++) rmSync(join(work, `unicast-${i}.bin`), { force: true })
  }
}

/** The flags that give a blockswarm seed or deploy the bench's connection and unchoke limits. */
function limitFlags(opts: Options): string[] {
  return ['--max-connections', String(opts.maxConnections), ...(opts.maxUploads === undefined ? [] : ['--max-uploads', String(opts.maxUploads)])]
}

/** What the N nodes of one blockswarm run reported: finishes and start-ups in seconds from t0 (ms since the epoch). */
interface NodeResults {
  t0: number
  finishes: number[]
  startups: number[]
  peerBytes: number
  receivedBytes: number
}

/** N `blockswarm deploy` processes started at t0 (each process's start-up is inside the timed window). */
async function runDeploys(topo: Topology, n: number, torrentFile: string, targets: string[], timeoutMs: number, limits: string[], cpuProf?: string): Promise<NodeResults> {
  const t0 = Date.now()
  const nodes = targets.map((target, i) =>
    collect(
      topo.spawn(i + 1, process.execPath, [
        ...(cpuProf ? ['--cpu-prof', '--cpu-prof-dir', cpuProf] : []),
        // Fresh targets: without --skip-check the resume check would find the image's all-zero pieces
        // (inode tables) already "on" the sparse target and download less than the unicast clients do.
        CLI, 'deploy', torrentFile, target, '--bind', Topology.address(i + 1), '--port', String(BT_PORT), '--seed-idle', '5', '--skip-check', '--json', ...limits,
      ]),
    ),
  )
  const results = await withTimeout(Promise.all(nodes), timeoutMs, `swarm N=${n}`)
  const finishes: number[] = []
  const startups: number[] = []
  let peerBytes = 0
  let receivedBytes = 0
  for (const [i, r] of results.entries()) {
    let j: { ok?: boolean; finishedAt?: number; downloadSeconds?: number; uploaded?: number; downloaded?: number; error?: string }
    try {
      j = JSON.parse(r.out)
    } catch {
      throw new Error(`node ${i + 1} printed no result (exit ${r.code}): ${r.err.slice(-2000)}`)
    }
    if (!j.ok || j.finishedAt === undefined) throw new Error(`node ${i + 1} failed (exit ${r.code}): ${j.error ?? r.err.slice(-2000)}`)
    finishes.push((j.finishedAt - t0) / 1000)
    startups.push((j.finishedAt - t0) / 1000 - (j.downloadSeconds ?? 0))
    peerBytes += j.uploaded ?? 0
    receivedBytes += j.downloaded ?? 0
  }
  return { t0, finishes, startups, peerBytes, receivedBytes }
}

/**
 * --daemons: N `blockswarm daemon` processes started and answering on their
 * control sockets before the clock starts, as in a fleet where the daemon
 * comes up at boot and the orchestrator adds the torrent later; at t0 the
 * bench adds it to every daemon at once over blockswarm.v1 (skip_check, the
 * done policy --seed-idle 5, --exit-when-done) and watches each
 * (WatchTorrents, an update a second at most) until its process exits. The daemons' start-up CPU is still in CPU-s.
 */
async function runDaemons(topo: Topology, n: number, torrentFile: string, targets: string[], work: string, timeoutMs: number, limits: string[], cpuProf?: string): Promise<NodeResults> {
  const sockets = targets.map((_, i) => join(work, `control-${i + 1}.sock`))
  const procs = sockets.map((sock, i) =>
    topo.spawn(i + 1, process.execPath, [
      ...(cpuProf ? ['--cpu-prof', '--cpu-prof-dir', cpuProf] : []),
      CLI, 'daemon', '--listen', `unix:${sock}`, '--bind', Topology.address(i + 1), '--port', String(BT_PORT), '--seed-idle', '5', '--exit-when-done', ...limits,
    ]),
  )
  const exits = procs.map((p) => collect(p))
  const clients = sockets.map((sock) => connectControl(`unix:${sock}`))
  try {
    const ready = Date.now() + 60_000
    for (const [i, c] of clients.entries()) {
      for (;;) {
        try {
          await c.blockswarm.GetDaemonInfo({})
          break
        } catch (err) {
          const gone = procs[i].exitCode !== null || procs[i].signalCode !== null
          if (gone || Date.now() > ready) throw new Error(`daemon ${i + 1} did not answer on ${sockets[i]}: ${(err as Error).message}${gone ? `; it said: ${(await exits[i]).err.slice(-2000)}` : ''}`)
          await new Promise((r) => setTimeout(r, 100))
        }
      }
    }
    const torrent = readFileSync(torrentFile)
    const t0 = Date.now()
    const added = await Promise.all(clients.map((c, i) => c.blockswarm.AddTorrent({ torrent, target: targets[i], skipCheck: true })))
    const last = new Map<number, TorrentInfo>()
    const exited = new Set<number>()
    exits.forEach((e, i) => void e.then(() => exited.add(i)))
    const deadline = t0 + timeoutMs
    // One update a second at most is enough: finished_at is the daemon's own clock, and the stream's last update, sent as
    // the daemon shuts down, holds the final state (the last node to finish is done at once: every peer it knows is a seed).
    const watching = clients.map(async (c, i) => {
      try {
        for await (const u of c.blockswarm.WatchTorrents({ infoHashes: [added[i].infoHash], intervalMs: 1000 })) {
          const t = u.torrents[0]
          if (t) last.set(i, t)
        }
      } catch {
        // the daemon exited
      }
    })
    while (exited.size < n) {
      if (Date.now() > deadline) throw new Error(`swarm N=${n} did not finish within ${timeoutMs / 1000} s`)
      await new Promise((r) => setTimeout(r, 500))
    }
    await Promise.all(watching)
    const finishes: number[] = []
    const startups: number[] = []
    let peerBytes = 0
    let receivedBytes = 0
    for (let i = 0; i < n; i++) {
      const t = last.get(i)
      const r = await exits[i]
      if (!t || !t.complete || Number(t.finishedAt) === 0) throw new Error(`node ${i + 1} did not finish (exit ${r.code}, state ${t?.state ?? 'never seen'}${t?.error ? `: ${t.error}` : ''}): ${r.err.slice(-2000)}`)
      finishes.push((Number(t.finishedAt) - t0) / 1000)
      startups.push((Number(t.startedAt) - t0) / 1000)
      peerBytes += Number(t.totalUploaded)
      receivedBytes += Number(t.totalDownloaded)
    }
    return { t0, finishes, startups, peerBytes, receivedBytes }
  } finally {
    for (const c of clients) c.close()
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM')
    await Promise.all(exits)
  }
}

async function runSwarm(topo: Topology, n: number, image: string, imageSize: number, torrentFile: string, work: string, timeoutMs: number, limits: string[], cpuProf: string | undefined, daemons: boolean): Promise<SwarmRun> {
  const addr = Topology.address(0)
  const cpu0 = childCpuSplit()
  const seeder = topo.spawn(0, process.execPath, [
    ...(cpuProf ? ['--cpu-prof', '--cpu-prof-dir', cpuProf, '--cpu-prof-name', `seed-N${n}.cpuprofile`] : []),
    CLI, 'seed', torrentFile, image, '--tracker-embedded', String(TRACKER_PORT), '--bind', addr, '--port', String(BT_PORT), '--tracker-interval', '5', ...limits,
  ])
  let seederLog = ''
  seeder.stderr?.on('data', (d) => (seederLog = (seederLog + d).slice(-4000)))
  seeder.stdout?.on('data', (d) => (seederLog = (seederLog + d).slice(-4000)))
  const seederExit = collect(seeder)
  const targets = Array.from({ length: n }, (_, i) => join(work, `node${i + 1}.img`))
  try {
    await waitHttp(topo, 1, `http://${addr}:${TRACKER_PORT}/stats`, 20_000).catch((err) => {
      throw new Error(`${(err as Error).message}; seeder (exit ${seeder.exitCode}) said: ${seederLog}`)
    })
    for (const t of targets) {
      writeFileSync(t, '')
      execFileSync('truncate', ['-s', String(imageSize), t])
    }
    const { t0, finishes, startups, peerBytes, receivedBytes } = daemons
      ? await runDaemons(topo, n, torrentFile, targets, work, timeoutMs, limits, cpuProf)
      : await runDeploys(topo, n, torrentFile, targets, timeoutMs, limits, cpuProf)
    const wall = (Date.now() - t0) / 1000
    seeder.kill('SIGTERM')
    await seederExit
    let verified = true
    for (const t of targets) verified = (await verify(torrentFile, t)) && verified
    startups.sort((a, b) => a - b)
    return { n, finishes: finishes.sort((a, b) => a - b), peerBytes, receivedBytes, startup: startups[Math.floor((n - 1) / 2)], slowestStartup: startups[n - 1], verified, ...childCpuSince(cpu0), wall }
  } finally {
    seeder.kill('SIGKILL')
    for (const t of targets) rmSync(t, { force: true })
  }
}

interface ReferenceRun {
  /** The leechers' finishes (data complete and fsynced), seconds from their start, ascending. */
  finishes: number[]
  /** Leechers whose every piece hashes right. */
  verified: number
  /** CPU seconds of opentracker, the seed and the leechers. */
  cpu: number
  /** Of cpu, system time (the kernel's share: sockets, tc, the veths, the target's page cache). */
  sys: number
}

/** The last 4000 characters `child` printed (stdout and stderr), for error messages. */
function outputTail(child: ChildProcess): () => string {
  let text = ''
  const add = (d: Buffer) => (text = (text + d.toString()).slice(-4000))
  child.stdout?.on('data', add)
  child.stderr?.on('data', add)
  return () => text
}

/** The first JSON object `child` prints as a stdout line that has `key`; rejects when the child ends before. */
function jsonLine(child: ChildProcess, key: string, what: string, tail: () => string): Promise<Record<string, unknown>> {
  return new Promise((res, rej) => {
    let pending = ''
    child.stdout?.on('data', (d: Buffer) => {
      pending += d.toString()
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        const text = pending.slice(0, nl)
        pending = pending.slice(nl + 1)
        let j: unknown
        try {
          j = JSON.parse(text)
        } catch {
          continue
        }
        if (typeof j === 'object' && j !== null && key in j) res(j as Record<string, unknown>)
      }
    })
    child.once('close', (code, signal) => rej(new Error(`${what} ended (${signal ?? `exit ${code}`}) before it printed "${key}": ${tail()}`)))
  })
}

/** SIGTERM to each child still running, SIGKILL after 5 s; resolves once all have exited (and are reaped). */
async function stopAll(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map((c) => {
      if (c.exitCode !== null || c.signalCode !== null) return undefined
      return new Promise<void>((res) => {
        const kill = setTimeout(() => c.kill('SIGKILL'), 5000)
        c.once('exit', () => {
          clearTimeout(kill)
          res()
        })
        c.kill('SIGTERM')
      })
    }),
  )
}

/** The flags that give libtorrent-peer.py the bench's limits (-1: unlimited unchoke slots). */
function referenceLimitFlags(opts: Options): string[] {
  return [`--max-connections=${opts.maxConnections}`, `--max-uploads=${opts.maxUploads ?? -1}`]
}

/**
 * The reference swarm: opentracker, a libtorrent seed and N libtorrent leechers
 * in the blockswarm run's topology, no blockswarm process among them. The
 * leechers keep seeding until the last has finished, then everything stops.
 */
async function runReference(
  topo: Topology,
  n: number,
  torrentFile: string,
  seedDir: string,
  whitelist: string,
  work: string,
  timeoutMs: number,
  limits: string[],
  armed: boolean,
): Promise<ReferenceRun> {
  const addr = Topology.address(0)
  const started: ChildProcess[] = []
  const start = (node: number, cmd: string, args: string[], stdin: 'ignore' | 'pipe' = 'ignore') => {
    const child = topo.spawn(node, cmd, args, { stdio: [stdin, 'pipe', 'pipe'] })
    started.push(child)
    return { child, tail: outputTail(child) }
  }
  const peer = (node: number, args: string[], stdin: 'ignore' | 'pipe' = 'ignore') => start(node, PYTHON, [LT_PEER, ...limits, '--ezio', '--bind', Topology.address(node), ...args], stdin)
  const saves = Array.from({ length: n }, (_, i) => join(work, `lt-node${i + 1}`))
  const cpu0 = childCpuSplit()
  try {
    // The torrent's announce URL is the embedded tracker's address and port, free again now that the blockswarm seed has exited.
    const tracker = start(0, 'opentracker', ['-i', addr, '-p', String(TRACKER_PORT), '-P', String(TRACKER_PORT), '-w', whitelist])
    await waitHttp(topo, 1, `http://${addr}:${TRACKER_PORT}/scrape`, 20_000).catch((err) => {
      throw new Error(`${(err as Error).message}; opentracker (exit ${tracker.child.exitCode}) said: ${tracker.tail()}`)
    })
    // The seed is ready once the tracker has its address, so that every leecher's first announce finds it.
    const seeder = peer(0, ['--wait-announce', 'seed', torrentFile, seedDir, String(BT_PORT)])
    await withTimeout(jsonLine(seeder.child, 'ready', 'the libtorrent seed', seeder.tail), 20_000, "the libtorrent seed's first announce").catch((err) => {
      // An exit already says what the seed printed; a timeout does not.
      const running = seeder.child.exitCode === null && seeder.child.signalCode === null
      throw new Error(running ? `${(err as Error).message}; it said: ${seeder.tail()}` : (err as Error).message)
    })
    for (const save of saves) mkdirSync(save)
    let t0 = Date.now()
    const leechers = saves.map((save, i) => peer(i + 1, ['--keep-seeding', ...(armed ? ['--go-on-stdin'] : []), 'leech', torrentFile, save, String(BT_PORT)], armed ? 'pipe' : 'ignore'))
    if (armed) {
      // --daemons: the leechers start before the clock too, and add the torrent when told to (one line on stdin)
      await withTimeout(Promise.all(leechers.map((l, i) => jsonLine(l.child, 'armed', `libtorrent leecher ${i + 1}`, l.tail))), 60_000, 'the libtorrent leechers starting')
      t0 = Date.now()
      for (const l of leechers) l.child.stdin!.end('go\n')
    }
    const dones = await withTimeout(
      Promise.all(leechers.map((l, i) => jsonLine(l.child, 'done', `libtorrent leecher ${i + 1}`, l.tail))),
      timeoutMs,
      `reference N=${n}`,
    )
    // All have finished: nobody needs a piece any more, so the seeding leechers, the seed and the tracker stop.
    await stopAll(started)
    const { cpu, sys } = childCpuSince(cpu0)
    let verified = 0
    for (const save of saves) if (await verifyExtentsDir(torrentFile, save)) verified++
    return { finishes: dones.map((d) => (Number(d.at) * 1000 - t0) / 1000).sort((a, b) => a - b), verified, cpu, sys }
  } finally {
    for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    for (const save of saves) rmSync(save, { recursive: true, force: true })
  }
}

/** What the reference needs besides root: opentracker and Debian's python3 with libtorrent; the libtorrent version. */
function referencePreflight(): string {
  try {
    execFileSync('sh', ['-c', 'command -v opentracker'], { stdio: 'ignore' })
  } catch {
    throw new Error('the reference swarm needs opentracker (Debian package opentracker), or give --no-reference')
  }
  try {
    return execFileSync(PYTHON, ['-c', 'import libtorrent; print(libtorrent.__version__)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
  } catch {
    throw new Error(`the reference swarm needs ${PYTHON} with libtorrent (Debian package python3-libtorrent), or give --no-reference`)
  }
}

const fmt = (x: number) => x.toFixed(1)

async function main(): Promise<void> {
  if (process.argv[2] === 'serve-http') {
    serveHttp(process.argv[3], process.argv[4], process.argv[5], Number(process.argv[6]))
    return
  }
  const opts = parseArgs(process.argv.slice(2))
  if (process.getuid?.() !== 0) throw new Error('bench:swarm needs root (network namespaces and tc)')
  const ltVersion = opts.reference ? referencePreflight() : undefined
  const maxN = Math.max(...opts.nodes)
  const work = mkdtempSync(join(tmpdir(), 'bsw-swarm-'))
  let topo: Topology | undefined
  // opentracker reads its whitelist after dropping root, so it lives outside the private work directory.
  const whitelistDir = opts.reference ? mkdtempSync(join(tmpdir(), 'bsw-swarm-whitelist-')) : undefined
  const cleanup = () => {
    topo?.destroy()
    rmSync(work, { recursive: true, force: true })
    if (whitelistDir) rmSync(whitelistDir, { recursive: true, force: true })
  }
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130))

  const MiB = 1024 * 1024
  const image = makeExt4Image(work, opts.size)
  const torrentFile = join(work, 'golden.torrent')
  // With the reference, create also writes the extent files the libtorrent seed serves (SEED_DIR/NAME/<offset>).
  const seedDir = join(work, 'lt-seed')
  execFileSync(process.execPath, [
    CLI, 'create', image.path, '-o', torrentFile, '--tracker', `http://${Topology.address(0)}:${TRACKER_PORT}/announce`, '--piece-size', opts.pieceSize, '--json',
    ...(opts.reference ? ['--extents-dir', seedDir] : []),
  ])
  const torrent = parseTorrent(readFileSync(torrentFile))
  const S = torrent.totalLength
  const whitelist = whitelistDir ? join(whitelistDir, 'whitelist.txt') : ''
  if (whitelistDir) {
    chmodSync(whitelistDir, 0o755)
    writeFileSync(whitelist, `${torrent.infoHash}\n`, { mode: 0o644 })
  }
  topo = Topology.create({ nodes: maxN + 1, rate: opts.rate, seederRate: opts.seederRate })
  const timeoutMs = opts.timeout * 1000

  // C: goodput of one shaped link, measured by the unicast run with one client (same bytes, same links).
  const calib = await runUnicast(topo, 1, image.path, torrentFile, work, timeoutMs)
  const C = S / calib.last
  const Cseed = opts.seederRate ? (C * rateBytes(opts.seederRate)) / rateBytes(opts.rate) : C
  process.stdout.write(
    `image: ext4 ${fmt(image.size / MiB)} MiB, torrent S = ${fmt(S / MiB)} MiB; links ${opts.rate}` +
      (opts.seederRate ? ` (seeder ${opts.seederRate})` : '') +
      `, pieces ${opts.pieceSize}: nominal ${fmt(rateBytes(opts.rate) / 1e6)} MB/s, measured goodput C = ${fmt(C / 1e6)} MB/s\n`,
  )
  const limitsText =
    `max-connections ${opts.maxConnections}, max-uploads ${opts.maxUploads ?? 'unlimited (every interested peer)'}` +
    (ltVersion ? `; reference: libtorrent ${ltVersion} (EZIO's settings, TCP only) with opentracker` : '; no reference (--no-reference)')
  process.stdout.write(`both engines: ${limitsText}\n`)
  process.stdout.write(
    opts.daemons
      ? 'blockswarm nodes: daemons started before the clock, the torrent added to all over blockswarm.v1 at t0 (--daemons); the libtorrent leechers likewise started before it, each adding the torrent at t0\n\n'
      : 'blockswarm nodes: deploy processes started at t0 (their start-up is in the times)\n\n',
  )

  const header = ['N', 'unicast last s', 'swarm first s', 'median s', 'last s', 'T* s', 'last/T*', 'unicast/T*', 'from peers', 'twice', 'startup s', 'slowest start s', 'CPU-s', 'wall-s', 'verified']
  if (opts.reference) header.push('lt last s', 'bs/lt last', 'lt CPU-s', 'bs/lt CPU', 'lt verified')
  const rows: string[][] = []
  let lastLine = ''
  for (const n of opts.nodes) {
    const uni = n === 1 ? calib : n <= opts.unicastMax ? await runUnicast(topo, n, image.path, torrentFile, work, timeoutMs) : undefined
    const sw = await runSwarm(topo, n, image.path, image.size, torrentFile, work, timeoutMs, limitFlags(opts), opts.cpuProf, opts.daemons)
    const tStar = Math.max(S / Cseed, S / C, (n * S) / (Cseed + n * C))
    const last = sw.finishes[sw.finishes.length - 1]
    const median = sw.finishes[Math.floor((sw.finishes.length - 1) / 2)]
    rows.push([String(n), uni ? fmt(uni.last) : 'not run', fmt(sw.finishes[0]), fmt(median), fmt(last), fmt(tStar), (last / tStar).toFixed(2), uni ? (uni.last / tStar).toFixed(2) : '-', `${Math.round((100 * sw.peerBytes) / (n * S))}%`, `${((100 * (sw.receivedBytes - n * S)) / (n * S)).toFixed(1)}%`, fmt(sw.startup), fmt(sw.slowestStartup), fmt(sw.cpu), fmt(sw.wall), sw.verified ? `${n}/${n}` : 'NO'])
    process.stdout.write(`N=${n}: swarm last ${fmt(last)} s (T* ${fmt(tStar)} s), unicast last ${uni ? `${fmt(uni.last)} s` : 'not run'}, CPU ${fmt(sw.cpu)} s (${fmt(sw.sys)} s system) over ${fmt(sw.wall)} s wall\n`)
    if (!sw.verified) process.exitCode = 1
    if (opts.reference) {
      const ref = await runReference(topo, n, torrentFile, seedDir, whitelist, work, timeoutMs, referenceLimitFlags(opts), opts.daemons)
      const ltLast = ref.finishes[ref.finishes.length - 1]
      rows[rows.length - 1].push(fmt(ltLast), (last / ltLast).toFixed(2), fmt(ref.cpu), (sw.cpu / ref.cpu).toFixed(2), `${ref.verified}/${n}`)
      process.stdout.write(
        `N=${n}: libtorrent last ${fmt(ltLast)} s, CPU ${fmt(ref.cpu)} s (${fmt(ref.sys)} s system); blockswarm/libtorrent: last ${(last / ltLast).toFixed(2)}, CPU ${(sw.cpu / ref.cpu).toFixed(2)}\n`,
      )
      if (ref.verified !== n) process.exitCode = 1
    }
    lastLine = `swarm N=${n}: last ${fmt(last)} s, bound ${fmt(tStar)} s, ratio ${(last / tStar).toFixed(2)}`
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join('  ')
  process.stdout.write('\n' + line(header) + '\n' + rows.map(line).join('\n') + '\n\n' + lastLine + '\n')
}

main().catch((err) => {
  process.stderr.write(`bench:swarm: ${(err as Error).message}\n`)
  process.exit(1)
})
