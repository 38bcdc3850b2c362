/**
 * ezio.EZIO over a Session: the wire behaviour Clonezilla-era clients
 * expect, without the incumbent's weaknesses (a bad save_path is an error
 * reply, the hashes filter is honoured, total stays the size while seeding).
 *
 * It forgives what EZIO forgave, because existing scripts rely on it
 * (blockswarm.v1 stays strict):
 * - GetTorrentStatus never fails on a well-formed request: unknown hashes are
 *   absent from the answer, entries that are not info-hashes are ignored, and
 *   a filter with no valid entry left means every torrent (EZIO ignored the
 *   filter; its own client sends one entry per character of --hash).
 * - AddTorrent of a torrent already here on the same save_path succeeds
 *   (nothing is done); on another save_path it is an error naming both.
 * - PauseTorrent / ResumeTorrent of a torrent not here succeed as no-ops
 *   (logged), as EZIO's did.
 * Real errors keep their precise codes (a bad save_path is FAILED_PRECONDITION).
 */
import { realpath } from 'node:fs/promises'
import type { ServiceImplementation } from 'nice-grpc'
import { ServerError, Status } from 'nice-grpc-common'
import type { TorrentStatus } from '../swarm/status.js'
import { isInfoHash } from '../torrent/metainfo.js'
import { VERSION } from '../version.js'
import type { ControlContext } from './control-context.js'
import type { EzioDefinition } from './ezio-wire.js'
import { targetArg, torrentArg } from './requests.js'
import { toEzioTorrent } from './status-mapping.js'

/** The torrent with this hash, or NOT_FOUND naming it (blockswarm.v1's strict lookup). */
export function findTorrent(ctx: ControlContext, hash: string): TorrentStatus {
  const s = ctx.session.get(hash)
  if (!s) throw new ServerError(Status.NOT_FOUND, `no torrent ${hash} in this daemon (it has ${ctx.session.status().length})`)
  return s
}

/** The info-hashes among a filter's entries (case folded, duplicates dropped, order kept); the rest is ignored. */
export function validHashes(entries: readonly string[]): string[] {
  return [...new Set(entries.map((e) => e.trim().toLowerCase()).filter(isInfoHash))]
}

/** Two paths name the same target: equal as given, or once symlinks are resolved. */
async function sameTarget(a: string, b: string): Promise<boolean> {
  if (a === b) return true
  const real = (p: string) => realpath(p).catch(() => p)
  return (await real(a)) === (await real(b))
}

export function ezioImplementation(ctx: ControlContext): ServiceImplementation<EzioDefinition> {
  const { session } = ctx

  /** A second add of a torrent already here: nothing to do on the same save_path, an error naming both paths on another. */
  const addAgain = async (existing: TorrentStatus, savePath: string): Promise<{ result: boolean }> => {
    if (!(await sameTarget(existing.target, savePath))) {
      throw new ServerError(
        Status.ALREADY_EXISTS,
        `torrent ${existing.infoHash} (${existing.name}) is already in this daemon with save_path ${existing.target}; ` +
          `this request gives save_path ${savePath}: remove it first to move it (blockswarm remove ${existing.infoHash})`,
      )
    }
    ctx.log?.info({ infoHash: existing.infoHash, torrent: existing.name, target: existing.target }, 'AddTorrent of a torrent already here on the same save_path: nothing to do')
    return { result: true }
  }

  /** The torrent a Pause/Resume names, or undefined (logged) when there is none: EZIO's no-op. */
  const forgivingLookup = (method: string, hash: string): string | undefined => {
    const h = hash.trim().toLowerCase()
    if (isInfoHash(h) && session.get(h)) return h
    const why = isInfoHash(h) ? 'no such torrent in this daemon' : 'not an info-hash'
    ctx.log?.info({ method, hash, why }, `${method} of a torrent not in this daemon: nothing to do (EZIO forgives it)`)
    return undefined
  }

  return {
    async AddTorrent(req) {
      const torrent = torrentArg(req.torrent, 'torrent')
      const target = targetArg(req.savePath, 'save_path')
      const existing = session.get(torrent.infoHash)
      if (existing) return addAgain(existing, target)
      try {
        await session.add(torrent, {
          target,
          seedingMode: req.seedingMode,
          maxUploads: req.maxUploads > 0 ? req.maxUploads : undefined,
          maxConnections: req.maxConnections > 0 ? req.maxConnections : undefined,
          sequential: req.sequentialDownload,
        })
      } catch (err) {
        // the same torrent added by a call that ran at the same time
        const raced = (err as { code?: string }).code === 'ALREADY_EXISTS' ? session.get(torrent.infoHash) : undefined
        if (raced) return addAgain(raced, target)
        throw err
      }
      return { result: true }
    },

    async GetTorrentStatus(req) {
      const wanted = validHashes(req.hashes)
      const list = wanted.length ? wanted.map((h) => session.get(h)).filter((s): s is TorrentStatus => s !== undefined) : session.status()
      const now = Date.now()
      const torrents: Record<string, ReturnType<typeof toEzioTorrent>> = {}
      for (const s of list) torrents[s.infoHash] = toEzioTorrent(s, now)
      return { hashes: list.map((s) => s.infoHash), torrents }
    },

    async PauseTorrent(req) {
      const hash = forgivingLookup('PauseTorrent', req.hash)
      if (hash) session.pause(hash)
      return {}
    },

    async ResumeTorrent(req) {
      const hash = forgivingLookup('ResumeTorrent', req.hash)
      if (hash) session.resume(hash)
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
