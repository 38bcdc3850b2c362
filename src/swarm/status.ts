/**
 * What a session reports about each torrent: plain data (numbers, strings,
 * times as ms since the epoch), the same for the CLI, logs and gRPC.
 */
/**
 * Where a torrent is in its life:
 *   checking → downloading → finishing → seeding → finished (done policy met),
 *   with paused and error from anywhere.
 * - finishing: every piece is verified and written, and the target is being
 *   made final (gaps zeroed where the torrent requires it, fdatasync, the
 *   target re-checked). NOT complete yet: nothing may be rebooted.
 * - complete (TorrentStatus.complete) = finishing succeeded: the bytes are on
 *   the disk. Only then is anything reported finished, on any surface.
 */
export type TorrentState = 'checking' | 'downloading' | 'finishing' | 'seeding' | 'finished' | 'paused' | 'error'

export interface PeerStatus {
  /** "ip:port" (the peer's listen port when known). */
  readonly address: string
  /** 40 hex digits. */
  readonly peerId: string
  readonly client?: string
  /** Payload bytes/s from / to this peer. */
  readonly downloadRate: number
  readonly uploadRate: number
  readonly isSeed: boolean
  /** We choke it (it may not download from us). */
  readonly choked: boolean
  /** It wants data from us. */
  readonly interested: boolean
  readonly direction: 'in' | 'out'
}

export interface UnreachablePeer {
  /** "ip:port" */
  readonly address: string
  /** e.g. "connect ECONNREFUSED 10.0.0.5:6881" */
  readonly error: string
  /** Failed dials in a row. */
  readonly failures: number
}

/** extents: URL/NAME/<offset> files (BEP 19); image: one raw disk image file, read at the extents' offsets. */
export type WebSeedKind = 'extents' | 'image'

export interface WebSeedStatus {
  readonly url: string
  readonly kind: WebSeedKind
  /** active: pieces in flight; idle: nothing to ask it for; backoff: waiting after a fault. */
  readonly state: 'active' | 'idle' | 'backoff'
  /** Payload bytes/s received from it. */
  readonly downloadRate: number
  /** Payload bytes received from it (failed pieces included). */
  readonly totalDownloaded: number
  readonly inFlight: number
  /** Pieces not asked of it again (they failed their hash, or it has not got the file). */
  readonly spoiled: number
  /** Faults in a row; 0 after a good piece. */
  readonly failures: number
  readonly lastError?: string
}

export interface BanStatus {
  readonly peer: string
  readonly reason: string
}

export interface TorrentStatus {
  readonly infoHash: string
  readonly name: string
  readonly target: string
  readonly state: TorrentState
  /** Set when state is 'error': what went wrong and where. */
  readonly error?: string
  /** While an incomplete torrent downloads: when it last made progress (a payload byte came, a piece was verified) or went online. */
  readonly lastProgress?: number
  /** While announcing fails: the tracker, why, how many times in a row, when the next try is. */
  readonly trackerError?: string
  /** Peers whose dials keep failing (retried with backoff), with the last reason. */
  readonly unreachable?: readonly UnreachablePeer[]
  /** totalDone / total, 0..1. */
  readonly progress: number
  /** Bytes the torrent covers (stays the size while seeding). */
  readonly total: number
  /**
   * Bytes done: the verified pieces plus the blocks received of pieces in
   * flight (libtorrent's convention, so it moves with the bytes, not in
   * whole-piece steps). A piece that fails its SHA-1 check counts 0 again.
   */
  readonly totalDone: number
  /** Pieces verified and written to the target. */
  readonly piecesDone: number
  readonly pieceCount: number
  /** Payload bytes/s. */
  readonly downloadRate: number
  readonly uploadRate: number
  /** Payload bytes since the torrent was added (duplicates and failed pieces included). */
  readonly totalDownloaded: number
  readonly totalUploaded: number
  /** Bytes found valid on the target by the resume check (not downloaded). */
  readonly totalReused: number
  /** Connected peers, and how many of them are seeds. */
  readonly peers: number
  readonly seeds: number
  readonly startedAt: number
  /**
   * The whole torrent is on the target: every piece verified and written,
   * gaps zeroed where required, flushed (fdatasync) and the target re-checked.
   * False while 'finishing'. Seeding-mode torrents are complete from the start.
   */
  readonly complete: boolean
  /** When the torrent became complete (set together with `complete`). */
  readonly finishedAt?: number
  readonly lastUpload?: number
  readonly lastDownload?: number
  /** Speed of the resume check, bytes/s (when one ran). */
  readonly checkRate?: number
  /** Bytes the resume check read back from the target (so far). */
  readonly totalChecked: number
  /** Pieces the resume check (running beside the download) has yet to read back; 0 when it is not running. */
  readonly checkPending: number
  /** When the first payload byte arrived (ms since the epoch). */
  readonly firstDownload?: number
  readonly paused: boolean
  /** The done policy was met (the torrent stopped seeding). */
  readonly done: boolean
  /** Why it is done, when it is. */
  readonly doneReason?: string
  readonly bans: readonly BanStatus[]
  /** Pieces that failed their SHA-1 check since the torrent was added (each fetched again). */
  readonly hashFailures: number
  readonly peerList: readonly PeerStatus[]
  /** HTTP sources (BEP 19 web seeds and raw images), with their rate, bytes and last fault. */
  readonly webSeeds: readonly WebSeedStatus[]
  /** Payload bytes received from web seeds (part of totalDownloaded). */
  readonly totalFromWebSeeds: number
}
