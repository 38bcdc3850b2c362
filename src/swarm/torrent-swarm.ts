/**
 * One torrent's swarm: checks what the target holds, finds and keeps peers
 * (static list, trackers, incoming), downloads the rest (PieceDownloader:
 * block by block, rarest piece first, verified before it is written),
 * uploads to the peers it unchokes (UploadServer, choker), and decides when
 * it is done. It talks to storage only through the PieceStore and never
 * opens a device.
 *
 * Lifecycle: checking → downloading → (finish: gaps zeroed, flushed) →
 * seeding → finished (done policy met), with paused and error from anywhere.
 */
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { TorrentState, TorrentStatus } from '../session/status.js'
import type { PieceStore } from '../storage/types.js'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { pieceSize } from '../torrent/piece-map.js'
import { BLOCK_SIZE, blockKey } from './active-piece.js'
import { BanList, type PeerIdentity } from './ban-list.js'
import { chooseUnchoked } from './choker.js'
import { clientName } from './client-name.js'
import { type DonePolicy, doneReason } from './done-policy.js'
import type { MemoryBudget } from './memory-budget.js'
import { connectPeer, PeerConnection, REQUEST_TIMEOUT_MS } from './peer-connection.js'
import { addressKey, type PeerAddress, PeerDialer } from './peer-dialer.js'
import type { PeerFilter } from './peer-filter.js'
import { PieceDownloader } from './piece-downloader.js'
import { PiecePicker } from './piece-picker.js'
import { PieceSet } from './piece-set.js'
import type { PieceVerifier } from './piece-verifier.js'
import type { TokenBucket } from './rate-limit.js'
import { RateMeter } from './rate-meter.js'
import type { ReadCache } from './read-cache.js'
import { checkTarget } from './resume-check.js'
import { TrackerClient } from './tracker-client.js'
import { MAX_QUEUED_REQUESTS, UploadServer } from './upload-server.js'

/** What the session shares with each of its torrents. */
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
  /** Milliseconds without a requested block before a peer counts as snubbing us (default REQUEST_TIMEOUT_MS). */
  readonly requestTimeout?: number
}

export interface SwarmOptions {
  readonly target: string
  /** Trust the target to hold every piece (the seeder of the golden image). */
  readonly seedingMode: boolean
  /** Trust the target to hold none of it (a fresh disk): no resume check. */
  readonly skipCheck: boolean
  readonly maxUploads: number
  readonly maxConnections: number
  readonly sequential: boolean
  /** Static peers, dialed and re-dialed with backoff. */
  readonly peers: readonly PeerAddress[]
  /** Tracker URLs: the torrent's and any added. */
  readonly trackers: readonly string[]
  readonly policy: DonePolicy
  /**
   * Rejects if the target is no longer what was opened (deleted, replaced,
   * shrunk): checked every tick while downloading and before reporting finished.
   */
  readonly verifyTarget?: () => Promise<void>
}

/** Blocks kept requested per peer: at least, at most, and how many seconds of its rate. */
const DEPTH_MIN = 16
const DEPTH_MAX = 512
/** Blocks in a row a peer may send unasked (answers to requests we cancelled) before it counts as flooding us. */
const UNREQUESTED_MAX = 2 * DEPTH_MAX
const DEPTH_SECONDS = 1
const TICK_MS = 1000
/** Rechoke every this many ticks; the optimistic slot rotates every third rechoke. */
const CHOKE_TICKS = 10
const CONNECT_TIMEOUT_MS = 10_000
/** While downloading, flush what was written every this many ticks: a failing disk stops the torrent within seconds, not at the end. */
const FLUSH_TICKS = 10

export class TorrentSwarm extends EventEmitter {
  readonly have: PieceSet
  private readonly picker: PiecePicker
  private readonly downloads: PieceDownloader
  private readonly peers = new Set<PeerConnection>()
  private readonly dialer = new PeerDialer()
  private readonly bans = new BanList()
  private readonly uploads: UploadServer
  private readonly downloaded = new RateMeter()
  private readonly uploaded = new RateMeter()
  private readonly log: Logger
  private tracker?: TrackerClient
  private timer?: NodeJS.Timeout
  private ticks = 0
  private optimistic?: PeerConnection
  private connecting = 0
  private online = false
  private checking = false
  private finishing = false
  private seeding = false
  private userPaused = false
  private doneWhy?: string
  private errorText?: string
  private checkJob?: Promise<void>
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
  private closing = false
  private readonly startedAt = Date.now()
  private finishedAt?: number
  /** Start of the current seeding run (the idle rule counts from here): finishing, or a resume. */
  private seedingSince = 0
  private checkRate?: number
  private reused = 0
  private lastEmitted = ''
  private policy: DonePolicy
  /** Peer ids seen to have every piece. */
  private readonly seedsSeen = new Set<string>()

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
      onPiece: (index) => this.pieceDone(index),
      onBan: (who, reason) => this.ban(who, reason),
      onError: (err) => this.fail(err),
    })
    this.policy = opts.policy
    for (const p of opts.peers) this.dialer.add(p, 'static')
  }

  get infoHash(): string {
    return this.torrent.infoHash
  }

  get state(): TorrentState {
    if (this.errorText !== undefined) return 'error'
    if (this.checking) return 'checking'
    if (this.userPaused) return 'paused'
    if (this.doneWhy !== undefined) return 'finished'
    if (this.seeding) return 'seeding'
    if (this.finishing) return 'finishing'
    return 'downloading'
  }

  /** Begin: the resume check (unless in seeding mode), then the network. */
  start(): void {
    if (this.opts.seedingMode) {
      for (let i = 0; i < this.torrent.pieceCount; i++) {
        this.have.add(i)
        this.picker.setDone(i)
      }
      this.seeding = true
      this.finishedAt = Date.now()
      this.seedingSince = this.finishedAt
      this.goOnline()
      this.changed()
      return
    }
    if (this.opts.skipCheck) {
      this.goOnline()
      this.changed()
      return
    }
    this.checking = true
    this.changed()
    this.checkJob = this.runCheck()
  }

  private async runCheck(): Promise<void> {
    const started = performance.now()
    let lastReport = 0
    try {
      const r = await checkTarget(this.torrent, this.store, this.ctx.verifier, this.ctx.budget, {
        cancelled: () => this.errorText !== undefined || this.closing,
        onProgress: (p) => {
          const t = Date.now()
          if (t - lastReport >= 1000) {
            lastReport = t
            this.checkRate = (p.bytesChecked / (performance.now() - started)) * 1000
            this.emit('change', this.status())
          }
        },
      })
      for (let i = 0; i < this.torrent.pieceCount; i++) {
        if (r.have.has(i)) {
          this.have.add(i)
          this.picker.setDone(i)
        }
      }
      this.reused = r.bytesValid
      this.checkRate = r.ms > 0 ? (r.bytesChecked / r.ms) * 1000 : undefined
      this.log.info(
        { pieces: r.have.count, of: this.torrent.pieceCount, reusedBytes: r.bytesValid, checkMBps: this.checkRate && +(this.checkRate / 1e6).toFixed(1) },
        'resume check done',
      )
    } catch (err) {
      this.checking = false
      this.fail(err as Error)
      return
    }
    this.checking = false
    if (this.closing) return
    if (this.have.complete) await this.finish()
    else this.changed()
    if (!this.userPaused && this.errorText === undefined && this.doneWhy === undefined) this.goOnline()
  }

  // ---------------------------------------------------------------------------
  // Network on/off

  private goOnline(): void {
    if (this.online || this.closing) return
    this.online = true
    this.onlineSince = Date.now()
    this.stoppedTrackerError = undefined
    if (this.opts.trackers.length > 0) {
      this.tracker = new TrackerClient({
        infoHash: this.torrent.infoHash,
        peerId: this.ctx.peerId,
        trackers: this.opts.trackers,
        port: this.ctx.port(),
        stats: () => ({ uploaded: this.uploaded.total, downloaded: this.downloaded.total, left: this.bytesLeft() }),
        // downloading: more peers; seeding under a done policy: fresh leecher counts for the all-seeds rule
        wantsUpdate: () =>
          this.online && (this.have.complete ? this.policy.seedRatio !== undefined || this.policy.seedIdle !== undefined : this.peers.size < this.opts.maxConnections),
        log: this.log,
      })
      this.tracker.on('failure', () => this.changed())
      this.tracker.on('peer', (a: PeerAddress) => {
        if (!this.allowed(a.host)) return this.log.debug({ peer: addressKey(a), allowed: String(this.ctx.allowPeers) }, 'tracker peer outside --allow-peers: not dialed')
        this.dialer.add(a, 'tracker')
        this.dial()
      })
      // complete from the start: 'started' with left=0 says so; 'completed' is only for a download that finished (BEP 3)
      this.tracker.start()
    }
    if (this.opts.trackers.length === 0 && this.opts.peers.length === 0 && !this.have.complete) {
      this.log.warn('no tracker in the torrent and no --peer given: waiting for peers to connect to us')
    }
    this.timer = setInterval(() => this.tick(), TICK_MS)
    this.timer.unref()
    this.tick()
  }

  private goOffline(reason: string): Promise<void> {
    if (!this.online) return Promise.resolve()
    this.online = false
    clearInterval(this.timer)
    for (const p of [...this.peers]) p.close(reason)
    this.downloads.abort()
    const tracker = this.tracker
    this.tracker = undefined
    if (!tracker) return Promise.resolve()
    const stopped = tracker.stop()
    this.stoppedTrackerError = tracker.error
    return stopped
  }

  private bytesLeft(): number {
    return this.torrent.totalLength - this.bytesDone()
  }

  private bytesDone(): number {
    const n = this.have.count
    if (n === 0) return 0
    const last = this.torrent.pieceCount - 1
    return n * this.torrent.pieceLength - (this.have.has(last) ? this.torrent.pieceLength - pieceSize(this.torrent.layout, last) : 0)
  }

  private tick(): void {
    if (!this.online) return
    this.ticks++
    this.dial()
    for (const p of this.peers) {
      const want = Math.ceil((p.download.rate() * DEPTH_SECONDS) / BLOCK_SIZE)
      p.depth = p.snubbed ? 1 : Math.min(p.maxRequests, Math.max(DEPTH_MIN, Math.min(DEPTH_MAX, want)))
    }
    if (this.ticks % CHOKE_TICKS === 1) this.rechoke(this.ticks % (CHOKE_TICKS * 3) === 1)
    this.downloads.fillAll()
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
    if (!verify || this.seeding || this.errorText !== undefined) return
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
    if (!this.unflushed || this.flushing || this.finishing || this.seeding || this.errorText !== undefined) return
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

  private dial(): void {
    const room = this.opts.maxConnections - this.peers.size - this.connecting
    if (room <= 0) return
    const due = this.dialer.due(room, (a) => (this.have.complete && a.seed) || this.bans.isBanned({ ip: a.host, port: a.port }))
    for (const a of due) this.connectTo(a)
  }

  private connectTo(a: PeerAddress): void {
    this.connecting++
    const bind = this.ctx.bind && this.ctx.bind !== '0.0.0.0' && this.ctx.bind !== '::' ? this.ctx.bind : undefined
    const socket = connectPeer({ host: a.host, port: a.port, localAddress: bind })
    const timer = setTimeout(() => socket.destroy(new Error('connect timed out')), CONNECT_TIMEOUT_MS)
    timer.unref()
    let settled = false
    const failed = (err: Error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      this.connecting--
      this.dialer.closed(a, true, err.message)
      this.log.debug({ peer: addressKey(a), err: err.message }, 'connect failed')
    }
    socket.once('error', failed)
    socket.once('connect', () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.off('error', failed)
      this.connecting--
      const ip = (socket.remoteAddress ?? a.host).replace(/^::ffff:/, '')
      if (!this.allowed(ip)) {
        socket.destroy()
        this.dialer.closed(a, true, `${ip} is outside --allow-peers`)
        this.log.warn({ peer: addressKey(a), ip, allowed: String(this.ctx.allowPeers) }, 'peer address outside --allow-peers: not connecting')
        return
      }
      const conn = new PeerConnection(socket, 'out', ip, a.port)
      if (!this.online) {
        conn.close('offline')
        this.dialer.closed(a, false)
        return
      }
      if (this.bans.isBanned(conn.identity)) {
        conn.close('banned')
        this.dialer.remove(a)
        return
      }
      let attached = false
      conn.once('close', (reason: string) => this.dialer.closed(a, !attached, reason))
      conn.wire.once('handshake', (infoHash: string, peerId: string) => {
        if (infoHash !== this.torrent.infoHash) return conn.close('handshake for another torrent')
        if (peerId === this.ctx.peerId.toString('hex')) {
          this.dialer.markSelf(a)
          return conn.close('connected to ourselves')
        }
        attached = this.attach(conn)
        if (attached) this.dialer.connected(a)
      })
      this.sendHandshake(conn)
    })
  }

  /** Our handshake, with the extended handshake's fields set first (the wire sends it right after). */
  private sendHandshake(conn: PeerConnection): void {
    conn.wire.extendedHandshake = { v: 'blockswarm', p: this.ctx.port(), reqq: MAX_QUEUED_REQUESTS }
    conn.wire.handshake(this.torrent.infoHash, this.ctx.peerId)
  }

  /** An incoming connection whose handshake named this torrent. */
  adopt(conn: PeerConnection): void {
    if (!this.online) return conn.close('torrent not active')
    if (conn.peerId === this.ctx.peerId.toString('hex')) return conn.close('connected to ourselves')
    this.sendHandshake(conn)
    this.attach(conn)
  }

  /** Whether the listener should hand incoming peers to this torrent now. */
  get accepting(): boolean {
    return this.online
  }

  // ---------------------------------------------------------------------------
  // Peers

  /** Take a handshaken connection into the swarm; false (and closed) if refused. */
  private attach(conn: PeerConnection): boolean {
    if (this.bans.isBanned(conn.identity)) {
      conn.close('banned')
      return false
    }
    const twin = [...this.peers].find((p) => p.peerId === conn.peerId)
    if (twin) {
      // both sides dialed: keep the connection opened by the side with the lower peer id
      const keepOutgoing = this.ctx.peerId.toString('hex') < (conn.peerId ?? '')
      const loser = (conn.direction === 'out') === keepOutgoing ? twin : conn
      loser.close('duplicate connection')
      if (loser === conn) return false
    }
    if (this.peers.size >= this.opts.maxConnections) {
      conn.close('too many connections')
      return false
    }
    conn.client = conn.peerId ? clientName(conn.peerId) : undefined
    this.peers.add(conn)
    if (this.downloads.readsPaused) conn.pauseReads()
    this.wireUp(conn)
    if (this.have.count > 0) conn.wire.bitfield(this.have.bits)
    this.log.debug({ peer: conn.address, dir: conn.direction, client: conn.client }, 'peer connected')
    this.quickUnchoke()
    return true
  }

  private wireUp(conn: PeerConnection): void {
    const wire = conn.wire
    const n = this.torrent.pieceCount
    const pieces = new PieceSet(n)
    conn.frames.setPieceCount(n)
    conn.frames.checkBlock = (index, offset, length) => this.checkBlock(conn, index, offset, length)
    const timeout = this.ctx.requestTimeout ?? REQUEST_TIMEOUT_MS
    conn.blocks.setTimeout(timeout)
    conn.pieces = pieces
    // a bitfield normally comes first and once; one that comes later only adds pieces
    wire.on('bitfield', (bf: { buffer: Uint8Array }) => {
      const bits = bf.buffer
      if (bits.length !== pieces.bits.length) return conn.violation(`bitfield of ${bits.length} bytes for ${n} pieces`)
      for (let i = 0; i < n; i++) if (bits[i >> 3] & (0x80 >> (i & 7))) this.peerGained(conn, i)
      this.afterPeerPieces(conn)
    })
    wire.on('have', (index: number) => {
      // the wire reads 2^31 and more as negative
      if (!(index >= 0 && index < n)) return conn.violation(`have for piece ${index >>> 0} of ${n}`)
      this.peerGained(conn, index)
      this.afterPeerPieces(conn)
    })
    wire.on('unchoke', () => this.downloads.fill(conn))
    wire.on('interested', () => this.quickUnchoke())
    wire.on('uninterested', () => {
      if (!wire.amChoking) this.chokePeer(conn)
      this.quickUnchoke()
    })
    conn.blocks.on('request', (index: number, offset: number, length: number) => this.uploads.request(conn, index, offset, length))
    conn.blocks.on('cancel', (index: number, offset: number, length: number) => this.uploads.cancel(conn, index, offset, length))
    // no requested block for `timeout` ms: take its requests back and leave it one; if that one times out too, drop it
    conn.blocks.on('timeout', () => {
      if (this.downloads.readsPaused) return // we stopped reading (the disk is behind): not the peer's fault
      if (conn.snubbed) {
        this.log.info({ peer: conn.address, timeoutMs: timeout }, 'peer answers no requests: disconnected')
        return conn.close(`requests timed out: no block in ${(2 * timeout) / 1000} s`)
      }
      this.log.debug({ peer: conn.address, inflight: conn.inflight.size }, 'peer snubbed us (request timeout)')
      conn.snubbed = true
      conn.depth = 1
      this.downloads.snubbed(conn)
    })
    conn.blocks.on('download', (bytes: number) => {
      conn.download.add(bytes)
      this.downloaded.add(bytes)
    })
    conn.blocks.on('upload', (bytes: number) => {
      conn.upload.add(bytes)
      this.uploaded.add(bytes)
    })
    wire.on('extended', (ext: string, info: Record<string, unknown>) => {
      if (ext !== 'handshake') return
      if (typeof info.reqq === 'number' && info.reqq >= 1) conn.maxRequests = Math.floor(info.reqq)
      const p = info.p
      if (conn.direction === 'in' && typeof p === 'number' && p > 0 && p < 65536) conn.listenPort = p
      if (this.bans.isBanned(conn.identity)) conn.close('banned')
    })
    conn.once('close', (reason: string) => this.detach(conn, reason))
  }

  /** A block's header, before the wire buffers the block: one we ask for (in range, 16 KiB-aligned), and asked of this peer? */
  private checkBlock(conn: PeerConnection, index: number, offset: number, length: number): string | undefined {
    const n = this.torrent.pieceCount
    if (index >= n) return `block of piece ${index} of ${n}`
    const size = pieceSize(this.torrent.layout, index)
    if (offset % BLOCK_SIZE !== 0 || length !== Math.min(BLOCK_SIZE, size - offset)) {
      return `block of ${length} bytes at ${offset} of piece ${index} (${size} bytes), not a ${BLOCK_SIZE / 1024} KiB block we ask for`
    }
    if (conn.inflight.has(blockKey(index, offset / BLOCK_SIZE))) {
      conn.snubbed = false
      conn.unrequestedBlocks = 0
    } else if (++conn.unrequestedBlocks > UNREQUESTED_MAX) {
      return `${conn.unrequestedBlocks} blocks in a row that we had not asked for`
    }
    return undefined
  }

  private allowed(ip: string): boolean {
    return this.ctx.allowPeers?.allows(ip) ?? true
  }

  private peerGained(conn: PeerConnection, index: number): void {
    if (!conn.pieces!.add(index)) return
    this.picker.peerHas(index)
    if (!this.have.has(index)) conn.wantedCount++
  }

  private afterPeerPieces(conn: PeerConnection): void {
    if (conn.isSeed) {
      this.dialer.markSeed({ host: conn.ip, port: conn.listenPort })
      if (conn.peerId) this.seedsSeen.add(conn.peerId)
      if (this.have.complete) return conn.close('both sides are seeds')
    }
    this.updateInterest(conn)
    this.downloads.fill(conn)
  }

  private updateInterest(conn: PeerConnection): void {
    if (conn.wantedCount > 0 && !this.have.complete) conn.wire.interested()
    else conn.wire.uninterested()
  }

  private detach(conn: PeerConnection, reason: string): void {
    if (!this.peers.delete(conn)) return
    this.log.debug({ peer: conn.address, reason }, 'peer gone')
    this.downloads.peerGone(conn)
    if (conn.misbehaved) {
      this.downloads.discardFrom(conn)
      this.ban(conn.identity, reason)
    }
    const pieces = conn.pieces
    if (pieces && pieces.count > 0) {
      for (let i = 0; i < this.torrent.pieceCount; i++) if (pieces.has(i)) this.picker.peerLost(i)
    }
    this.uploads.clear(conn)
    if (this.optimistic === conn) this.optimistic = undefined
    if (this.online) {
      this.quickUnchoke()
      this.downloads.fillAll()
    }
  }

  // ---------------------------------------------------------------------------
  // Choking

  private rechoke(rotate: boolean): void {
    const seeding = this.have.complete
    const decision = chooseUnchoked(
      [...this.peers].map((p) => ({
        peer: p,
        interested: p.wire.peerInterested,
        isSeed: p.isSeed,
        downloadRate: p.download.rate(),
        uploadRate: p.upload.rate(),
      })),
      { slots: this.opts.maxUploads, seeding, optimistic: this.optimistic, rotate },
    )
    this.optimistic = decision.optimistic
    for (const p of this.peers) {
      if (decision.unchoke.has(p)) this.unchokePeer(p)
      else this.chokePeer(p)
    }
  }

  /** Give free slots to interested peers at once rather than at the next round. */
  private quickUnchoke(): void {
    if (!this.online) return
    let used = 0
    for (const p of this.peers) if (!p.wire.amChoking) used++
    for (const p of this.peers) {
      if (used >= this.opts.maxUploads) return
      if (p.wire.amChoking && p.wire.peerInterested && !p.isSeed) {
        this.unchokePeer(p)
        used++
      }
    }
  }

  private unchokePeer(p: PeerConnection): void {
    if (!p.wire.amChoking) return
    p.wire.unchoke()
  }

  private chokePeer(p: PeerConnection): void {
    if (p.wire.amChoking) return
    p.wire.choke()
    this.uploads.clear(p)
  }

  // ---------------------------------------------------------------------------
  // Pieces

  /** A piece was verified and written: tell the peers, drop interest where it is gone, finish when it was the last. */
  private async pieceDone(index: number): Promise<void> {
    this.pieceAt = Date.now()
    this.unflushed = true
    this.watchTarget()
    for (const p of this.peers) {
      p.wire.have(index)
      if (p.pieces!.has(index)) {
        p.wantedCount--
        if (p.wantedCount === 0) this.updateInterest(p)
      }
    }
    if (this.have.complete) await this.finish()
  }

  /** Every piece is verified and written: zero the gaps if required, flush, then seed. */
  private async finish(): Promise<void> {
    if (this.finishing || this.seeding) return
    this.finishing = true
    try {
      await this.store.finish()
      // a target deleted or truncated meanwhile took the writes with it: never report that as finished
      await this.opts.verifyTarget?.()
    } catch (err) {
      this.fail(err as Error)
      return
    } finally {
      this.finishing = false
    }
    this.seeding = true
    this.finishedAt = Date.now()
    this.seedingSince = this.finishedAt
    this.log.info({ downloaded: this.downloaded.total, reused: this.reused }, 'all pieces verified and flushed; seeding')
    this.tracker?.completed()
    for (const p of [...this.peers]) {
      if (p.isSeed) p.close('both sides are seeds')
      else this.updateInterest(p)
    }
    this.changed()
  }

  // ---------------------------------------------------------------------------
  // Bans, errors, done

  private ban(who: PeerIdentity, reason: string): void {
    const entry = this.bans.ban(who, reason)
    this.log.warn({ peer: entry.peer, reason }, 'peer banned')
    for (const p of [...this.peers]) {
      if (!this.bans.isBanned(p.identity)) continue
      this.downloads.discardFrom(p)
      p.close(`banned: ${reason}`)
    }
    this.dialer.remove({ host: who.ip, port: who.port })
    this.changed()
  }

  private fail(err: Error): void {
    if (this.errorText !== undefined) return
    this.errorText = err.message
    this.log.error({ err: err.message }, 'torrent stopped by an error')
    void this.goOffline('torrent error')
    this.changed()
  }

  private checkDone(): void {
    if (!this.seeding || this.doneWhy !== undefined) return
    let leechers = this.dialer.unfinished
    for (const p of this.peers) if (!p.isSeed) leechers++
    const why = doneReason(this.policy, {
      now: Date.now(),
      size: this.torrent.totalLength,
      uploaded: this.uploaded.total,
      finishedAt: this.seedingSince,
      lastUpload: this.uploaded.last || undefined,
      seeds: this.seedsSeen.size,
      leechers,
      trackerLeechers: this.tracker?.swarmCounts?.incomplete,
    })
    if (why === undefined) return
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

  resume(): void {
    if (!this.userPaused && this.doneWhy === undefined) return
    this.userPaused = false
    this.doneWhy = undefined
    this.seedingSince = Date.now()
    if (!this.checking && this.errorText === undefined) this.goOnline()
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

  status(): TorrentStatus {
    const n = this.torrent.pieceCount
    let seeds = 0
    const peerList = [...this.peers].map((p) => {
      const isSeed = p.isSeed
      if (isSeed) seeds++
      return {
        address: p.address,
        peerId: p.peerId ?? '',
        client: p.client,
        downloadRate: p.download.rate(),
        uploadRate: p.upload.rate(),
        isSeed,
        choked: p.wire.amChoking,
        interested: p.wire.peerInterested,
        direction: p.direction,
      }
    })
    const done = this.bytesDone()
    return {
      infoHash: this.torrent.infoHash,
      name: this.torrent.name,
      target: this.opts.target,
      state: this.state,
      error: this.errorText,
      lastProgress: this.online && this.state === 'downloading' && !this.have.complete ? Math.max(this.downloaded.last, this.pieceAt, this.onlineSince) : undefined,
      trackerError: this.tracker?.error ?? this.stoppedTrackerError,
      unreachable: this.dialer.failing(),
      progress: this.torrent.totalLength > 0 ? done / this.torrent.totalLength : 1,
      total: this.torrent.totalLength,
      totalDone: done,
      piecesDone: this.have.count,
      pieceCount: n,
      downloadRate: this.downloaded.rate(),
      uploadRate: this.uploaded.rate(),
      totalDownloaded: this.downloaded.total,
      totalUploaded: this.uploaded.total,
      totalReused: this.reused,
      peers: this.peers.size,
      seeds,
      startedAt: this.startedAt,
      complete: this.seeding,
      finishedAt: this.finishedAt,
      lastUpload: this.uploaded.last || undefined,
      lastDownload: this.downloaded.last || undefined,
      checkRate: this.checkRate,
      paused: this.userPaused || this.doneWhy !== undefined,
      done: this.doneWhy !== undefined,
      doneReason: this.doneWhy,
      bans: this.bans.list().map(({ peer, reason }) => ({ peer, reason })),
      hashFailures: this.downloads.hashFailures,
      peerList,
    }
  }
}
