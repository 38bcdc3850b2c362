/**
 * One torrent's swarm: its lifecycle, and the parts that do the work —
 * the resume check (resume-check.ts), the peers (peers.ts: dialing,
 * connections, bans), the download (piece-downloader.ts: block by block,
 * rarest piece first, verified before it is written), the upload
 * (upload-server.ts) and choking (choking.ts), the tracker
 * (tracker-client.ts). It talks to storage only through the PieceStore.
 *
 * Lifecycle (one phase at a time; pause and error stand beside it):
 *   [checking →] downloading → finishing → seeding ⇄ finished
 * - the resume check runs beside the download (a probe first; see
 *   resume-check.ts), or before it in the phase "checking" (checkFirst).
 * - finishing: every piece is verified and written; the gaps are zeroed
 *   where required, the target flushed and re-checked. Not complete yet.
 * - seeding: complete (the whole torrent is on the target), serving others.
 * - finished: the done policy held; stopped serving (resume: seeding again).
 * - paused (by the user) and error (terminal) hide the phase in `state`;
 *   a pause asked during the check takes effect when it ends.
 */
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { PieceStore } from '../storage/types.js'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import type { ChokingPolicy } from './choker.js'
import { Choking } from './choking.js'
import { SeedStripes } from './seed-stripes.js'
import { pieceSize } from '../torrent/piece-map.js'
import { type DonePolicy, doneReason } from './done-policy.js'
import type { PeerConnection } from './peer-connection.js'
import type { PeerAddress } from './peer-dialer.js'
import { type SeedSeen, SwarmPeers } from './peers.js'

/** What a connected peer holds, as the fleet view reads it. */
export interface PeerPieces {
  /** 40 hex digits. */
  readonly peerId: string
  /** "ip:port" (its listen port when known). */
  readonly address: string
  /** Its bitfield (piece 0 is the high bit of byte 0). */
  readonly bits: Buffer
  readonly count: number
}
import { PieceDownloader } from './piece-downloader.js'
import { PiecePicker } from './piece-picker.js'
import { PieceSet } from './piece-set.js'
import { RateMeter } from './rate-meter.js'
import { type CheckResult, TargetCheck } from './resume-check.js'
import type { TorrentState, TorrentStatus } from './status.js'
import type { SwarmContext } from './swarm-context.js'
import { bytesDone, torrentStatus } from './swarm-status.js'
import { TrackerClient } from './tracker-client.js'
import { UploadServer } from './upload-server.js'
import { WEB_SEED_CONNECTIONS, WEB_SEED_TIMEOUT_MS, type WebSeedSpec, WebSeeds } from './web-seed.js'

export type { SwarmContext } from './swarm-context.js'
export type { SeedSeen } from './peers.js'

export interface SwarmOptions {
  readonly target: string
  /** Trust the target to hold every piece (the seeder of the golden image). */
  readonly seedingMode: boolean
  /** Trust the target to hold none of it (a fresh disk): no resume check. */
  readonly skipCheck: boolean
  /** Check the whole target before downloading (state "checking"), not beside the download. */
  readonly checkFirst?: boolean
  readonly maxUploads: number
  readonly maxConnections: number
  /** Who gets the upload slots (choker.ts). */
  readonly choking?: ChokingPolicy
  readonly sequential: boolean
  /** Static peers, dialed and re-dialed with backoff. */
  readonly peers: readonly PeerAddress[]
  /** Tracker URLs: the torrent's and any added. */
  readonly trackers: readonly string[]
  /** The session looks for peers on the LAN (BEP 14) and hands them to discovered(). */
  readonly localDiscovery?: boolean
  readonly policy: DonePolicy
  /** HTTP sources added to the torrent's own (url-list, blockswarm's web seed image). */
  readonly webSeeds?: readonly WebSeedSpec[]
  /** Pieces in flight per web seed (HTTP connections; default WEB_SEED_CONNECTIONS). */
  readonly webSeedConnections?: number
  /** Bytes/s from all web seeds of the torrent; 0 or absent: no cap. */
  readonly webSeedRate?: number
  /**
   * Rejects if the target is no longer what was opened (deleted, replaced,
   * shrunk): checked every tick while downloading and before reporting complete.
   */
  readonly verifyTarget?: () => Promise<void>
}

/** The phases of a torrent's life, in order (see the top of this file). */
type Phase = 'checking' | 'downloading' | 'finishing' | 'seeding' | 'finished'

const TICK_MS = 1000
/** While downloading, flush what was written every this many ticks: a failing disk stops the torrent within seconds, not at the end. */
const FLUSH_TICKS = 10

export class TorrentSwarm extends EventEmitter {
  readonly have: PieceSet
  private readonly picker: PiecePicker
  private readonly downloads: PieceDownloader
  private readonly webSeeds: WebSeeds
  private readonly uploads: UploadServer
  private readonly choking: Choking
  private readonly peers: SwarmPeers
  private readonly downloaded = new RateMeter()
  private readonly uploaded = new RateMeter()
  private readonly log: Logger
  private phase: Phase = 'checking'
  private userPaused = false
  private errorText?: string
  /** Why the done policy held, while finished. */
  private doneWhy?: string
  /** Networking is on (peers, tracker, ticks). */
  private online = false
  private closing = false
  private tracker?: TrackerClient
  private timer?: NodeJS.Timeout
  private ticks = 0
  private checkJob?: Promise<void>
  private check?: TargetCheck
  /** The target check in progress (at most one), and whether another is due after it. */
  private targetCheck?: Promise<void>
  private targetRecheck = false
  /** When the torrent last went online, and when a piece was last verified (for lastProgress). */
  private onlineSince = 0
  private pieceAt = 0
  /** The periodic flush in progress, and whether pieces were written since the last one began. */
  private flushing?: Promise<void>
  private unflushed = false
  /** The tracker's failure when it was last stopped (going offline), still shown until it is started again. */
  private stoppedTrackerError?: string
  private readonly startedAt = Date.now()
  /** When the torrent became complete (on the target). */
  private completedAt?: number
  /** Start of the current seeding run (the idle rule counts from here): completion, or a resume. */
  private seedingSince = 0
  private checkRate?: number
  private reused = 0
  private checkedBytes = 0
  private lastEmitted = ''
  private policy: DonePolicy

  constructor(
    readonly torrent: ExtentTorrent,
    readonly store: PieceStore,
    readonly opts: SwarmOptions,
    private readonly ctx: SwarmContext,
  ) {
    super()
    this.log = ctx.log.child({ torrent: torrent.name, infoHash: torrent.infoHash.slice(0, 12) })
    this.have = new PieceSet(torrent.pieceCount)
    this.picker = new PiecePicker(torrent.pieceCount, opts.sequential)
    this.uploads = new UploadServer({
      store,
      have: this.have,
      cache: ctx.readCache,
      limit: ctx.uploadLimit,
      onError: (err) => this.fail(err),
    })
    this.downloads = new PieceDownloader(torrent, store, this.have, this.picker, ctx.budget, this.log, {
      canRequest: () => this.online && !this.have.complete,
      peers: () => this.peers,
      onPiece: (index) => {
        this.webSeeds.pump()
        return this.pieceDone(index)
      },
      onBan: (who, reason) => this.peers.ban(who, reason),
      onError: (err) => this.fail(err),
      checkFirst: (index) => this.check?.hurry(index),
    })
    this.peers = new SwarmPeers({
      torrent,
      ctx,
      log: this.log,
      maxConnections: opts.maxConnections,
      have: this.have,
      picker: this.picker,
      downloads: this.downloads,
      uploads: this.uploads,
      choking: () => this.choking,
      online: () => this.online,
      changed: () => this.changed(),
      downloaded: this.downloaded,
      uploaded: this.uploaded,
      // the golden image's seeder under the fleet policy: every piece out once before any twice
      stripes:
        opts.seedingMode && (opts.choking ?? 'fleet') === 'fleet'
          ? new SeedStripes({ pieceCount: torrent.pieceCount, pieceBytes: (i) => pieceSize(torrent.layout, i), held: (i) => this.picker.availability(i) > 0 })
          : undefined,
    })
    this.choking = new Choking(() => this.peers, this.uploads, {
      slots: opts.maxUploads,
      policy: opts.choking ?? 'fleet',
      seeding: () => this.have.complete,
    })
    this.webSeeds = new WebSeeds(
      [
        ...torrent.webSeeds.map((url): WebSeedSpec => ({ url, kind: 'extents' })),
        ...(torrent.meta.webSeedImages ?? []).map((url): WebSeedSpec => ({ url, kind: 'image' })),
        ...(opts.webSeeds ?? []),
      ],
      torrent,
      this.downloads,
      {
        connections: opts.webSeedConnections ?? WEB_SEED_CONNECTIONS,
        rate: opts.webSeedRate ?? 0,
        timeoutMs: ctx.requestTimeout ?? WEB_SEED_TIMEOUT_MS,
        log: this.log,
        onBytes: (n) => this.downloaded.add(n),
        peersServing: () => {
          for (const p of this.peers) if (!p.closed && !p.peerChoking) return true
          return false
        },
      },
    )
    this.policy = opts.policy
    for (const p of opts.peers) this.peers.dialer.add(p, 'static')
  }

  get infoHash(): string {
    return this.torrent.infoHash
  }

  get state(): TorrentState {
    if (this.errorText !== undefined) return 'error'
    if (this.phase === 'checking') return 'checking'
    if (this.userPaused) return 'paused'
    return this.phase
  }

  /** The whole torrent is on the target (verified, written, gaps zeroed where required, flushed, re-checked). */
  get complete(): boolean {
    return this.phase === 'seeding' || this.phase === 'finished'
  }

  /** Begin: the resume check (unless in seeding mode or told to skip it) and the network, together; or the check first (checkFirst). */
  start(): void {
    if (this.opts.seedingMode) {
      for (let i = 0; i < this.torrent.pieceCount; i++) {
        this.have.add(i)
        this.picker.setDone(i)
      }
      this.becomeComplete()
    } else if (this.opts.skipCheck) {
      this.phase = 'downloading'
    } else if (this.opts.checkFirst) {
      this.phase = 'checking'
      this.changed()
      this.checkJob = this.runCheck(false)
      return
    } else {
      this.phase = 'downloading'
      this.picker.markAllUnchecked()
      this.checkJob = this.runCheck(true)
    }
    this.goOnline()
    this.changed()
  }

  /** The resume check; beside the download (with its probe first) or before it. */
  private async runCheck(beside: boolean): Promise<void> {
    const started = performance.now()
    let lastReport = 0
    let r: CheckResult
    try {
      const check = new TargetCheck(this.torrent, this.store, this.ctx.verifier, this.ctx.budget, {
        probe: beside,
        cancelled: () => this.errorText !== undefined || this.closing,
        onChecked: (index, intact, size) => this.pieceChecked(index, intact, size),
        onProgress: (p) => {
          const t = Date.now()
          if (t - lastReport >= 1000) {
            lastReport = t
            this.checkRate = (p.bytesChecked / (performance.now() - started)) * 1000
            this.emit('change', this.status())
          }
        },
      })
      this.check = check
      r = await check.run()
    } catch (err) {
      this.phase = 'downloading'
      this.picker.clearUnchecked()
      this.fail(err as Error)
      return
    } finally {
      this.check = undefined
    }
    this.checkRate = r.ms > 0 ? (r.bytesChecked / r.ms) * 1000 : undefined
    this.log.info(
      {
        pieces: r.valid,
        of: this.torrent.pieceCount,
        checked: r.checked,
        reusedBytes: r.bytesValid,
        checkMBps: this.checkRate && +(this.checkRate / 1e6).toFixed(1),
        ...(r.fresh ? { fresh: true, note: `none of the ${r.checked} pieces probed is on the target (a fresh disk): the rest is not read back` } : {}),
      },
      // one message either way: operators' log filters look for it
      'resume check done',
    )
    if (beside || this.closing) return
    this.phase = 'downloading'
    if (this.have.complete) await this.finish()
    else this.changed()
    // (finish may have moved the phase on: read it afresh)
    const phase = this.phase as Phase
    if (!this.userPaused && this.errorText === undefined && phase !== 'finished') this.goOnline()
  }

  /** The resume check read a piece back: keep it when intact (peers hear of it), else it may be fetched now. */
  private pieceChecked(index: number, intact: boolean, size: number): void {
    if (this.errorText !== undefined || this.closing) return
    this.checkedBytes += size
    this.picker.setChecked(index)
    if (this.check?.probedFresh) this.picker.clearUnchecked()
    // read while the probe's verdict freed it for download: the download (begun, or done) has the say
    if (!this.picker.isMissing(index)) return
    if (intact) {
      this.have.add(index)
      this.picker.setDone(index)
      this.reused += size
      if (this.phase === 'checking') return
      this.pieceAt = Date.now()
      this.peers.havePiece(index)
      if (this.have.complete) void this.finish()
    }
    if (this.phase !== 'checking') this.downloads.scheduleFill()
  }

  // ---------------------------------------------------------------------------
  // Network on/off

  private goOnline(): void {
    if (this.online || this.closing) return
    this.online = true
    this.webSeeds.reopen()
    this.onlineSince = Date.now()
    this.stoppedTrackerError = undefined
    if (this.opts.trackers.length > 0) {
      this.tracker = new TrackerClient({
        infoHash: this.torrent.infoHash,
        peerId: this.ctx.peerId,
        trackers: this.opts.trackers,
        port: this.ctx.port(),
        stats: () => ({ uploaded: this.uploaded.total, downloaded: this.downloaded.total, left: this.torrent.totalLength - bytesDone(this.torrent, this.have) }),
        // downloading: more peers; seeding under a done policy: fresh leecher counts for the all-seeds rule
        wantsUpdate: () =>
          this.online &&
          (this.have.complete ? this.policy.seedRatio !== undefined || this.policy.seedIdle !== undefined : this.peers.size < this.opts.maxConnections),
        log: this.log,
      })
      this.tracker.on('failure', () => this.changed())
      this.tracker.on('peer', (a: PeerAddress) => this.peers.found(a))
      // complete from the start: 'started' with left=0 says so; 'completed' is only for a download that finished (BEP 3)
      this.tracker.start()
    }
    if (this.opts.trackers.length === 0 && this.opts.peers.length === 0 && this.webSeeds.size === 0 && !this.have.complete) {
      if (this.opts.localDiscovery) this.log.info('no tracker in the torrent and no --peer given: looking for peers on the LAN (--lsd)')
      else this.log.warn('no tracker in the torrent and no --peer given: waiting for peers to connect to us (or give --lsd to find them on the LAN)')
    }
    this.timer = setInterval(() => this.tick(), TICK_MS)
    this.timer.unref()
    this.tick()
  }

  private goOffline(reason: string): Promise<void> {
    if (!this.online) return Promise.resolve()
    this.online = false
    clearInterval(this.timer)
    this.peers.closeAll(reason)
    this.webSeeds.close()
    this.downloads.abort()
    const tracker = this.tracker
    this.tracker = undefined
    if (!tracker) return Promise.resolve()
    const stopped = tracker.stop()
    this.stoppedTrackerError = tracker.error
    return stopped
  }

  private tick(): void {
    if (!this.online) return
    this.ticks++
    this.peers.dial()
    this.peers.stripeTick()
    this.peers.haveTick()
    this.peers.lapseInterest()
    for (const p of this.peers) this.downloads.retune(p)
    this.choking.tick(this.ticks)
    this.downloads.fillAll()
    this.webSeeds.pump()
    this.watchTarget()
    if (this.ticks % FLUSH_TICKS === 0) this.flushWritten()
    this.checkDone()
    this.changed()
  }

  /**
   * While writing (every tick and after every piece), check that the target
   * is still the one opened; fail the torrent if it is not. After a piece, so
   * that a truncated file is seen before later writes grow it back.
   */
  private watchTarget(): void {
    const verify = this.opts.verifyTarget
    if (!verify || this.complete || this.errorText !== undefined) return
    if (this.targetCheck) {
      this.targetRecheck = true
      return
    }
    this.targetCheck = verify().then(
      () => {
        this.targetCheck = undefined
        if (!this.targetRecheck) return
        this.targetRecheck = false
        this.watchTarget()
      },
      (err: Error) => {
        this.targetCheck = undefined
        this.fail(err)
      },
    )
  }

  /** fdatasync what was written since the last flush, so that a writeback error shows early and names a narrow span. */
  private flushWritten(): void {
    if (!this.unflushed || this.flushing || this.phase !== 'downloading' || this.errorText !== undefined) return
    this.unflushed = false
    this.flushing = this.store.flush().then(
      () => {
        this.flushing = undefined
      },
      (err: Error) => {
        this.flushing = undefined
        this.fail(err)
      },
    )
  }

  /** An incoming connection whose handshake named this torrent. */
  adopt(conn: PeerConnection): void {
    this.peers.adopt(conn)
  }

  /** Local service discovery heard a peer of this torrent on the LAN: dial it while online. */
  discovered(a: PeerAddress): void {
    if (this.online) this.peers.found(a, 'lsd')
  }

  /** Whether the listener should hand incoming peers to this torrent now. */
  get accepting(): boolean {
    return this.online
  }

  // ---------------------------------------------------------------------------
  // Pieces

  /** A piece was verified and written: tell the peers, finish when it was the last. */
  private async pieceDone(index: number): Promise<void> {
    this.pieceAt = Date.now()
    this.unflushed = true
    this.watchTarget()
    this.peers.havePiece(index)
    if (this.have.complete) await this.finish()
  }

  /** Every piece is verified and written: zero the gaps if required, flush, re-check the target; then complete. */
  private async finish(): Promise<void> {
    if (this.phase !== 'downloading') return
    this.phase = 'finishing'
    this.changed()
    try {
      await this.store.finish()
      // a target deleted or truncated meanwhile took the writes with it: never report that as complete
      await this.opts.verifyTarget?.()
    } catch (err) {
      this.fail(err as Error)
      return
    }
    this.becomeComplete()
    this.log.info({ downloaded: this.downloaded.total, reused: this.reused }, 'all pieces verified and flushed; seeding')
    this.tracker?.completed()
    this.peers.nowSeeding()
    this.changed()
  }

  private becomeComplete(): void {
    this.phase = 'seeding'
    this.completedAt = Date.now()
    this.seedingSince = this.completedAt
  }

  // ---------------------------------------------------------------------------
  // Errors, done

  private fail(err: Error): void {
    if (this.errorText !== undefined) return
    this.errorText = err.message
    this.log.error({ err: err.message }, 'torrent stopped by an error')
    void this.goOffline('torrent error')
    this.changed()
  }

  private checkDone(): void {
    if (this.phase !== 'seeding') return
    const why = doneReason(this.policy, {
      now: Date.now(),
      size: this.torrent.totalLength,
      uploaded: this.uploaded.total,
      seedingSince: this.seedingSince,
      lastUpload: this.uploaded.last || undefined,
      seeds: this.peers.seedsSeen.size,
      leechers: this.peers.leechers,
      trackerLeechers: this.tracker?.swarmCounts?.incomplete,
    })
    if (why === undefined) return
    this.phase = 'finished'
    this.doneWhy = why
    this.log.info({ reason: why }, 'done seeding')
    void this.goOffline('done seeding')
    this.changed()
  }

  // ---------------------------------------------------------------------------
  // Control

  /** Replace the done policy (takes effect at the next tick). */
  setPolicy(policy: DonePolicy): void {
    this.policy = policy
  }

  pause(): void {
    if (this.userPaused) return
    this.userPaused = true
    void this.goOffline('paused')
    this.changed()
  }

  /** Resume a paused torrent, or one that met its done policy (it seeds again). */
  resume(): void {
    if (!this.userPaused && this.phase !== 'finished') return
    this.userPaused = false
    if (this.phase === 'finished') {
      this.phase = 'seeding'
      this.doneWhy = undefined
    }
    this.seedingSince = Date.now()
    if (this.phase !== 'checking' && this.errorText === undefined) this.goOnline()
    this.changed()
  }

  /** Stop networking, let hashing/writes settle, flush and close the store. Never touches data otherwise. */
  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    await this.goOffline('session closing')
    await this.checkJob
    await this.downloads.close()
    await this.flushing
    this.ctx.readCache.drop(this.store)
    try {
      if (this.errorText === undefined) await this.store.flush()
    } finally {
      await this.store.close()
    }
  }

  // ---------------------------------------------------------------------------
  // Status

  /** Emit 'change' when anything a status reader would see has changed. */
  private changed(): void {
    const s = this.status()
    const key = `${s.state}|${s.piecesDone}|${s.peers}|${s.bans.length}|${s.totalUploaded}|${s.totalDownloaded}|${s.paused}|${s.done}|${s.trackerError !== undefined}`
    if (key === this.lastEmitted) return
    this.lastEmitted = key
    this.emit('change', s)
  }

  /** Each connected peer's pieces (a copy of its bitfield with its HAVEs), for the fleet view. */
  peerPieces(): PeerPieces[] {
    const out: PeerPieces[] = []
    for (const p of this.peers) {
      const pieces = p.pieces
      if (pieces && p.peerId !== undefined) out.push({ peerId: p.peerId, address: p.address, bits: Buffer.from(pieces.bits), count: pieces.count })
    }
    return out
  }

  /** The peers seen to hold every piece, connected now or not, for the fleet view. */
  seedsSeen(): SeedSeen[] {
    return [...this.peers.seedsSeen.values()]
  }

  status(): TorrentStatus {
    const state = this.state
    const finished = this.phase === 'finished'
    return torrentStatus(this.torrent, this.have, this.peers, {
      target: this.opts.target,
      state,
      complete: this.complete,
      paused: this.userPaused || finished,
      done: finished,
      doneReason: this.doneWhy,
      error: this.errorText,
      lastProgress: this.online && state === 'downloading' && !this.have.complete ? Math.max(this.downloaded.last, this.pieceAt, this.onlineSince) : undefined,
      trackerError: this.tracker?.error ?? this.stoppedTrackerError,
      unreachable: this.peers.dialer.failing(),
      downloadRate: this.downloaded.rate(),
      uploadRate: this.uploaded.rate(),
      totalDownloaded: this.downloaded.total,
      totalUploaded: this.uploaded.total,
      totalReused: this.reused,
      startedAt: this.startedAt,
      finishedAt: this.completedAt,
      lastUpload: this.uploaded.last || undefined,
      lastDownload: this.downloaded.last || undefined,
      checkRate: this.checkRate,
      totalChecked: this.checkedBytes,
      checkPending: this.check ? this.picker.uncheckedPieces : 0,
      firstDownload: this.downloaded.first || undefined,
      bans: this.peers.bans.list().map(({ peer, reason }) => ({ peer, reason })),
      hashFailures: this.downloads.hashFailures,
      bytesInFlight: this.downloads.bytesInFlight,
      webSeeds: this.webSeeds.status(),
      totalFromWebSeeds: this.webSeeds.totalDownloaded,
    })
  }
}
