/**
 * Swarm-scale benchmark: one image to N nodes over emulated links, the
 * experiment of EZIO's scaling table scaled to this machine.
 *
 *   npm run bench:swarm -- [--nodes 1,2,4,8,16,32] [--rate 100mbit] [--seeder-rate RATE]
 *                          [--size 128M] [--piece-size 256K] [--unicast-max N] [--timeout 900]
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
 * Needs root (network namespaces, tc). Cleans up on exit and on SIGINT/SIGTERM.
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseTorrent, pieceHash } from '../../src/torrent/metainfo.js'
import { mapPieceRange, pieceSize } from '../../src/torrent/piece-map.js'
import { parseSize } from '../../src/util/size.js'
import { makeExt4Image } from './ext4-image.js'
import { Topology } from './netns.js'

const ROOT = resolve(import.meta.dirname, '../../..')
const CLI = join(ROOT, 'bin/blockswarm.js')
const TRACKER_PORT = 8000
const BT_PORT = 6881
const HTTP_PORT = 8080

interface Options {
  nodes: number[]
  rate: string
  seederRate?: string
  size: number
  pieceSize: string
  timeout: number
  /** Largest N for which the unicast baseline is run (it takes N × S/C). */
  unicastMax: number
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { nodes: [1, 2, 4, 8, 16, 32], rate: '100mbit', size: parseSize('128M'), pieceSize: '256K', timeout: 900, unicastMax: 1000 }
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

/** CPU seconds used by reaped children so far (cutime + cstime of /proc/self/stat). */
function childCpuSeconds(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')
  return (Number(fields[13]) + Number(fields[14])) / 100
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

/** Every piece on `target` hashes to the torrent's value. */
async function verify(torrentFile: string, target: string): Promise<boolean> {
  const t = parseTorrent(readFileSync(torrentFile))
  const fh = await open(target, 'r')
  try {
    for (let p = 0; p < t.pieceCount; p++) {
      const h = createHash('sha1')
      for (const s of mapPieceRange(t.layout, p, 0, pieceSize(t.layout, p))) {
        const buf = Buffer.allocUnsafe(s.length)
        const { bytesRead } = await fh.read(buf, 0, s.length, s.diskOffset)
        if (bytesRead !== s.length) return false
        h.update(buf)
      }
      if (!h.digest().equals(pieceHash(t, p))) return false
    }
    return true
  } finally {
    await fh.close()
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
  /** Seconds from process start to the first downloaded byte's torrent start (startup + resume check), median. */
  startup: number
  verified: boolean
  cpu: number
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

async function runSwarm(topo: Topology, n: number, image: string, imageSize: number, torrentFile: string, work: string, timeoutMs: number): Promise<SwarmRun> {
  const addr = Topology.address(0)
  const cpu0 = childCpuSeconds()
  const seeder = topo.spawn(0, process.execPath, [
    CLI, 'seed', torrentFile, image, '--tracker-embedded', String(TRACKER_PORT), '--bind', addr, '--port', String(BT_PORT), '--tracker-interval', '5',
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
    const t0 = Date.now()
    const nodes = targets.map((target, i) =>
      collect(
        topo.spawn(i + 1, process.execPath, [
          // Fresh targets: without --skip-check the resume check would find the image's all-zero pieces
          // (inode tables) already "on" the sparse target and download less than the unicast clients do.
          CLI, 'deploy', torrentFile, target, '--bind', Topology.address(i + 1), '--port', String(BT_PORT), '--seed-idle', '5', '--skip-check', '--json',
        ]),
      ),
    )
    const results = await withTimeout(Promise.all(nodes), timeoutMs, `swarm N=${n}`)
    const finishes: number[] = []
    const startups: number[] = []
    let peerBytes = 0
    for (const [i, r] of results.entries()) {
      let j: { ok?: boolean; finishedAt?: number; downloadSeconds?: number; uploaded?: number; error?: string }
      try {
        j = JSON.parse(r.out)
      } catch {
        throw new Error(`node ${i + 1} printed no result (exit ${r.code}): ${r.err.slice(-2000)}`)
      }
      if (!j.ok || j.finishedAt === undefined) throw new Error(`node ${i + 1} failed (exit ${r.code}): ${j.error ?? r.err.slice(-2000)}`)
      finishes.push((j.finishedAt - t0) / 1000)
      startups.push((j.finishedAt - t0) / 1000 - (j.downloadSeconds ?? 0))
      peerBytes += j.uploaded ?? 0
    }
    const wall = (Date.now() - t0) / 1000
    seeder.kill('SIGTERM')
    await seederExit
    let verified = true
    for (const t of targets) verified = (await verify(torrentFile, t)) && verified
    startups.sort((a, b) => a - b)
    return { n, finishes: finishes.sort((a, b) => a - b), peerBytes, startup: startups[Math.floor((n - 1) / 2)], verified, cpu: childCpuSeconds() - cpu0, wall }
  } finally {
    seeder.kill('SIGKILL')
    for (const t of targets) rmSync(t, { force: true })
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
  const maxN = Math.max(...opts.nodes)
  const work = mkdtempSync(join(tmpdir(), 'bsw-swarm-'))
  let topo: Topology | undefined
  const cleanup = () => {
    topo?.destroy()
    rmSync(work, { recursive: true, force: true })
  }
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130))

  const MiB = 1024 * 1024
  const image = makeExt4Image(work, opts.size)
  const torrentFile = join(work, 'golden.torrent')
  execFileSync(process.execPath, [CLI, 'create', image.path, '-o', torrentFile, '--tracker', `http://${Topology.address(0)}:${TRACKER_PORT}/announce`, '--piece-size', opts.pieceSize, '--json'])
  const S = parseTorrent(readFileSync(torrentFile)).totalLength
  topo = Topology.create({ nodes: maxN + 1, rate: opts.rate, seederRate: opts.seederRate })
  const timeoutMs = opts.timeout * 1000

  // C: goodput of one shaped link, measured by the unicast run with one client (same bytes, same links).
  const calib = await runUnicast(topo, 1, image.path, torrentFile, work, timeoutMs)
  const C = S / calib.last
  const Cseed = opts.seederRate ? (C * rateBytes(opts.seederRate)) / rateBytes(opts.rate) : C
  process.stdout.write(
    `image: ext4 ${fmt(image.size / MiB)} MiB, torrent S = ${fmt(S / MiB)} MiB; links ${opts.rate}` +
      (opts.seederRate ? ` (seeder ${opts.seederRate})` : '') +
      `, pieces ${opts.pieceSize}: nominal ${fmt(rateBytes(opts.rate) / 1e6)} MB/s, measured goodput C = ${fmt(C / 1e6)} MB/s\n\n`,
  )

  const header = ['N', 'unicast last s', 'swarm first s', 'median s', 'last s', 'T* s', 'last/T*', 'unicast/T*', 'from peers', 'startup s', 'CPU-s', 'wall-s', 'verified']
  const rows: string[][] = []
  let lastLine = ''
  for (const n of opts.nodes) {
    const uni = n === 1 ? calib : n <= opts.unicastMax ? await runUnicast(topo, n, image.path, torrentFile, work, timeoutMs) : undefined
    const sw = await runSwarm(topo, n, image.path, image.size, torrentFile, work, timeoutMs)
    const tStar = Math.max(S / Cseed, S / C, (n * S) / (Cseed + n * C))
    const last = sw.finishes[sw.finishes.length - 1]
    const median = sw.finishes[Math.floor((sw.finishes.length - 1) / 2)]
    rows.push([String(n), uni ? fmt(uni.last) : 'not run', fmt(sw.finishes[0]), fmt(median), fmt(last), fmt(tStar), (last / tStar).toFixed(2), uni ? (uni.last / tStar).toFixed(2) : '-', `${Math.round((100 * sw.peerBytes) / (n * S))}%`, fmt(sw.startup), fmt(sw.cpu), fmt(sw.wall), sw.verified ? `${n}/${n}` : 'NO'])
    process.stdout.write(`N=${n}: swarm last ${fmt(last)} s (T* ${fmt(tStar)} s), unicast last ${uni ? `${fmt(uni.last)} s` : 'not run'}, CPU ${fmt(sw.cpu)} s over ${fmt(sw.wall)} s wall\n`)
    if (!sw.verified) process.exitCode = 1
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
