/**
 * The blockswarm.v1.Blockswarm service as TypeScript sees it: message shapes
 * (camelCase fields of proto/blockswarm.proto) and the nice-grpc definition
 * built from the .proto at run time.
 */
import { loadProto, type ServerStream, serviceDefinition, type Unary } from './proto-loader.js'

export type WireState =
  | 'TORRENT_STATE_UNSPECIFIED'
  | 'TORRENT_STATE_CHECKING'
  | 'TORRENT_STATE_DOWNLOADING'
  | 'TORRENT_STATE_SEEDING'
  | 'TORRENT_STATE_FINISHED'
  | 'TORRENT_STATE_PAUSED'
  | 'TORRENT_STATE_ERROR'
  | 'TORRENT_STATE_FINISHING'

export interface DonePolicy {
  seedRatio: number
  seedIdleSeconds: number
}

export interface WirePeer {
  address: string
  peerId: string
  client: string
  downloadRate: number
  uploadRate: number
  isSeed: boolean
  choked: boolean
  interested: boolean
}

/** An HTTP source of the torrent (proto WebSeed); kind "extents" or "image", state "active", "idle" or "backoff". */
export interface WireWebSeed {
  url: string
  kind: string
  state: string
  downloadRate: number
  totalDownloaded: number
  spoiledPieces: number
  faults: number
  lastError: string
}

export interface TorrentInfo {
  infoHash: string
  name: string
  target: string
  state: WireState
  paused: boolean
  done: boolean
  error: string
  progress: number
  total: number
  totalDone: number
  piecesDone: number
  pieceCount: number
  downloadRate: number
  uploadRate: number
  totalDownloaded: number
  totalUploaded: number
  numPeers: number
  numSeeds: number
  startedAt: number
  finishedAt: number
  lastUpload: number
  lastDownload: number
  checkRate: number
  peers: WirePeer[]
  bans: { peer: string; reason: string }[]
  doneReason: string
  totalReused: number
  complete: boolean
  webSeeds: WireWebSeed[]
  totalFromWebSeeds: number
}

export interface AddTorrentRequest {
  torrent: Buffer
  target: string
  seedingMode: boolean
  maxUploads: number
  maxConnections: number
  sequential: boolean
  force: boolean
  peers: string[]
  /** null when the request did not set one. */
  donePolicy: DonePolicy | null
  webSeeds: string[]
  webSeedImages: string[]
  /** No resume check: every piece is downloaded (deploy --skip-check). */
  skipCheck: boolean
}

export interface HashesRequest {
  infoHashes: string[]
}

export interface HashRequest {
  infoHash: string
}

export interface WatchTorrentsRequest {
  infoHashes: string[]
  intervalMs: number
}

export interface WatchTorrentsResponse {
  torrents: TorrentInfo[]
  removed: string[]
}

export interface SetDonePolicyRequest {
  infoHash: string
  policy: DonePolicy | null
}

export interface DaemonInfo {
  version: string
  listen: string[]
  btPort: number
  maxUploads: number
  maxConnections: number
  memory: number
  uploadRateLimit: number
  donePolicy: DonePolicy | null
  pid: number
  startedAt: number
  exitWhenDone: boolean
  thenAction: string
}

type Empty = Record<string, never>

export type BlockswarmDefinition = {
  AddTorrent: Unary<AddTorrentRequest, TorrentInfo>
  ListTorrents: Unary<HashesRequest, { torrents: TorrentInfo[] }>
  GetTorrent: Unary<HashRequest, TorrentInfo>
  RemoveTorrent: Unary<HashRequest, Empty>
  WatchTorrents: ServerStream<WatchTorrentsRequest, WatchTorrentsResponse>
  SetDonePolicy: Unary<SetDonePolicyRequest, Empty>
  GetDaemonInfo: Unary<Empty, DaemonInfo>
}

export const BlockswarmService: BlockswarmDefinition = serviceDefinition<BlockswarmDefinition>(
  loadProto('blockswarm.proto'),
  'blockswarm.v1.Blockswarm',
  ['AddTorrent', 'ListTorrents', 'GetTorrent', 'RemoveTorrent', 'WatchTorrents', 'SetDonePolicy', 'GetDaemonInfo'],
)
