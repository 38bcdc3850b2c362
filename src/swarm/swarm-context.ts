/**
 * What a session shares with each of its torrents' swarms: identity, the
 * listen port, and the session-wide services (memory budget, upload limit,
 * hashing, read cache), plus the peer rules.
 */
import type { Logger } from 'pino'
import type { MemoryBudget } from '../services/memory-budget.js'
import type { PeerFilter } from './peer-filter.js'
import type { PieceVerifier } from '../services/piece-verifier.js'
import type { TokenBucket } from '../services/rate-limit.js'
import type { ReadCache } from '../services/read-cache.js'

export interface SwarmContext {
  readonly peerId: Buffer
  /** The session's BitTorrent listen port (announced to trackers). */
  readonly port: () => number
  /** Local address for outgoing connections (the --bind address). */
  readonly bind?: string
  readonly budget: MemoryBudget
  readonly uploadLimit: TokenBucket
  readonly verifier: PieceVerifier
  readonly readCache: ReadCache
  readonly log: Logger
  /** Networks peers may be in (--allow-peers); absent: any. */
  readonly allowPeers?: PeerFilter
  /** Milliseconds a snubbed peer has to send a requested block before it is dropped (default REQUEST_TIMEOUT_MS); web seeds: the stall timeout. */
  readonly requestTimeout?: number
  /** Milliseconds without a requested block before a peer counts as stalled and is snubbed (default STALL_TIMEOUT_MS; at most requestTimeout). */
  readonly peerStallTimeout?: number
}
