/**
 * ezio.EZIO over a Session: the wire behaviour Clonezilla-era clients
 * expect, without the incumbent's weaknesses (a bad save_path is an error
 * reply, the hashes filter is honoured, total stays the size while seeding).
 */
import { ServerError, type ServiceImplementation, Status } from 'nice-grpc'
import type { TorrentStatus } from '../swarm/status.js'
import { VERSION } from '../version.js'
import type { ControlContext } from './control-context.js'
import type { EzioDefinition } from './ezio-wire.js'
import { infoHashArg, infoHashList, targetArg, torrentArg } from './requests.js'
import { toEzioTorrent } from './status-mapping.js'

/** The torrent with this hash, or NOT_FOUND naming it. */
export function findTorrent(ctx: ControlContext, hash: string): TorrentStatus {
  const s = ctx.session.get(hash)
  if (!s) throw new ServerError(Status.NOT_FOUND, `no torrent ${hash} in this daemon (it has ${ctx.session.status().length})`)
  return s
}

export function ezioImplementation(ctx: ControlContext): ServiceImplementation<EzioDefinition> {
  const { session } = ctx
  return {
    async AddTorrent(req) {
      const torrent = torrentArg(req.torrent, 'torrent')
      const target = targetArg(req.savePath, 'save_path')
      await session.add(torrent, {
        target,
        seedingMode: req.seedingMode,
        maxUploads: req.maxUploads > 0 ? req.maxUploads : undefined,
        maxConnections: req.maxConnections > 0 ? req.maxConnections : undefined,
        sequential: req.sequentialDownload,
      })
      return { result: true }
    },

    async GetTorrentStatus(req) {
      const wanted = infoHashList(req.hashes, 'hashes')
      const list = wanted.length ? wanted.map((h) => findTorrent(ctx, h)) : session.status()
      const now = Date.now()
      const torrents: Record<string, ReturnType<typeof toEzioTorrent>> = {}
      for (const s of list) torrents[s.infoHash] = toEzioTorrent(s, now)
      return { hashes: list.map((s) => s.infoHash), torrents }
    },

    async PauseTorrent(req) {
      await session.pause(findTorrent(ctx, infoHashArg(req.hash, 'hash')).infoHash)
      return {}
    },

    async ResumeTorrent(req) {
      await session.resume(findTorrent(ctx, infoHashArg(req.hash, 'hash')).infoHash)
      return {}
    },

    async GetVersion() {
      return { version: `blockswarm ${VERSION}` }
    },

    async Shutdown() {
      ctx.requestShutdown()
      return {}
    },
  }
}
