/**
 * A swarm's status as plain data (TorrentStatus), from its parts: what the
 * lifecycle says, what the pieces say, what the peers say. Pure.
 */
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { pieceSize } from '../torrent/piece-map.js'
import type { PeerConnection } from './peer-connection.js'
import type { PieceSet } from './piece-set.js'
import type { PeerStatus, TorrentState, TorrentStatus, UnreachablePeer, BanStatus, WebSeedStatus } from './status.js'

/** Verified bytes held: whole pieces, the last one at its own size (what a tracker is told we have). */
export function bytesDone(torrent: ExtentTorrent, have: PieceSet): number {
  const n = have.count
  if (n === 0) return 0
  const last = torrent.pieceCount - 1
  return n * torrent.pieceLength - (have.has(last) ? torrent.pieceLength - pieceSize(torrent.layout, last) : 0)
}

export function peerStatus(p: PeerConnection): PeerStatus {
  return {
    address: p.address,
    peerId: p.peerId ?? '',
    client: p.client,
    downloadRate: p.download.rate(),
    uploadRate: p.upload.rate(),
    isSeed: p.isSeed,
    choked: p.amChoking,
    interested: p.peerInterested,
    direction: p.direction,
  }
}

/** The parts of a status that are not the pieces' or the peers' (documented on TorrentStatus). */
export type StatusFacts = Pick<
  TorrentStatus,
  | 'target'
  | 'state'
  | 'complete'
  | 'paused'
  | 'done'
  | 'doneReason'
  | 'error'
  | 'lastProgress'
  | 'trackerError'
  | 'unreachable'
  | 'downloadRate'
  | 'uploadRate'
  | 'totalDownloaded'
  | 'totalUploaded'
  | 'totalReused'
  | 'startedAt'
  | 'finishedAt'
  | 'lastUpload'
  | 'lastDownload'
  | 'checkRate'
  | 'totalChecked'
  | 'checkPending'
  | 'firstDownload'
  | 'bans'
  | 'hashFailures'
  | 'webSeeds'
  | 'totalFromWebSeeds'
> & {
  /** Bytes received of pieces not verified yet (PieceDownloader.bytesInFlight). */
  readonly bytesInFlight: number
}

export function torrentStatus(torrent: ExtentTorrent, have: PieceSet, peers: Iterable<PeerConnection>, f: StatusFacts): TorrentStatus {
  const peerList = [...peers].map(peerStatus)
  // libtorrent's convention, which EZIO clients show: verified pieces plus the received blocks of pieces in flight
  const done = Math.min(torrent.totalLength, bytesDone(torrent, have) + f.bytesInFlight)
  return {
    infoHash: torrent.infoHash,
    name: torrent.name,
    target: f.target,
    state: f.state,
    error: f.error,
    lastProgress: f.lastProgress,
    trackerError: f.trackerError,
    unreachable: f.unreachable,
    progress: torrent.totalLength > 0 ? done / torrent.totalLength : 1,
    total: torrent.totalLength,
    totalDone: done,
    piecesDone: have.count,
    pieceCount: torrent.pieceCount,
    downloadRate: f.downloadRate,
    uploadRate: f.uploadRate,
    totalDownloaded: f.totalDownloaded,
    totalUploaded: f.totalUploaded,
    totalReused: f.totalReused,
    peers: peerList.length,
    seeds: peerList.filter((p) => p.isSeed).length,
    startedAt: f.startedAt,
    complete: f.complete,
    finishedAt: f.finishedAt,
    lastUpload: f.lastUpload,
    lastDownload: f.lastDownload,
    checkRate: f.checkRate,
    totalChecked: f.totalChecked,
    checkPending: f.checkPending,
    firstDownload: f.firstDownload,
    paused: f.paused,
    done: f.done,
    doneReason: f.doneReason,
    bans: f.bans,
    hashFailures: f.hashFailures,
    peerList,
    webSeeds: f.webSeeds,
    totalFromWebSeeds: f.totalFromWebSeeds,
  }
}
