/**
 * Tracker announce load at fleet scale: what 1,000 (or --peers N) nodes
 * announcing at once cost a tracker. Measures, in the same run,
 *  - blockswarm's embedded tracker (a real `blockswarm seed --tracker-embedded` process), and
 *  - Debian's opentracker with the torrent in its whitelist (the reference),
 * each receiving N `started` announces (distinct peer ids and ports, 50
 * concurrent HTTP requests, as a fleet booting together does), then N
 * periodic re-announces. Prints announces/s, latency percentiles and peers
 * per answer.
 *
 *   npm run bench:tracker -- [--peers 1000] [--concurrency 50]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import bencode from 'bencode'
import { parseTorrent } from '../../src/torrent/metainfo.js'
import { makeExt4Image } from './ext4-image.js'

const ROOT = resolve(import.meta.dirname, '../../..')
const CLI = join(ROOT, 'bin/blockswarm.js')
const EMBEDDED_PORT = 16969
const OPENTRACKER_PORT = 16970
const BT_PORT = 16881

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name)
  return i > 0 ? Number(process.argv[i + 1]) : fallback
}

/** %-escape every byte, as BitTorrent clients send info_hash and peer_id. */
function escapeBytes(b: Buffer): string {
  return [...b].map((x) => '%' + x.toString(16).padStart(2, '0')).join('')
}

interface Answer {
  ms: number
  peers: number
}

function announce(port: number, infoHash: Buffer, peer: number, event: string, left: number): Promise<Answer> {
  const peerId = Buffer.from(`-BL0001-${String(peer).padStart(12, '0')}`)
  const path =
    `/announce?info_hash=${escapeBytes(infoHash)}&peer_id=${escapeBytes(peerId)}&port=${20000 + (peer % 40000)}` +
    `&uploaded=0&downloaded=0&left=${left}&compact=1&numwant=50${event ? `&event=${event}` : ''}`
  const t0 = performance.now()
  return new Promise((res, rej) => {
    // A new connection per announce, as a fleet of separate nodes makes them (opentracker closes
    // each connection after its answer without saying so, so a pooled socket would be reused dead).
    get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (r) => {
      const chunks: Buffer[] = []
      r.on('data', (c) => chunks.push(c))
      r.on('end', () => {
        const body = bencode.decode(Buffer.concat(chunks)) as Record<string, unknown>
        if (body['failure reason']) return rej(new Error(`tracker refused: ${Buffer.from(body['failure reason'] as Uint8Array)}`))
        const peers = body.peers instanceof Uint8Array ? body.peers.length / 6 : Array.isArray(body.peers) ? body.peers.length : 0
        res({ ms: performance.now() - t0, peers })
      })
    }).on('error', (err) => rej(new Error(`port ${port}, peer ${peer}: ${err.message}`)))
  })
}

/** N announces, `concurrency` in flight; returns announces/s and the answers. */
async function round(port: number, infoHash: Buffer, n: number, concurrency: number, event: string, left: number) {
  const answers: Answer[] = []
  let next = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) answers.push(await announce(port, infoHash, next++, event, left))
    }),
  )
  const seconds = (performance.now() - t0) / 1000
  const ms = answers.map((a) => a.ms).sort((a, b) => a - b)
  const pct = (p: number) => ms[Math.min(ms.length - 1, Math.floor((p / 100) * ms.length))]
  return { rate: n / seconds, p50: pct(50), p99: pct(99), peers: answers.reduce((s, a) => s + a.peers, 0) / n }
}

async function waitAnnounce(port: number, infoHash: Buffer): Promise<void> {
  const until = Date.now() + 20_000
  for (;;) {
    try {
      await announce(port, infoHash, 999_999, '', 0)
      return
    } catch (err) {
      if (Date.now() > until) throw err
      await new Promise((r) => setTimeout(r, 200))
    }
  }
}

async function main(): Promise<void> {
  const peers = arg('--peers', 1000)
  const concurrency = arg('--concurrency', 50)
  const work = mkdtempSync(join(tmpdir(), 'bsw-tracker-'))
  const children: ChildProcess[] = []
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    rmSync(work, { recursive: true, force: true })
  }
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130))

  const image = makeExt4Image(work, 4 * 1024 * 1024)
  const torrentFile = join(work, 'golden.torrent')
  execFileSync(process.execPath, [CLI, 'create', image.path, '-o', torrentFile, '--json'])
  const t = parseTorrent(readFileSync(torrentFile))
  const infoHash = Buffer.from(t.infoHash, 'hex')

  children.push(
    spawn(process.execPath, [CLI, 'seed', torrentFile, image.path, '--tracker-embedded', String(EMBEDDED_PORT), '--port', String(BT_PORT)], { stdio: 'ignore' }),
  )
  const whitelist = join(work, 'whitelist')
  writeFileSync(whitelist, t.infoHash + '\n', { mode: 0o644 })
  // opentracker reads the whitelist after dropping root (as nobody): the directory must be searchable.
  chmodSync(work, 0o755)
  children.push(
    // opentracker chroots (-d) before it reads the whitelist: the path is inside the chroot.
    spawn('opentracker', ['-i', '127.0.0.1', '-p', String(OPENTRACKER_PORT), '-P', String(OPENTRACKER_PORT), '-d', work, '-w', '/whitelist'], {
      stdio: 'ignore',
    }),
  )
  await waitAnnounce(EMBEDDED_PORT, infoHash)
  await waitAnnounce(OPENTRACKER_PORT, infoHash)

  const rows: string[][] = []
  for (const [name, port] of [
    ['opentracker (reference)', OPENTRACKER_PORT],
    ['blockswarm seed --tracker-embedded', EMBEDDED_PORT],
  ] as const) {
    const started = await round(port, infoHash, peers, concurrency, 'started', t.totalLength)
    const again = await round(port, infoHash, peers, concurrency, '', t.totalLength)
    rows.push([name, started.rate.toFixed(0), started.p50.toFixed(1), started.p99.toFixed(1), again.rate.toFixed(0), again.p99.toFixed(1), again.peers.toFixed(0)])
  }
  const ref = Number(rows[0][1])
  const header = ['tracker', 'started/s', 'p50 ms', 'p99 ms', 're-announce/s', 'p99 ms', 'peers/answer', '× ref']
  for (const r of rows) r.push((Number(r[1]) / ref).toFixed(2))
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (c: string[]) => c.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ')
  process.stdout.write(`${peers} peers announcing, ${concurrency} at a time, over loopback\n\n${line(header)}\n${rows.map(line).join('\n')}\n`)
}

main().catch((err) => {
  process.stderr.write(`bench:tracker: ${(err as Error).message}\n`)
  process.exit(1)
})
