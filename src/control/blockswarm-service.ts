/**
 * blockswarm.v1.Blockswarm over a Session: adding with extras, listing,
 * per-torrent detail, removal, a throttled watch stream, the done policy and
 * daemon facts.
 */
import type { ServiceImplementation } from 'nice-grpc'
import { ServerError, Status } from 'nice-grpc-common'
import { DEFAULT_CHOKING, DEFAULT_MAX_CONNECTIONS, DEFAULT_MEMORY, effectiveMaxUploads, type DonePolicy as SessionDonePolicy } from '../session/session.js'
import type { TorrentStatus } from '../swarm/status.js'
import { VERSION } from '../version.js'
import type { DonePolicy, TorrentInfo, BlockswarmDefinition } from './blockswarm-wire.js'
import type { ControlContext } from './control-context.js'
import { findTorrent } from './ezio-service.js'
import { infoHashArg, infoHashList, targetArg, torrentArg, webSeedUrls } from './requests.js'
import { toTorrentInfo } from './status-mapping.js'

const DEFAULT_WATCH_INTERVAL_MS = 500
const MIN_WATCH_INTERVAL_MS = 50
/** A watch re-reads its torrents at least this often, so rates that fall to 0 without an event show. */
const WATCH_REFRESH_MS = 2000

function policyArg(p: DonePolicy, field: string): DonePolicy {
  if (!Number.isFinite(p.seedRatio) || p.seedRatio < 0) throw new ServerError(Status.INVALID_ARGUMENT, `${field}.seed_ratio ${p.seedRatio} must be >= 0`)
  return p
}

function wirePolicy(p: SessionDonePolicy): DonePolicy {
  return { seedRatio: p.seedRatio ?? 0, seedIdleSeconds: p.seedIdle ?? 0 }
}

/**
 * Wake-ups for watch streams: one listener on the Session for all of them
 * (not one per stream, which would pile up listeners).
 */
function changeWaiters(ctx: ControlContext) {
  const waiters = new Set<() => void>()
  const wakeAll = () => {
    for (const w of [...waiters]) w()
  }
  ctx.session.on('change', wakeAll).on('removed', wakeAll)
  ctx.closing.addEventListener('abort', () => ctx.session.off('change', wakeAll).off('removed', wakeAll), { once: true })

  /** Resolves when a signal aborts, after `ms`, or (onChange) when a torrent changes or goes. */
  return function nextWake(signals: AbortSignal[], ms: number, onChange: boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        for (const s of signals) s.removeEventListener('abort', done)
        waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      for (const s of signals) s.addEventListener('abort', done, { once: true })
      if (onChange) waiters.add(done)
    })
  }
}

export function blockswarmImplementation(ctx: ControlContext): ServiceImplementation<BlockswarmDefinition> {
  const { session } = ctx
  const nextWake = changeWaiters(ctx)
  const statuses = (hashes: string[]): TorrentStatus[] => (hashes.length ? hashes.map((h) => findTorrent(ctx, h)) : session.status())

  return {
    async AddTorrent(req) {
      const torrent = torrentArg(req.torrent, 'torrent')
      const target = targetArg(req.target, 'target')
      const policy = req.donePolicy ? policyArg(req.donePolicy, 'done_policy') : undefined
      const webSeeds = webSeedUrls(req.webSeeds, 'web_seeds')
      const webSeedImages = webSeedUrls(req.webSeedImages, 'web_seed_images')
      const status = await session.add(torrent, {
        target,
        seedingMode: req.seedingMode,
        maxUploads: req.maxUploads > 0 ? req.maxUploads : undefined,
        maxConnections: req.maxConnections > 0 ? req.maxConnections : undefined,
        sequential: req.sequential,
        force: req.force,
        peers: req.peers,
        seedRatio: policy?.seedRatio || undefined,
        seedIdle: policy?.seedIdleSeconds || undefined,
        webSeeds,
        webSeedImages,
        skipCheck: req.skipCheck,
      })
      return toTorrentInfo(status)
    },

    async ListTorrents(req) {
      return { torrents: statuses(infoHashList(req.infoHashes, 'info_hashes')).map((s) => toTorrentInfo(s)) }
    },

    async GetTorrent(req) {
      return toTorrentInfo(findTorrent(ctx, infoHashArg(req.infoHash, 'info_hash')), { peers: true })
    },

    async RemoveTorrent(req) {
      await session.remove(findTorrent(ctx, infoHashArg(req.infoHash, 'info_hash')).infoHash)
      return {}
    },

    async *WatchTorrents(req, call) {
      const filter = infoHashList(req.infoHashes, 'info_hashes')
      for (const h of filter) findTorrent(ctx, h)
      const interval = req.intervalMs > 0 ? Math.max(req.intervalMs, MIN_WATCH_INTERVAL_MS) : DEFAULT_WATCH_INTERVAL_MS
      const signals = [call.signal, ctx.closing]
      const sent = new Map<string, string>()
      const changes = (): { torrents: TorrentInfo[]; removed: string[] } => {
        const now = filter.length ? filter.map((h) => session.get(h)).filter((s): s is TorrentStatus => s !== undefined) : session.status()
        const torrents: TorrentInfo[] = []
        const seen = new Set<string>()
        for (const s of now) {
          seen.add(s.infoHash)
          const info = toTorrentInfo(s)
          const key = JSON.stringify(info)
          if (sent.get(s.infoHash) !== key) {
            sent.set(s.infoHash, key)
            torrents.push(info)
          }
        }
        const removed = [...sent.keys()].filter((h) => !seen.has(h))
        for (const h of removed) sent.delete(h)
        return { torrents, removed }
      }
      let first = true
      while (!call.signal.aborted && !ctx.closing.aborted) {
        const c = changes()
        if (first || c.torrents.length || c.removed.length) yield c
        first = false
        await nextWake(signals, interval, false)
        await nextWake(signals, Math.max(0, WATCH_REFRESH_MS - interval), true)
      }
      // the daemon is shutting down (--exit-when-done, Shutdown, a signal): the watcher gets what changed since the
      // last update before the stream ends, so a torrent that finished within the interval is seen finished
      if (!call.signal.aborted) {
        const c = changes()
        if (c.torrents.length || c.removed.length) yield c
      }
    },

    async SetDonePolicy(req) {
      const policy = policyArg(req.policy ?? { seedRatio: 0, seedIdleSeconds: 0 }, 'policy')
      const hash = req.infoHash === '' ? undefined : findTorrent(ctx, infoHashArg(req.infoHash, 'info_hash')).infoHash
      session.setDonePolicy(hash, { seedRatio: policy.seedRatio || undefined, seedIdle: policy.seedIdleSeconds || undefined })
      return {}
    },

    async GetDaemonInfo() {
      const f = ctx.facts
      return {
        version: VERSION,
        listen: ctx.addresses(),
        btPort: session.port,
        maxUploads: f.maxUploads ?? effectiveMaxUploads(DEFAULT_CHOKING, undefined, f.maxConnections ?? DEFAULT_MAX_CONNECTIONS),
        maxConnections: f.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
        memory: f.memory ?? DEFAULT_MEMORY,
        uploadRateLimit: f.uploadRate ?? 0,
        donePolicy: wirePolicy(session.donePolicy()),
        pid: process.pid,
        startedAt: ctx.startedAt,
        exitWhenDone: f.exitWhenDone ?? false,
        thenAction: f.thenAction ?? 'exit',
      }
    },
  }
}
