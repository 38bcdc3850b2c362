/**
 * `blockswarm seed TORRENT SOURCE`: seed a golden image (device, image file or
 * extents directory) in seeding mode, trusted without hashing, until
 * stopped; optionally with an HTTP tracker in the same process.
 */
import { lookup } from 'node:dns/promises'
import { networkInterfaces } from 'node:os'
import type { Command } from 'commander'
import type { Logger } from 'pino'
import { targetInfo } from '../storage/device-size.js'
import { describeUser } from '../storage/device-store.js'
import { changingSourceUsers, stableSourceFixes } from '../storage/source-users.js'
import { SEEDER_READ_CACHE_SHARE, Session } from '../session/session.js'
import type { TorrentStatus } from '../swarm/status.js'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import type { AnnounceEmitter } from '../dashboard/fleet-feed.js'
import { loadTorrentFile } from './torrent-file.js'
import { addSwarmOptions, makeLogger, sessionOptions, type SwarmFlags } from './options.js'
import { onStopSignal } from './shutdown.js'
import { addDashboardOption, addDashboardSecurityOptions, checkDashboardFlag, type Dashboard, type DashboardFlags, startDashboard } from './dashboard-options.js'
import { type ControlSecurityFlags, controlSecurityFrom } from './security-options.js'

interface SeedFlags extends SwarmFlags, DashboardFlags, ControlSecurityFlags {
  trackerEmbedded?: string | true
  trackerInterval: string
  force?: boolean
}

export const DEFAULT_TRACKER_PORT = 6969

/**
 * An HTTP tracker (bittorrent-tracker's Server, loaded only for
 * --tracker-embedded) for this torrent only, on
 * `host`:`port`; without `host` on every interface (like the peer port), so
 * other machines reach it. The returned URL is the one this seed announces to.
 */
async function startTracker(torrent: ExtentTorrent, host: string | undefined, port: number, intervalMs: number, log: Logger): Promise<{ url: string; announces: AnnounceEmitter; close: () => Promise<void> }> {
  const { default: Server } = await import('bittorrent-tracker/server')
  const server = new Server({
    http: true,
    udp: false,
    ws: false,
    stats: false,
    interval: intervalMs,
    filter: (infoHash, _params, cb) =>
      cb(infoHash === torrent.infoHash ? null : new Error(`this tracker only serves ${torrent.name} (${torrent.infoHash})`)),
  })
  server.on('warning', (err: Error) => log.debug({ err: err.message }, 'tracker warning'))
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot start the embedded tracker on ${host ?? 'all interfaces'}, port ${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : (err.code ?? err.message)}`)),
    )
    server.listen(port, host, () => resolve())
  })
  server.on('error', (err: Error) => log.error({ err: err.message }, 'embedded tracker error'))
  const addr = server.http?.address()
  const actual = typeof addr === 'object' && addr ? addr.port : port
  // on every interface: announce to it over loopback
  const local = host === undefined || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host
  const shown = local.includes(':') ? `[${local}]` : local
  return { url: `http://${shown}:${actual}/announce`, announces: server, close: () => new Promise((r) => server.close(() => r())) }
}

/**
 * Whether one of the torrent's own trackers is this embedded tracker (its
 * port, at an address of this machine that the tracker listens on): the seed
 * then announces there only, so the tracker does not hand other machines its
 * loopback address as a peer.
 */
async function namesEmbeddedTracker(trackers: readonly string[], host: string | undefined, port: number): Promise<boolean> {
  const everywhere = host === undefined || host === '0.0.0.0' || host === '::'
  const local = new Set(Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address)))
  for (const t of trackers) {
    let url: URL
    try {
      url = new URL(t)
    } catch {
      continue
    }
    if (url.protocol !== 'http:' || Number(url.port || 80) !== port) continue
    const addresses = await lookup(url.hostname.replace(/^\[|\]$/g, ''), { all: true }).catch(() => [])
    if (addresses.some((a) => (everywhere ? local.has(a.address) : a.address === host))) return true
  }
  return false
}

/** With --force: one loud line on stderr when the source is mounted read-write (or swap), since it is seeded anyway. */
async function warnChangingSource(source: string): Promise<void> {
  const info = await targetInfo(source).catch(() => undefined)
  if (info?.kind !== 'block' || info.devno === undefined) return
  const users = await changingSourceUsers(info.devno)
  if (users.length === 0) return
  process.stderr.write(
    `blockswarm: WARNING: --force: seeding ${source} although ${users.map(describeUser).join('; ')}: this seed may serve changing data, and peers will ban it for bad pieces (${stableSourceFixes(users)})\n`,
  )
}

export function registerSeed(program: Command): void {
  const cmd = program
    .command('seed')
    .description('seed a golden image (device, image file or extents directory) without hashing it, until stopped')
    .argument('<torrent>', '.torrent file')
    .argument('<source>', 'the device, image file or extents directory the torrent was made from')
  addSwarmOptions(cmd)
    .option('--tracker-embedded [port]', `run an HTTP tracker in this process (on --bind or all interfaces, default port ${DEFAULT_TRACKER_PORT}) and announce to it`)
    .option('--tracker-interval <seconds>', 'announce interval the embedded tracker asks of clients', '30')
    .option('--force', 'seed from a device mounted read-write (its content may change while seeded)')
  addDashboardSecurityOptions(addDashboardOption(cmd))
    .action(async (torrentPath: string, source: string, flags: SeedFlags) => {
      const torrent = await loadTorrentFile(torrentPath, 'blockswarm seed TORRENT SOURCE')
      const log = makeLogger(flags.logLevel ?? 'info')
      if (flags.force) await warnChangingSource(source)
      const dashboardSecurity = flags.dashboard === undefined ? undefined : controlSecurityFrom(flags)
      if (flags.dashboard !== undefined) await checkDashboardFlag(flags.dashboard, dashboardSecurity!)
      let tracker: Awaited<ReturnType<typeof startTracker>> | undefined
      if (flags.trackerEmbedded !== undefined) {
        const port = flags.trackerEmbedded === true ? DEFAULT_TRACKER_PORT : Number(flags.trackerEmbedded)
        if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--tracker-embedded ${JSON.stringify(flags.trackerEmbedded)} is not a port`)
        const seconds = Number(flags.trackerInterval)
        if (!Number.isFinite(seconds) || seconds < 1) throw new Error(`--tracker-interval ${JSON.stringify(flags.trackerInterval)} must be at least 1 second`)
        tracker = await startTracker(torrent, flags.bind, port, seconds * 1000, log)
      }
      let session: Session
      try {
        // a seeder downloads nothing: more of the budget for its read cache
        session = await Session.start({ ...sessionOptions(flags, log), readCacheShare: SEEDER_READ_CACHE_SHARE })
      } catch (err) {
        await tracker?.close()
        throw err
      }
      let status: TorrentStatus
      let dashboard: Dashboard | undefined
      try {
        if (flags.metrics !== undefined) await (await import('../metrics/metrics-server.js')).serveSessionMetrics(session, flags.metrics, log)
        status = await session.add(torrent, { target: source, seedingMode: true, force: flags.force, trackers: tracker && !(await namesEmbeddedTracker(torrent.trackers, flags.bind, new URL(tracker.url).port ? Number(new URL(tracker.url).port) : 80)) ? [tracker.url] : [] })
        if (flags.dashboard !== undefined)
          dashboard = await startDashboard(session, flags.dashboard, dashboardSecurity!, { announceInterval: Number(flags.trackerInterval), tracker: tracker?.announces }, log)
      } catch (err) {
        await session.close()
        await tracker?.close()
        throw err
      }
      const lines = [
        `seeding ${torrent.name} from ${source}`,
        `  info-hash   ${torrent.infoHash}`,
        `  peer port   ${session.port}${flags.bind ? ` on ${flags.bind}` : ''}`,
      ]
      if (tracker) lines.push(`  tracker     ${tracker.url} (embedded${flags.bind ? '' : `, listening on all interfaces, port ${new URL(tracker.url).port}`})`)
      for (const t of torrent.trackers) lines.push(`  announce    ${t}`)
      if (dashboard) lines.push(`  dashboard   ${dashboard.url}`)
      lines.push(`opentracker whitelist line (for Debian's opentracker built with the whitelist):`, torrent.infoHash)
      process.stdout.write(lines.join('\n') + '\n')

      const code = await new Promise<number>((resolve) => {
        const statusTimer = setInterval(() => {
          const s = session.get(status.infoHash)
          if (s) log.info({ state: s.state, peers: s.peers, uploadRate: Math.round(s.uploadRate), uploaded: s.totalUploaded, bans: s.bans.length }, 'status')
        }, 30_000)
        const onChange = (s: TorrentStatus) => {
          if (s.state === 'error') {
            process.stderr.write(`blockswarm: seeding ${s.name} stopped: ${s.error}\n`)
            finish(1)
          }
        }
        const finish = (c: number) => {
          clearInterval(statusTimer)
          session.off('change', onChange)
          removeSignals()
          resolve(c)
        }
        session.on('change', onChange)
        const removeSignals = onStopSignal((sig) => {
          log.info({ signal: sig }, 'stopping')
          finish(0)
        })
      })
      await dashboard?.close()
      await session.close()
      await tracker?.close()
      process.exitCode = code
    })
}
