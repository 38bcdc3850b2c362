/**
 * What a torrent's status means for whoever waits on it, decided once for
 * every surface (deploy's exit, the daemon's then-actions, ezio.EZIO,
 * blockswarm.v1, the CLI):
 * - complete: the whole torrent is on the target (verified, written, gaps
 *   zeroed where required, flushed, re-checked); see TorrentStatus.complete.
 * - succeeded: complete and not failed since; what "deployed" means.
 * - ETA: seconds until every byte is in at the current rate.
 */
import type { TorrentStatus } from '../swarm/status.js'

/** Bytes done, the size and the rate: what an ETA needs (a TorrentStatus or a wire TorrentInfo). */
export interface EtaInput {
  readonly total: number
  readonly totalDone: number
  readonly downloadRate: number
}

/** The deploy succeeded: the torrent is on the disk and nothing failed since. */
export function deploySucceeded(s: Pick<TorrentStatus, 'complete' | 'state'>): boolean {
  return s.complete && s.state !== 'error'
}

/** Seconds until every byte is in at the current rate; null when there is nothing left or no rate. */
export function etaSeconds(s: EtaInput): number | null {
  const left = s.total - s.totalDone
  return left > 0 && s.downloadRate > 0 ? Math.ceil(left / s.downloadRate) : null
}
