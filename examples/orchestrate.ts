/**
 * Drive a deploy from one place over gRPC: add one torrent to many blockswarm
 * daemons (each with its own target), watch them all, report the slowest
 * node, and exit 0 once every node holds every piece, verified and flushed.
 *
 *   npm run build
 *   node dist/examples/orchestrate.js golden.torrent 10.0.0.11:50051=/dev/sda 10.0.0.12:50051=/dev/nvme0n1 …
 *        [--peer HOST:PORT]… [--seed-idle SECONDS] [--timeout SECONDS] [--token-file FILE] [--tls-ca FILE]
 *
 * Each node runs `blockswarm daemon --listen ADDR` (examples/blockswarm.service);
 * ADDR may also be unix:/path. Running it again is safe: a node that already
 * has the torrent on the same target is watched, not added twice.
 * Exit code: 0 all nodes done; 1 a node failed or the timeout passed (each
 * cause is printed); 2 bad arguments.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ClientError, Status } from 'nice-grpc'
import type { TorrentInfo } from '../src/control/blockswarm-wire.js'
import { type ClientSecurity, type ControlClient, connectControl, describeControlError } from '../src/control/client.js'
import { parseTorrent } from '../src/torrent/metainfo.js'

interface NodeSpec {
  address: string
  target: string
}

interface NodeResult {
  node: NodeSpec
  /** Unix ms when its last piece was verified and flushed. */
  finishedAt?: number
  error?: string
  last?: TorrentInfo
}

const USAGE = 'usage: orchestrate.js TORRENT ADDR=TARGET [ADDR=TARGET…] [--peer HOST:PORT]… [--seed-idle S] [--timeout S] [--token-file F] [--tls-ca F]'
const say = (line: string) => process.stdout.write(line + '\n')
const pct = (t: TorrentInfo | undefined) => `${((t?.progress ?? 0) * 100).toFixed(1)}%`

class UsageError extends Error {}

function parseCommandLine(argv: string[]) {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        peer: { type: 'string', multiple: true, default: [] },
        'seed-idle': { type: 'string' },
        timeout: { type: 'string', default: '3600' },
        'token-file': { type: 'string' },
        'tls-ca': { type: 'string' },
      },
    })
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`)
  }
  const { values, positionals } = parsed
  if (positionals.length < 2) throw new UsageError(`give a torrent and at least one ADDR=TARGET\n${USAGE}`)
  const [torrentFile, ...pairs] = positionals
  const nodes = pairs.map((p): NodeSpec => {
    // split where the absolute target path starts: host:port=/dev/sda and unix:/run/x.sock=/dev/sda alike
    const at = p.indexOf('=/')
    if (at <= 0) throw new UsageError(`${JSON.stringify(p)} is not ADDR=TARGET with an absolute TARGET (e.g. 10.0.0.11:50051=/dev/sda)`)
    return { address: p.slice(0, at), target: resolve(p.slice(at + 1)) }
  })
  const seconds = (text: string | undefined, flag: string) => {
    if (text === undefined) return undefined
    const n = Number(text)
    if (!Number.isFinite(n) || n < 0 || text.trim() === '') throw new UsageError(`${flag} ${JSON.stringify(text)} must be a number of seconds >= 0`)
    return n
  }
  const security: ClientSecurity = {}
  if (values['token-file']) security.token = readFileSync(values['token-file'], 'utf8').trim()
  if (values['tls-ca']) security.tls = { ca: readFileSync(values['tls-ca']) }
  return {
    torrentFile,
    nodes,
    peers: values.peer as string[],
    seedIdle: seconds(values['seed-idle'], '--seed-idle'),
    timeoutMs: seconds(values.timeout, '--timeout')! * 1000,
    security,
  }
}

/** Add the torrent to a node; a node that already has it on the same target is fine (a re-run). */
async function addTo(c: ControlClient, node: NodeSpec, torrent: Buffer, infoHash: string, peers: string[], seedIdle: number | undefined): Promise<string> {
  try {
    await c.blockswarm.AddTorrent({
      torrent,
      target: node.target,
      peers,
      donePolicy: seedIdle === undefined ? null : { seedRatio: 0, seedIdleSeconds: seedIdle },
    })
    return 'added'
  } catch (err) {
    if (!(err instanceof ClientError && err.code === Status.ALREADY_EXISTS)) throw err
    const have = await c.blockswarm.GetTorrent({ infoHash }).catch(() => undefined)
    if (have?.target !== node.target) throw err
    return 'already there'
  }
}

/** Watch one node until its torrent is complete (resolves) or fails (rejects); `onInfo` sees every report. */
async function watchNode(c: ControlClient, infoHash: string, onInfo: (t: TorrentInfo) => void, signal: AbortSignal): Promise<number> {
  for await (const update of c.blockswarm.WatchTorrents({ infoHashes: [infoHash], intervalMs: 1000 }, { signal })) {
    for (const t of update.torrents) {
      onInfo(t)
      if (t.state === 'TORRENT_STATE_ERROR') throw new Error(t.error)
      if (t.finishedAt > 0) return t.finishedAt
    }
    if (update.removed.includes(infoHash)) throw new Error('the torrent was removed from the daemon')
  }
  throw new Error('the daemon ended the watch (it is shutting down)')
}

async function main(): Promise<number> {
  const o = parseCommandLine(process.argv.slice(2))
  let torrent: Buffer
  try {
    torrent = readFileSync(o.torrentFile)
  } catch (err) {
    throw new Error(`cannot read the torrent ${o.torrentFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  const { infoHash, name } = parseTorrent(torrent)
  const started = Date.now()
  const stop = new AbortController()
  const timer = setTimeout(() => stop.abort(), o.timeoutMs)
  say(`deploying ${name} (${infoHash}) to ${o.nodes.length} nodes`)

  const results: NodeResult[] = o.nodes.map((node) => ({ node }))
  const finished = () => results.filter((r) => r.finishedAt !== undefined).length
  const report = setInterval(() => {
    const waiting = results.filter((r) => r.finishedAt === undefined && r.error === undefined)
    if (!waiting.length) return
    const behind = waiting.reduce((a, b) => ((a.last?.progress ?? 0) <= (b.last?.progress ?? 0) ? a : b))
    say(`  ${finished()}/${results.length} done; furthest behind: ${behind.node.address} at ${pct(behind.last)}`)
  }, 5000)

  await Promise.all(
    results.map(async (r) => {
      const c = connectControl(r.node.address, o.security)
      try {
        const how = await addTo(c, r.node, torrent, infoHash, o.peers, o.seedIdle)
        say(`  ${r.node.address}: ${how} -> ${r.node.target}`)
        r.finishedAt = await watchNode(c, infoHash, (t) => (r.last = t), stop.signal)
        say(`  ${r.node.address}: done in ${((r.finishedAt - started) / 1000).toFixed(1)} s (${finished()}/${results.length})`)
      } catch (err) {
        r.error = stop.signal.aborted ? `not done after ${o.timeoutMs / 1000} s (--timeout), at ${pct(r.last)}` : describeControlError(err, r.node.address, o.security).message
        say(`  ${r.node.address}: FAILED: ${r.error}`)
      } finally {
        c.close()
      }
    }),
  )
  clearTimeout(timer)
  clearInterval(report)

  const failed = results.filter((r) => r.error !== undefined)
  const done = results.filter((r) => r.finishedAt !== undefined).sort((a, b) => a.finishedAt! - b.finishedAt!)
  if (done.length) {
    const slowest = done[done.length - 1]
    const median = done[Math.floor((done.length - 1) / 2)]
    const secs = (r: NodeResult) => ((r.finishedAt! - started) / 1000).toFixed(1)
    say(`slowest node: ${slowest.node.address} (${slowest.node.target}) done after ${secs(slowest)} s; fastest ${secs(done[0])} s, median ${secs(median)} s`)
  }
  if (failed.length) {
    say(`${failed.length} of ${results.length} nodes failed:`)
    for (const r of failed) say(`  ${r.node.address} (${r.node.target}): ${r.error}`)
    return 1
  }
  say(`all ${results.length} nodes hold ${name}, every piece verified and flushed`)
  return 0
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`orchestrate: ${(err as Error).message}\n`)
    process.exit(err instanceof UsageError ? 2 : 1)
  },
)
