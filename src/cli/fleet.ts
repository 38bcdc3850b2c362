/**
 * `blockswarm fleet URL`: the dashboard's table in a terminal (a serial
 * console has no browser). Reads URL's /api/fleet (the page's address, with
 * ?torrent= and ?token= kept), prints the fleet line, one row per node and
 * the piece strip, refreshed every --interval seconds (redrawn in place on a
 * terminal, appended otherwise); --once prints it once, --json the raw JSON.
 */
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { Command } from 'commander'
import { readCertificate, readToken } from '../control/security.js'
import type { FleetSnapshot } from '../dashboard/fleet-model.js'
import { formatBytes } from '../util/size.js'
import { alignColumns, formatDuration, formatRate } from './torrent-view.js'
import { onStopSignal } from './shutdown.js'

interface FleetFlags {
  interval: string
  once?: boolean
  json?: boolean
  tokenFile?: string
  tlsCa?: string
}

/** The /api/fleet URL of a dashboard address ("http://host:port/…", or host:port), its query kept. */
export function fleetApiUrl(text: string): URL {
  const url = new URL(/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`${text} is not an http:// or https:// dashboard address`)
  url.pathname = '/api/fleet'
  return url
}

function fetchJson(url: URL, token: string | undefined, ca: Buffer | undefined): Promise<unknown> {
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, ca, timeout: 10_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`${url.origin}${url.pathname} answered ${res.statusCode}: ${body.trim()}`))
        try {
          resolve(JSON.parse(body))
        } catch {
          reject(new Error(`${url.origin}${url.pathname} did not answer JSON (is it a blockswarm dashboard?)`))
        }
      })
    })
    req.on('timeout', () => req.destroy(new Error(`${url.origin} did not answer within 10 s`)))
    req.on('error', (err: NodeJS.ErrnoException) => reject(new Error(`cannot reach the dashboard ${url.origin}: ${err.code ?? err.message}`)))
    req.end()
  })
}

const percent = (f: number): string => `${(100 * f).toFixed(1)}%`
const seconds = (s: number | null): string => formatDuration(s === null ? null : Math.round(s))

function bar(f: number, width: number): string {
  const full = Math.round(Math.max(0, Math.min(1, f)) * width)
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}]`
}

/** The piece strip in `width` characters: each shows the fewest holders among its pieces (0-9, + for more). */
export function pieceStrip(pieces: readonly number[], width: number): string {
  if (pieces.length === 0) return ''
  const cells = Math.min(width, pieces.length)
  let out = ''
  for (let c = 0; c < cells; c++) {
    const from = Math.floor((c * pieces.length) / cells)
    const to = Math.max(from + 1, Math.floor(((c + 1) * pieces.length) / cells))
    const least = Math.min(...pieces.slice(from, to))
    out += least > 9 ? '+' : String(least)
  }
  return out
}

/** What `fleet` prints for one snapshot. */
export function fleetText(f: FleetSnapshot, width = 80): string {
  const fl = f.fleet
  const b = f.bound
  const states = Object.entries(fl.byState)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`)
    .join(', ')
  const lines = [
    `${f.torrent.name} (${formatBytes(f.torrent.size)}, ${f.torrent.pieceCount} pieces, ${f.torrent.infoHash})`,
    `nodes done ${fl.done}/${fl.nodes}${states ? ` (${states})` : ''}  down ${formatRate(fl.downloadRate)}  up ${formatRate(fl.uploadRate)}  from peers ${fl.fromPeers === null ? '-' : percent(fl.fromPeers)}  ETA ${fl.lastFinish !== null ? 'all done' : seconds(fl.eta)}`,
    `T* ${seconds(b.seconds)} (S ${formatBytes(b.size)}, N ${b.nodes}, C_seed ${b.seederRate ? formatRate(b.seederRate) : '?'} ${b.seederRateFrom}, C ${b.nodeRate ? formatRate(b.nodeRate) : '?'} ${b.nodeRateFrom})  ${fl.lastFinish !== null ? `last finished after ${seconds(fl.lastFinish)}` : `running ${seconds(fl.elapsed)}`}`,
    '',
  ]
  const head = ['ADDRESS', 'PROGRESS', 'STATE', 'DOWN', 'UP', 'SERVED', 'SEEN', 'NOTE']
  const rows = f.nodes.map((n) => [
    n.address,
    `${bar(n.progress, 20)} ${percent(n.progress).padStart(6)}`,
    n.state,
    formatRate(n.downloadRate),
    formatRate(n.uploadRate),
    formatBytes(n.uploaded),
    n.connected ? 'connected' : `${seconds(n.lastSeenAgo)} ago`,
    n.reason ?? '',
  ])
  const strip = pieceStrip(f.pieces, Math.max(10, width - 8))
  return lines.join('\n') + '\n' + alignColumns([head, ...rows]) + `\npieces  ${strip}\n        (each character: the fewest nodes holding a piece there)\n`
}

export function registerFleet(program: Command): void {
  program
    .command('fleet')
    .description('show a dashboard\'s fleet in the terminal: every node, the fleet totals, T*, the piece strip; refreshed')
    .argument('<url>', 'the dashboard\'s address, e.g. http://10.0.0.1:8080/ (seed/daemon --dashboard); ?torrent=HASH picks a torrent')
    .option('--interval <seconds>', 'seconds between refreshes', '2')
    .option('--once', 'print the table once and exit')
    .option('--json', 'print /api/fleet\'s JSON (once) instead of the table')
    .option('--token-file <file>', 'the dashboard\'s token (default: $BLOCKSWARM_TOKEN)')
    .option('--tls-ca <file>', 'trust this PEM CA for an https:// dashboard')
    .action(async (text: string, flags: FleetFlags) => {
      const url = fleetApiUrl(text)
      const token = readToken(flags.tokenFile)
      const ca = flags.tlsCa === undefined ? undefined : readCertificate(flags.tlsCa, '--tls-ca').pem
      const every = Number(flags.interval)
      if (!Number.isFinite(every) || every < 0.2) throw new Error(`--interval ${JSON.stringify(flags.interval)} must be at least 0.2 seconds`)
      if (flags.json || flags.once) {
        const snap = await fetchJson(url, token, ca)
        process.stdout.write(flags.json ? JSON.stringify(snap, null, 2) + '\n' : fleetText(snap as FleetSnapshot, process.stdout.columns ?? 100))
        return
      }
      const tty = process.stdout.isTTY
      let stopped = false
      const removeSignals = onStopSignal(() => (stopped = true))
      try {
        while (!stopped) {
          let text: string
          try {
            text = fleetText((await fetchJson(url, token, ca)) as FleetSnapshot, process.stdout.columns ?? 100)
          } catch (err) {
            text = `blockswarm fleet: ${(err as Error).message} (retrying)\n`
          }
          process.stdout.write(tty ? `\x1b[H\x1b[2J${text}` : `${text}\n`)
          await new Promise((r) => setTimeout(r, every * 1000))
        }
      } finally {
        removeSignals()
      }
    })
}
