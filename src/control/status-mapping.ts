/**
 * A Session's TorrentStatus in the two wire shapes: EZIO's `Torrent` (what
 * Clonezilla-era clients read, libtorrent's conventions) and blockswarm's
 * `TorrentInfo`. Pure functions; `now` is passed in (unix ms).
 */
import type { TorrentStatus } from '../swarm/status.js'
import type { TorrentInfo, WireState } from './blockswarm-wire.js'
import { type EzioTorrent, EzioState } from './ezio-wire.js'

const seconds = (ms: number): number => Math.max(0, Math.floor(ms / 1000))

/**
 * EZIO's "finished" is libtorrent's: is_finished / progress 1 / state 4-5.
 * An orchestrator may power the node off the moment it reads them, so they
 * mean complete (on the disk: zeroed, flushed, re-checked), never merely
 * "every piece verified". Until then (state 'finishing' included) an EZIO
 * client sees a torrent still downloading, its counts held just below the end.
 */
function ezioCounts(s: TorrentStatus): { progress: number; totalDone: number; numPieces: number } {
  if (s.complete) return { progress: 1, totalDone: s.total, numPieces: s.pieceCount }
  return {
    progress: Math.min(s.progress, s.total > 0 ? (s.total - 1) / s.total : 0),
    totalDone: Math.min(s.totalDone, Math.max(0, s.total - 1)),
    numPieces: Math.min(s.piecesDone, Math.max(0, s.pieceCount - 1)),
  }
}

/**
 * EZIO `state`. A paused torrent keeps the code of what it was doing (EZIO
 * clients read pause from `is_paused`); when the Session only says "paused"
 * or "error", a complete torrent reads as seeding, any other as downloading.
 */
export function ezioState(s: TorrentStatus): number {
  switch (s.state) {
    case 'checking':
      return EzioState.checkingFiles
    case 'downloading':
    case 'finishing':
      return EzioState.downloading
    case 'seeding':
      return EzioState.seeding
    case 'finished':
      return EzioState.finished
    case 'paused':
    case 'error':
      return s.complete ? EzioState.seeding : EzioState.downloading
  }
}

/** "Seconds since" for EZIO's last_upload/last_download: -1 when it never happened. */
function secondsSince(at: number | undefined, now: number): number {
  return at === undefined || at <= 0 ? -1 : seconds(now - at)
}

export function toEzioTorrent(s: TorrentStatus, now: number): EzioTorrent {
  const finishedFor = s.complete && s.finishedAt ? seconds(now - s.finishedAt) : 0
  const counts = ezioCounts(s)
  return {
    hash: s.infoHash,
    name: s.name,
    progress: counts.progress,
    downloadRate: Math.round(s.downloadRate),
    uploadRate: Math.round(s.uploadRate),
    activeTime: seconds(now - s.startedAt),
    isFinished: s.complete,
    numPeers: s.peers,
    state: ezioState(s),
    totalDone: counts.totalDone,
    total: s.total,
    numPieces: counts.numPieces,
    finishedTime: finishedFor,
    seedingTime: finishedFor,
    totalPayloadDownload: s.totalDownloaded,
    totalPayloadUpload: s.totalUploaded,
    // A torrent done by the daemon's policy has stopped seeding, as libtorrent pauses one at its share limit.
    isPaused: s.paused || s.done,
    savePath: s.target,
    lastUpload: secondsSince(s.lastUpload, now),
    lastDownload: secondsSince(s.lastDownload, now),
  }
}

/** The Session's state as it is; `paused` travels in its own field (a done torrent is FINISHED and paused). */
function wireState(s: TorrentStatus): WireState {
  switch (s.state) {
    case 'checking':
      return 'TORRENT_STATE_CHECKING'
    case 'downloading':
      return 'TORRENT_STATE_DOWNLOADING'
    case 'finishing':
      return 'TORRENT_STATE_FINISHING'
    case 'seeding':
      return 'TORRENT_STATE_SEEDING'
    case 'finished':
      return 'TORRENT_STATE_FINISHED'
    case 'paused':
      return 'TORRENT_STATE_PAUSED'
    case 'error':
      return 'TORRENT_STATE_ERROR'
  }
}

/** blockswarm's TorrentInfo; the peer list only when asked (GetTorrent). */
export function toTorrentInfo(s: TorrentStatus, opts: { peers?: boolean } = {}): TorrentInfo {
  return {
    infoHash: s.infoHash,
    name: s.name,
    target: s.target,
    state: wireState(s),
    paused: s.paused,
    done: s.done,
    error: s.error ?? '',
    progress: s.progress,
    total: s.total,
    totalDone: s.totalDone,
    piecesDone: s.piecesDone,
    pieceCount: s.pieceCount,
    downloadRate: Math.round(s.downloadRate),
    uploadRate: Math.round(s.uploadRate),
    totalDownloaded: s.totalDownloaded,
    totalUploaded: s.totalUploaded,
    numPeers: s.peers,
    numSeeds: s.seeds,
    startedAt: s.startedAt,
    finishedAt: s.finishedAt ?? 0,
    lastUpload: s.lastUpload ?? 0,
    lastDownload: s.lastDownload ?? 0,
    checkRate: Math.round(s.checkRate ?? 0),
    peers: opts.peers
      ? s.peerList.map((p) => ({
          address: p.address,
          peerId: p.peerId,
          client: p.client ?? '',
          downloadRate: Math.round(p.downloadRate),
          uploadRate: Math.round(p.uploadRate),
          isSeed: p.isSeed,
          choked: p.choked,
          interested: p.interested,
        }))
      : [],
    bans: s.bans.map((b) => ({ peer: b.peer, reason: b.reason })),
    doneReason: s.doneReason ?? '',
    totalReused: s.totalReused,
    complete: s.complete,
    webSeeds: s.webSeeds.map((w) => ({
      url: w.url,
      kind: w.kind,
      state: w.state,
      downloadRate: Math.round(w.downloadRate),
      totalDownloaded: w.totalDownloaded,
      spoiledPieces: w.spoiled,
      faults: w.failures,
      lastError: w.lastError ?? '',
    })),
    totalFromWebSeeds: s.totalFromWebSeeds,
  }
}
