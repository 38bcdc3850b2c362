/**
 * The ezio.EZIO service as TypeScript sees it: message shapes (camelCase
 * fields of proto/ezio.proto) and the nice-grpc definition built from the
 * .proto at run time.
 */
import { loadProto, serviceDefinition, type Unary } from './proto-loader.js'

export type EzioEmpty = Record<string, never>

export interface EzioAddRequest {
  torrent: Buffer
  savePath: string
  seedingMode: boolean
  maxUploads: number
  maxConnections: number
  sequentialDownload: boolean
}

export interface EzioAddResponse {
  result: boolean
}

export interface EzioUpdateRequest {
  hashes: string[]
}

export interface EzioTorrent {
  hash: string
  name: string
  progress: number
  downloadRate: number
  uploadRate: number
  activeTime: number
  isFinished: boolean
  numPeers: number
  state: number
  totalDone: number
  total: number
  numPieces: number
  finishedTime: number
  seedingTime: number
  totalPayloadDownload: number
  totalPayloadUpload: number
  isPaused: boolean
  savePath: string
  lastUpload: number
  lastDownload: number
}

export interface EzioUpdateStatus {
  hashes: string[]
  torrents: Record<string, EzioTorrent>
}

export interface EzioHashRequest {
  hash: string
}

export interface EzioVersionResponse {
  version: string
}

export type EzioDefinition = {
  Shutdown: Unary<EzioEmpty, EzioEmpty>
  GetTorrentStatus: Unary<EzioUpdateRequest, EzioUpdateStatus>
  AddTorrent: Unary<EzioAddRequest, EzioAddResponse>
  PauseTorrent: Unary<EzioHashRequest, EzioEmpty>
  ResumeTorrent: Unary<EzioHashRequest, EzioEmpty>
  GetVersion: Unary<EzioEmpty, EzioVersionResponse>
}

/** `state` codes as EZIO clients read them (libtorrent's torrent_status::state_t). */
export const EzioState = {
  checkingFiles: 1,
  downloadingMetadata: 2,
  downloading: 3,
  finished: 4,
  seeding: 5,
  checkingResumeData: 7,
} as const

export const EzioService: EzioDefinition = serviceDefinition<EzioDefinition>(loadProto('ezio.proto'), 'ezio.EZIO', [
  'Shutdown',
  'GetTorrentStatus',
  'AddTorrent',
  'PauseTorrent',
  'ResumeTorrent',
  'GetVersion',
])
