/**
 * A Session's torrents as Prometheus metrics (prom-client), read from
 * `session.status()` at each scrape: nothing is counted twice and a removed
 * torrent's series disappear. Every per-torrent series carries the labels
 * `infohash` and `name`. Process metrics (CPU, memory, event loop, GC) come
 * from prom-client's defaults under their usual names.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { Session } from '../session/session.js'
import type { TorrentState, TorrentStatus } from '../swarm/status.js'

const LABELS = ['infohash', 'name'] as const
type Label = (typeof LABELS)[number]

/** Every state a torrent can be in: the state metric has one series per state, 1 for the current one. */
export const TORRENT_STATES: readonly TorrentState[] = ['checking', 'downloading', 'finishing', 'seeding', 'finished', 'paused', 'error']

const labelsOf = (s: TorrentStatus): Record<Label, string> => ({ infohash: s.infoHash, name: s.name })

/** A registry with the session's metrics and the process metrics. */
export function sessionRegistry(session: Session): Registry {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const registers = [registry]

  /** A per-torrent counter whose value is read from the status (a total the swarm keeps). */
  const counter = (name: string, help: string, value: (s: TorrentStatus) => number) =>
    new Counter({
      name,
      help,
      labelNames: LABELS,
      registers,
      collect() {
        this.reset()
        for (const s of session.status()) this.inc(labelsOf(s), value(s))
      },
    })
  const gauge = (name: string, help: string, value: (s: TorrentStatus) => number) =>
    new Gauge({
      name,
      help,
      labelNames: LABELS,
      registers,
      collect() {
        this.reset()
        for (const s of session.status()) this.set(labelsOf(s), value(s))
      },
    })

  counter('blockswarm_torrent_downloaded_bytes_total', 'Payload bytes downloaded (duplicates and failed pieces included)', (s) => s.totalDownloaded)
  counter('blockswarm_torrent_uploaded_bytes_total', 'Payload bytes uploaded', (s) => s.totalUploaded)
  counter('blockswarm_torrent_web_seed_downloaded_bytes_total', 'Payload bytes downloaded from HTTP web seeds and images (part of downloaded_bytes_total)', (s) => s.totalFromWebSeeds)
  counter('blockswarm_torrent_hash_failures_total', 'Pieces that failed their SHA-1 check (each fetched again)', (s) => s.hashFailures)
  counter('blockswarm_torrent_bans_total', 'Peers banned for sending corrupt data', (s) => s.bans.length)
  gauge('blockswarm_torrent_download_rate_bytes_per_second', 'Payload download rate', (s) => s.downloadRate)
  gauge('blockswarm_torrent_upload_rate_bytes_per_second', 'Payload upload rate', (s) => s.uploadRate)
  gauge('blockswarm_torrent_peers', 'Connected peers', (s) => s.peers)
  gauge('blockswarm_torrent_seeds', 'Connected peers that are seeds', (s) => s.seeds)
  gauge('blockswarm_torrent_pieces_done', 'Pieces verified and written to the target', (s) => s.piecesDone)
  gauge('blockswarm_torrent_pieces', 'Pieces in the torrent', (s) => s.pieceCount)
  gauge('blockswarm_torrent_size_bytes', 'Bytes the torrent covers', (s) => s.total)
  gauge('blockswarm_torrent_progress_ratio', 'Bytes done (verified pieces + received blocks of pieces in flight) / size, 0..1', (s) => s.progress)
  gauge('blockswarm_torrent_complete', '1 once the whole torrent is on the target (verified, gaps zeroed, flushed, re-checked): safe to reboot', (s) => (s.complete ? 1 : 0))
  gauge('blockswarm_torrent_done', '1 once the done policy was met (the torrent stopped seeding)', (s) => (s.done ? 1 : 0))
  new Gauge({
    name: 'blockswarm_torrent_state',
    help: `The torrent's state: 1 for the current one of ${TORRENT_STATES.join(', ')}`,
    labelNames: [...LABELS, 'state'],
    registers,
    collect() {
      this.reset()
      for (const s of session.status()) for (const state of TORRENT_STATES) this.set({ ...labelsOf(s), state }, s.state === state ? 1 : 0)
    },
  })
  new Gauge({
    name: 'blockswarm_torrents',
    help: 'Torrents in the session',
    registers,
    collect() {
      this.set(session.status().length)
    },
  })
  new Gauge({
    name: 'blockswarm_upload_limit_bytes_per_second',
    help: 'Session-wide upload limit in force now (slow start included), 0 = none',
    registers,
    collect() {
      this.set(session.uploadLimitNow)
    },
  })
  return registry
}
