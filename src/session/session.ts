/**
 * The Session: blockswarm's core, usable as a library. One BitTorrent
 * listener, one memory budget, one upload limit and one hashing worker shared
 * by any number of torrents, each with its own target. The CLI and the gRPC
 * service are thin layers over it.
 *
 *   const session = await Session.start({ port: 6881 })
 *   await session.add(torrentBytes, { target: '/dev/sdb1' })
 *   session.on('change', (s) => console.log(s.state, s.progress))
 */
import { EventEmitter } from 'node:events'
import { realpath } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import pino, { type Logger } from 'pino'
import { openStore, type OpenStoreOptions } from '../storage/store.js'
import type { PieceStore } from '../storage/types.js'
import { type ExtentTorrent, isInfoHash, parseTorrent } from '../torrent/metainfo.js'
import { makePeerId } from '../swarm/client-name.js'
import type { DonePolicy } from '../swarm/done-policy.js'
import { Listener } from '../services/listener.js'
import { LocalDiscovery } from '../services/local-discovery.js'
import { MemoryBudget } from '../services/memory-budget.js'
import { addressKey, type PeerAddress, parsePeerAddress } from '../swarm/peer-dialer.js'
import { ipBytes, PeerFilter } from '../swarm/peer-filter.js'
import { PieceVerifier } from '../services/piece-verifier.js'
import { TokenBucket } from '../services/rate-limit.js'
import { ReadCache } from '../services/read-cache.js'
import { DEFAULT_SLOW_START, type SlowStart, slowStartCap, tighterLimit } from '../services/slow-start.js'
import { type PeerPieces, type SeedSeen, TorrentSwarm } from '../swarm/torrent-swarm.js'
import { SessionError } from './session-error.js'
import type { ChokingPolicy } from '../swarm/choker.js'
import type { TorrentStatus } from '../swarm/status.js'
import { type WebSeedSpec, webSeedUrlError } from '../swarm/web-seed.js'

export { SessionError } from './session-error.js'
export type { DonePolicy } from '../swarm/done-policy.js'

export const DEFAULT_PORT = 6881
export const DEFAULT_MEMORY = 64 * 1024 * 1024
/** Unchoke slots per torrent under the 'tit-for-tat' policy; under 'fleet' (the default) every connected peer may be unchoked unless a cap is set. */
export const DEFAULT_MAX_UPLOADS = 3
export const DEFAULT_CHOKING: ChokingPolicy = 'fleet'
/**
 * Peer connections per torrent. EZIO uses 5; for a deploy to hundreds of
 * nodes 25 gives each node enough partners for piece diversity (with 3-4
 * unchoke slots) while a seeder's or a switch's connection count stays small
 * (500 nodes × 25 / 2 ≈ 6 000 connections in the whole swarm).
 */
export const DEFAULT_MAX_CONNECTIONS = 25

/** The unchoke slots a torrent gets: the cap given, else every connection under 'fleet' and DEFAULT_MAX_UPLOADS under 'tit-for-tat'. */
export function effectiveMaxUploads(policy: ChokingPolicy, maxUploads: number | undefined, maxConnections: number): number {
  return maxUploads ?? (policy === 'fleet' ? maxConnections : DEFAULT_MAX_UPLOADS)
}
/** Part of the memory budget kept for the upload read cache, at most. */
const READ_CACHE_MAX = 16 * 1024 * 1024
/**
 * The read cache's share of the memory budget: an eighth where pieces are
 * downloaded (their buffers need the rest: a deploy of 16 MiB pieces keeps
 * three in flight in 64 MiB either way, and a node asked by 31 peers peaks
 * 5 MiB lower: 133 → 128 MiB); a quarter for `seed`, which downloads nothing.
 */
export const READ_CACHE_SHARE = 1 / 8
export const SEEDER_READ_CACHE_SHARE = 1 / 4

/**
 * One hashing worker when there is a second core. Measured on a 2-core
 * machine (16 MiB pieces, 512 MiB over loopback, 5 alternating runs): the
 * same throughput either way (206 vs 207 MiB/s seeder→leecher on one box;
 * ~190-280 MiB/s from a libtorrent seeder), but the worker keeps the 9 ms a
 * piece takes to hash off the event loop (loop delay p99 10-12 ms vs 12-15 ms).
 */
export function defaultHashThreads(): number {
  return availableParallelism() > 1 ? 1 : 0
}

/** How a torrent's target becomes the PieceStore it is written to or seeded from. */
export type StoreOpener = (torrent: ExtentTorrent, target: string, opts: OpenStoreOptions) => Promise<PieceStore>

export interface SessionOptions {
  /** BitTorrent listen port (default 6881; 0: any free port). */
  readonly port?: number
  /** Local address to listen on and to connect from (default: all). */
  readonly bind?: string
  /** Static peers ("host:port") for every torrent: trackerless networks. */
  readonly peers?: readonly string[]
  /** Bytes for in-flight piece buffers and the read cache (default 64 MiB). */
  readonly memory?: number
  /** The upload read cache's part of `memory` (default READ_CACHE_SHARE; at most 16 MiB). */
  readonly readCacheShare?: number
  /** Unchoke slots per torrent (default: see effectiveMaxUploads). */
  readonly maxUploads?: number
  /** Peer connections per torrent (default 25). */
  readonly maxConnections?: number
  /** Who gets upload slots (choker.ts): 'fleet' (default: every interested peer, round-robin under a cap) or 'tit-for-tat'. */
  readonly choking?: ChokingPolicy
  /** Session-wide upload limit, bytes/s (0 or absent: none). */
  readonly uploadRate?: number
  /** Ramp the upload cap up from the first upload (true: 10 MiB/s more every 10 s for 10 steps). */
  readonly slowStart?: boolean | Partial<SlowStart>
  /** Hashing worker threads (0: the main thread). Default: see defaultHashThreads. */
  readonly hashThreads?: number
  /** Done policy for torrents that do not set their own. */
  readonly donePolicy?: DonePolicy
  /** Networks (IPv4/IPv6 CIDRs, comma-separated allowed) peers must be in; others are neither accepted nor dialed. Absent or empty: any. */
  readonly allowPeers?: readonly string[]
  /** Milliseconds a snubbed peer has to send a requested block before it is disconnected (default 30 000); a web seed's stall timeout. */
  readonly requestTimeout?: number
  /** Milliseconds without a requested block before a peer counts as stalled: snubbed, its requests elsewhere (default 5 000; at most requestTimeout). */
  readonly peerStallTimeout?: number
  /** Find peers on the LAN by Local Service Discovery (BEP 14 multicast; default off). */
  readonly lsd?: boolean
  /** Pieces in flight per web seed of a torrent (HTTP connections; default 4). */
  readonly webSeedConnections?: number
  /** Bytes/s from a torrent's web seeds together (0 or absent: no cap). */
  readonly webSeedRate?: number
  /**
   * The store under every torrent (libtorrent's disk interface idea). Default:
   * storage's openStore (block devices, image files, extents directories;
   * locked, checked, and for writing the target's identity watched). Another
   * opener, e.g. one of MemoryStores, runs the whole engine on other storage;
   * a store with verifyTarget has it called while the torrent is written.
   */
  readonly openStore?: StoreOpener
  readonly log?: Logger
}

export interface AddOptions {
  /** Block device, image file or extents directory the torrent maps onto. */
  readonly target: string
  /** Trust the target to hold every piece (no check): the seeder of the golden image. */
  readonly seedingMode?: boolean
  readonly maxUploads?: number
  readonly maxConnections?: number
  /** Download pieces in order instead of rarest first. */
  readonly sequential?: boolean
  /** The target holds none of the torrent (a fresh or wiped disk): skip the resume check, download everything. */
  readonly skipCheck?: boolean
  /** Check the whole target before downloading (state "checking"), instead of beside the download with a probe first. */
  readonly checkFirst?: boolean
  /** Use a target that is mounted or otherwise in use. */
  readonly force?: boolean
  /** Static peers ("host:port") for this torrent, besides the session's. */
  readonly peers?: readonly string[]
  /** Tracker URLs to announce to besides the torrent's own (e.g. an embedded tracker). */
  readonly trackers?: readonly string[]
  /** Done policy: stop seeding after uploading this many times the size… */
  readonly seedRatio?: number
  /** …or after this many seconds without an upload. */
  readonly seedIdle?: number
  /** Web seeds (BEP 19: URL/NAME/<offset> files) besides the torrent's url-list. */
  readonly webSeeds?: readonly string[]
  /** Raw disk images over HTTP holding the source, besides the torrent's own: the extents are read at their offsets. */
  readonly webSeedImages?: readonly string[]
}

/** http(s) URLs only: anything else is refused before the torrent is added. */
function webSeedList(urls: readonly string[] | undefined, kind: WebSeedSpec['kind']): WebSeedSpec[] {
  return (urls ?? []).map((url) => {
    const error = webSeedUrlError(url, 'web seed')
    if (error !== undefined) throw new SessionError('INVALID_ARGUMENT', error)
    return { url, kind }
  })
}


function positiveInt(v: number | undefined, what: string): number | undefined {
  if (v === undefined) return undefined
  if (!Number.isSafeInteger(v) || v <= 0) throw new SessionError('INVALID_ARGUMENT', `${what} must be a positive whole number (got ${v})`)
  return v
}

function nonNegative(v: number | undefined, what: string): number | undefined {
  if (v === undefined) return undefined
  if (!Number.isFinite(v) || v < 0) throw new SessionError('INVALID_ARGUMENT', `${what} must be zero or more (got ${v})`)
  return v
}

/** Parse static peers; one given by an IP address outside `allow` is an error (a host name is checked when connected). */
function peerList(list: readonly string[] | undefined, what: string, allow: PeerFilter): PeerAddress[] {
  return (list ?? []).map((p) => {
    let a: PeerAddress
    try {
      a = parsePeerAddress(p)
    } catch (err) {
      throw new SessionError('INVALID_ARGUMENT', `${what}: ${(err as Error).message}`)
    }
    if (ipBytes(a.host) && !allow.allows(a.host)) {
      throw new SessionError('INVALID_ARGUMENT', `${what}: ${addressKey(a)} is outside the allowed peer networks (--allow-peers ${allow}); it would never be connected`)
    }
    return a
  })
}

interface Entry {
  readonly swarm: TorrentSwarm
  /** The target with symlinks resolved, to refuse a second torrent on it. */
  readonly realTarget: string
  /** Whether the torrent set its own done policy (else it follows the session's). */
  ownPolicy: boolean
}

/**
 * Emits 'change' (TorrentStatus) on state and progress changes, and
 * 'removed' (info-hash) after remove().
 */
export class Session extends EventEmitter {
  private readonly torrents = new Map<string, Entry>()
  /** Info-hashes (and targets) of adds still opening their store. */
  private readonly adding = new Set<string>()
  private closed = false
  private closing?: Promise<void>
  private readonly timer: NodeJS.Timeout
  private rampStart?: number
  private defaultPolicy: DonePolicy
  private discovery?: LocalDiscovery

  private constructor(
    private readonly opts: SessionOptions,
    private readonly listener: Listener,
    readonly peerId: Buffer,
    private readonly budget: MemoryBudget,
    private readonly uploadLimit: TokenBucket,
    private readonly verifier: PieceVerifier,
    private readonly readCache: ReadCache,
    private readonly log: Logger,
    private readonly staticPeers: PeerAddress[],
    private readonly slowStart: SlowStart | undefined,
    private readonly allowPeers: PeerFilter,
  ) {
    super()
    this.defaultPolicy = opts.donePolicy ?? {}
    this.timer = setInterval(() => this.updateUploadLimit(), 1000)
    this.timer.unref()
    this.updateUploadLimit()
  }

  static async start(opts: SessionOptions = {}): Promise<Session> {
    const log = opts.log ?? pino({ level: 'silent' })
    const memory = opts.memory ?? DEFAULT_MEMORY
    if (!Number.isSafeInteger(memory) || memory < 1024 * 1024) {
      throw new SessionError('INVALID_ARGUMENT', `memory ${memory} is too small: give at least 1 MiB (e.g. 64M)`)
    }
    positiveInt(opts.maxUploads, 'maxUploads')
    positiveInt(opts.maxConnections, 'maxConnections')
    nonNegative(opts.uploadRate, 'uploadRate')
    const port = opts.port ?? DEFAULT_PORT
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new SessionError('INVALID_ARGUMENT', `port ${port} is not a TCP port (0-65535)`)
    let allowPeers: PeerFilter
    try {
      allowPeers = PeerFilter.parse(opts.allowPeers ?? [])
    } catch (err) {
      throw new SessionError('INVALID_ARGUMENT', `allowed peer networks: ${(err as Error).message}`)
    }
    positiveInt(opts.requestTimeout, 'requestTimeout')
    positiveInt(opts.peerStallTimeout, 'peerStallTimeout')
    positiveInt(opts.webSeedConnections, 'webSeedConnections')
    nonNegative(opts.webSeedRate, 'webSeedRate')
    const staticPeers = peerList(opts.peers, 'session peers', allowPeers)
    const slowStart = opts.slowStart ? { ...DEFAULT_SLOW_START, ...(opts.slowStart === true ? {} : opts.slowStart) } : undefined
    const cache = Math.min(READ_CACHE_MAX, Math.floor(memory * (opts.readCacheShare ?? READ_CACHE_SHARE)))
    const hashThreads = opts.hashThreads ?? defaultHashThreads()

    const peerId = makePeerId()
    let session: Session | undefined
    const listener = await Listener.open(
      port,
      opts.bind,
      (infoHash) => {
        const swarm = session?.torrents.get(infoHash)?.swarm
        return swarm?.accepting ? (conn) => swarm.adopt(conn) : undefined
      },
      log,
      allowPeers,
    )
    session = new Session(
      opts,
      listener,
      peerId,
      new MemoryBudget(memory - cache),
      new TokenBucket(opts.uploadRate ?? 0),
      new PieceVerifier(hashThreads),
      new ReadCache(cache),
      log,
      staticPeers,
      slowStart,
      allowPeers,
    )
    if (opts.lsd) {
      const s = session
      try {
        s.discovery = await LocalDiscovery.start({
          port: () => listener.port,
          bind: opts.bind,
          torrents: () => [...s.torrents.values()].filter((e) => e.swarm.accepting).map((e) => e.swarm.infoHash),
          onPeer: (infoHash, peer) => s.torrents.get(infoHash)?.swarm.discovered(peer),
          log,
        })
      } catch (err) {
        await s.close()
        throw err
      }
    }
    log.info(
      { port: listener.port, bind: opts.bind ?? null, memory, peerId: peerId.toString('latin1', 0, 8), allowPeers: String(allowPeers), hashThreads, lsd: !!opts.lsd },
      'session started',
    )
    return session
  }

  /** The BitTorrent listen port (resolved when started with port 0). */
  get port(): number {
    return this.listener.port
  }

  /** Slow start ramps from the first upload, so a seeder started long before its peers still ramps. */
  private updateUploadLimit(): void {
    let cap = 0
    if (this.slowStart) {
      if (this.rampStart === undefined && [...this.torrents.values()].some((e) => e.swarm.status().totalUploaded > 0)) this.rampStart = Date.now()
      cap = slowStartCap(this.slowStart, this.rampStart === undefined ? 0 : Date.now() - this.rampStart)
    }
    this.uploadLimit.setRate(tighterLimit(this.opts.uploadRate ?? 0, cap))
  }

  /** The upload limit in force now, bytes/s (0: none). */
  get uploadLimitNow(): number {
    return this.uploadLimit.limit
  }

  /**
   * Add a torrent and start it (resume check, then download; or seeding at
   * once in seeding mode). A refused add throws SessionError and leaves the
   * other torrents alone.
   */
  async add(torrent: Buffer | Uint8Array | ExtentTorrent, opts: AddOptions): Promise<TorrentStatus> {
    if (this.closed) throw new SessionError('FAILED_PRECONDITION', 'the session is closing; no torrent can be added')
    let t: ExtentTorrent
    if (torrent instanceof Uint8Array) {
      try {
        t = parseTorrent(torrent)
      } catch (err) {
        throw new SessionError('INVALID_ARGUMENT', `not a usable torrent: ${(err as Error).message}`)
      }
    } else {
      t = torrent
    }
    if (typeof opts?.target !== 'string' || opts.target === '') {
      throw new SessionError('INVALID_ARGUMENT', `torrent ${t.name}: no target given (a block device, image file or extents directory)`)
    }
    const maxConnections = positiveInt(opts.maxConnections, 'maxConnections') ?? this.opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS
    const choking = this.opts.choking ?? DEFAULT_CHOKING
    const maxUploads = effectiveMaxUploads(choking, positiveInt(opts.maxUploads, 'maxUploads') ?? this.opts.maxUploads, maxConnections)
    const seedRatio = nonNegative(opts.seedRatio, 'seedRatio')
    const seedIdle = nonNegative(opts.seedIdle, 'seedIdle')
    const peers = [...this.staticPeers, ...peerList(opts.peers, `torrent ${t.name} peers`, this.allowPeers)]
    const webSeeds = [...webSeedList(opts.webSeeds, 'extents'), ...webSeedList(opts.webSeedImages, 'image')]

    const existing = this.torrents.get(t.infoHash)
    if (existing || this.adding.has(t.infoHash)) {
      const where = existing ? ` on ${existing.swarm.opts.target}` : ''
      throw new SessionError('ALREADY_EXISTS', `torrent ${t.infoHash} (${t.name}) is already in this session${where}; remove it first to add it again`)
    }
    const realTarget = await realpath(opts.target).catch(() => opts.target)
    for (const e of this.torrents.values()) {
      if (e.realTarget === realTarget) {
        throw new SessionError(
          'FAILED_PRECONDITION',
          `target ${opts.target} is already used by torrent ${e.swarm.infoHash} (${e.swarm.torrent.name}); one target holds one torrent`,
        )
      }
    }
    if (this.adding.has(realTarget)) throw new SessionError('FAILED_PRECONDITION', `target ${opts.target} is being added by another call`)

    this.adding.add(t.infoHash)
    this.adding.add(realTarget)
    let store: PieceStore
    try {
      store = await (this.opts.openStore ?? openStore)(t, opts.target, { mode: opts.seedingMode ? 'read' : 'write', force: opts.force })
    } catch (err) {
      throw new SessionError('FAILED_PRECONDITION', `torrent ${t.name}: ${(err as Error).message}`)
    } finally {
      this.adding.delete(t.infoHash)
      this.adding.delete(realTarget)
    }
    if (this.closed) {
      await store.close()
      throw new SessionError('FAILED_PRECONDITION', 'the session closed while the torrent was being added')
    }

    const ownPolicy = seedRatio !== undefined || seedIdle !== undefined
    const swarm = new TorrentSwarm(
      t,
      store,
      {
        target: opts.target,
        seedingMode: !!opts.seedingMode,
        skipCheck: !!opts.skipCheck,
        checkFirst: !!opts.checkFirst,
        maxUploads,
        maxConnections,
        choking,
        sequential: !!opts.sequential,
        peers,
        trackers: [...new Set([...t.trackers, ...(opts.trackers ?? [])])],
        localDiscovery: this.discovery !== undefined,
        policy: ownPolicy ? { seedRatio, seedIdle } : this.defaultPolicy,
        // the target deleted, replaced or shrunk while it is written (openStore's stores watch that)
        verifyTarget: store.verifyTarget?.bind(store),
        webSeeds,
        webSeedConnections: this.opts.webSeedConnections,
        webSeedRate: this.opts.webSeedRate,
      },
      {
        peerId: this.peerId,
        port: () => this.listener.port,
        bind: this.opts.bind,
        budget: this.budget,
        uploadLimit: this.uploadLimit,
        verifier: this.verifier,
        readCache: this.readCache,
        log: this.log,
        allowPeers: this.allowPeers,
        requestTimeout: this.opts.requestTimeout,
        peerStallTimeout: this.opts.peerStallTimeout,
      },
    )
    this.torrents.set(t.infoHash, { swarm, realTarget, ownPolicy })
    swarm.on('change', (s: TorrentStatus) => this.emit('change', s))
    this.log.info({ torrent: t.name, infoHash: t.infoHash, target: opts.target, seedingMode: !!opts.seedingMode }, 'torrent added')
    swarm.start()
    return swarm.status()
  }

  private entry(hash: string): Entry {
    const h = String(hash).toLowerCase()
    if (!isInfoHash(h)) throw new SessionError('INVALID_ARGUMENT', `${JSON.stringify(hash)} is not an info-hash (40 hex digits)`)
    const e = this.torrents.get(h)
    if (!e) throw new SessionError('NOT_FOUND', `no torrent ${h} in this session (it has ${this.torrents.size})`)
    return e
  }

  /** Status of the given torrents (all when none are given); an unknown hash throws NOT_FOUND. */
  status(hashes?: readonly string[]): TorrentStatus[] {
    if (hashes && hashes.length > 0) return hashes.map((h) => this.entry(h).swarm.status())
    return [...this.torrents.values()].map((e) => e.swarm.status())
  }

  get(hash: string): TorrentStatus | undefined {
    return this.torrents.get(String(hash).toLowerCase())?.swarm.status()
  }

  /** Each connected peer's pieces of one torrent (none for an unknown hash). */
  peerPieces(hash: string): PeerPieces[] {
    return this.torrents.get(String(hash).toLowerCase())?.swarm.peerPieces() ?? []
  }

  /** The peers of one torrent seen to hold every piece, connected now or not (a seed closes its connection to another seed at once). */
  seedsSeen(hash: string): SeedSeen[] {
    return this.torrents.get(String(hash).toLowerCase())?.swarm.seedsSeen() ?? []
  }

  /** The parsed torrent of a hash this session holds. */
  torrent(hash: string): ExtentTorrent | undefined {
    return this.torrents.get(String(hash).toLowerCase())?.swarm.torrent
  }

  pause(hash: string): void {
    this.entry(hash).swarm.pause()
  }

  /** Resume a paused torrent, or one that met its done policy (it seeds again). */
  resume(hash: string): void {
    this.entry(hash).swarm.resume()
  }

  /** Stop and forget a torrent; its target's data is left as it is. */
  async remove(hash: string): Promise<void> {
    const e = this.entry(hash)
    this.torrents.delete(e.swarm.infoHash)
    await e.swarm.close()
    this.log.info({ torrent: e.swarm.torrent.name, infoHash: e.swarm.infoHash }, 'torrent removed')
    this.emit('removed', e.swarm.infoHash)
  }

  /**
   * Set the done policy of one torrent, or (hash undefined) the session's
   * default, which also applies to every torrent without a policy of its own.
   */
  setDonePolicy(hash: string | undefined, policy: DonePolicy): void {
    const p: DonePolicy = { seedRatio: nonNegative(policy.seedRatio, 'seedRatio'), seedIdle: nonNegative(policy.seedIdle, 'seedIdle') }
    if (hash !== undefined) {
      const e = this.entry(hash)
      e.ownPolicy = true
      e.swarm.setPolicy(p)
      return
    }
    this.defaultPolicy = p
    for (const e of this.torrents.values()) if (!e.ownPolicy) e.swarm.setPolicy(p)
  }

  /** The session's default done policy. */
  donePolicy(): DonePolicy {
    return { ...this.defaultPolicy }
  }

  /** Graceful stop: no new peers, every torrent's peers closed, targets flushed and closed. */
  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  private async shutdown(): Promise<void> {
    this.closed = true
    clearInterval(this.timer)
    await this.discovery?.close()
    const listenerClosed = this.listener.close()
    const results = await Promise.allSettled([...this.torrents.values()].map((e) => e.swarm.close()))
    await listenerClosed
    await this.verifier.close()
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    this.log.info({ torrents: this.torrents.size, failed: failed.length }, 'session closed')
    if (failed.length > 0) throw new Error(`closing the session: ${failed.map((f) => (f.reason as Error).message).join('; ')}`)
  }
}
