/**
 * Downloading pieces block by block: which block to ask each peer for (open
 * pieces first, then the rarest new piece if the memory budget allows, then
 * endgame duplicates), what to do with each block that arrives, and the
 * path of a complete piece: SHA-1 check (hashed as its blocks came, see
 * ActivePiece), then the store, then "have". A
 * piece that fails its hash goes back to missing and its senders are
 * blamed (HashBlame). When the hash/write queue falls behind, socket reads
 * are paused.
 */
import type { Logger } from 'pino'
import type { PieceStore } from '../storage/types.js'
import { type ExtentTorrent, pieceHash } from '../torrent/metainfo.js'
import { pieceSize } from '../torrent/piece-map.js'
import { ActivePiece, BLOCK_SIZE } from './active-piece.js'
import type { PeerIdentity } from './ban-list.js'
import { HashBlame } from './hash-blame.js'
import { isOurClient } from './client-name.js'
import type { MemoryBudget } from '../services/memory-budget.js'
import type { DownloadSink, PeerConnection } from './peer-connection.js'
import type { PiecePicker } from './piece-picker.js'
import type { PieceSet } from './piece-set.js'

/** Endgame: how many peers may be asked for the same block. */
export const ENDGAME_ASKERS = 2
/** Requests topped up at once, at most. */
export const REFILL_MAX = 64
/** …and at least this many at once: at the least depth (DEPTH_MIN) one request per block received was one write call and one packet each. */
export const REFILL_MIN = 2
/**
 * Blocks kept requested per peer: at least, at most, and how many seconds of
 * its rate. From another blockswarm node, a quarter second of its rate: that
 * covers its bandwidth-delay product for RTTs up to 250 ms (and grows the
 * depth from DEPTH_MIN at that RTT); more only queues our requests behind
 * each other at the sender, so a fresh piece asked for now waits behind a
 * second of older ones before its copy can be passed on (simulated at
 * N = 32/100/300/1,000: 1 s → 0.25 s and 16 → 8 blocks, last finish
 * 1.21/1.50/1.61/1.79 → 1.13/1.44/1.54/1.67 × T*; bench:swarm N = 8:
 * 1.23 → 1.14).
 */
export const DEPTH_MIN = 8
export const DEPTH_MAX = 512
export const DEPTH_SECONDS = 0.25
/**
 * From other clients, a second of their rate: they pace what they send
 * (transmission 3.00 seeding a partclone image answers a request up to half
 * a second later however few are queued), so a shorter depth caps the rate
 * it measures, and the rate caps the depth (test/interop-partclone.test.ts:
 * a deploy from transmission took 23 s at 1 s of its rate, 66 s at 0.5 or
 * 0.25 s, and over 90 s at 0.25 s and 8 blocks).
 */
export const FOREIGN_DEPTH_SECONDS = 1

export interface DownloaderHooks {
  /** Whether blocks may be requested now (the torrent is online and incomplete). */
  readonly canRequest: () => boolean
  readonly peers: () => Iterable<PeerConnection>
  /** A piece was verified, written and added to `have`. */
  readonly onPiece: (index: number) => Promise<void>
  readonly onBan: (who: PeerIdentity, reason: string) => void
  /** The store failed: the torrent cannot go on. */
  readonly onError: (err: Error) => void
  /** The resume check runs beside the download: read this unchecked piece back next (the peer has it, nothing checked is left to start). */
  readonly checkFirst?: (index: number) => void
}

export class PieceDownloader implements DownloadSink {
  /** How many blocks to keep requested from each peer (retune: from its rate). */
  private readonly depth = new WeakMap<PeerConnection, number>()
  private readonly active = new Map<number, ActivePiece<PeerConnection>>()
  /** Active pieces with blocks nobody has been asked for, oldest first. */
  private readonly open = new Set<ActivePiece<PeerConnection>>()
  private readonly blame = new HashBlame()
  /** Pieces that failed their SHA-1 check (each fetched again). */
  hashFailures = 0
  /** Bytes of pieces being hashed or written. */
  private writing = 0
  /** Complete pieces being hashed or written (until they are in `have`, or have failed). */
  private readonly verifying = new Set<ActivePiece<PeerConnection>>()
  private paused = false
  private memoryStarved = false
  private fillScheduled = false
  private readonly jobs = new Set<Promise<void>>()
  private readonly onMemory = () => {
    if (!this.memoryStarved) return
    this.memoryStarved = false
    this.fillAll()
  }

  constructor(
    private readonly torrent: ExtentTorrent,
    private readonly store: PieceStore,
    private readonly have: PieceSet,
    private readonly picker: PiecePicker,
    private readonly budget: MemoryBudget,
    private readonly log: Logger,
    private readonly hooks: DownloaderHooks,
  ) {
    budget.on('available', this.onMemory)
  }

  /** Socket reads are paused because the disk is behind (new peers start paused too). */
  get readsPaused(): boolean {
    return this.paused
  }

  /** Bytes received of pieces not verified yet: blocks of pieces in progress, and whole pieces being hashed or written. */
  get bytesInFlight(): number {
    let n = 0
    for (const ap of this.active.values()) n += ap.receivedBytes
    for (const ap of this.verifying) if (!this.have.has(ap.index)) n += ap.length
    return n
  }

  fillAll(): void {
    for (const p of this.hooks.peers()) this.fill(p)
  }

  /** fillAll once, soon: after a burst of dropped requests (a choke fails them all at once). */
  scheduleFill(): void {
    if (this.fillScheduled) return
    this.fillScheduled = true
    setImmediate(() => {
      this.fillScheduled = false
      this.fillAll()
    })
  }

  /**
   * Keep `conn.depth` blocks requested from a peer that unchokes us, topped
   * up an eighth of the depth at a time (at most REFILL_MAX), so that
   * requests leave in batches rather than one per block received.
   */
  fill(conn: PeerConnection): void {
    if (!this.hooks.canRequest() || conn.closed || !conn.amInterested || conn.peerChoking) return
    const depth = this.depthOf(conn)
    const room = depth - conn.requests
    if (conn.requests > 0 && room < Math.min(REFILL_MAX, Math.max(REFILL_MIN, depth >> 3))) return
    const fromSeed = conn.isSeed
    while (conn.requests < depth) {
      const next = this.nextBlock(conn, fromSeed)
      if (!next) return
      if (!this.requestBlock(conn, next.piece, next.block)) return
    }
  }

  /** Whether a peer that is not a seed can send us this piece now: it has it, unchokes us and answers (not a dead or choking one). */
  private peerCanServe(index: number): boolean {
    for (const p of this.hooks.peers()) {
      if (!p.isSeed && !p.closed && !p.peerChoking && !p.snubbed && p.pieces?.has(index)) return true
    }
    return false
  }

  /** Blocks to keep asked of a peer: a quarter second of its rate if it is blockswarm, a second if another client (above its bandwidth-delay product), within bounds; one while it snubs us. */
  private depthOf(conn: PeerConnection): number {
    if (conn.snubbed) return 1
    return this.depth.get(conn) ?? Math.min(conn.maxRequests, DEPTH_MIN)
  }

  /** Set each peer's request depth from its current rate (once a tick). */
  retune(conn: PeerConnection): void {
    const seconds = conn.peerId !== undefined && isOurClient(conn.peerId) ? DEPTH_SECONDS : FOREIGN_DEPTH_SECONDS
    const want = Math.ceil((conn.download.rate() * seconds) / BLOCK_SIZE)
    this.depth.set(conn, Math.min(conn.maxRequests, Math.max(DEPTH_MIN, Math.min(DEPTH_MAX, want))))
  }

  /**
   * The next block to ask `conn` for: a block of an open piece it has, else
   * the first block of a new piece, else (endgame) one already asked of
   * another peer. From a seed, no block of a piece that a peer which is
   * not a seed can send us now (rarest first picks the pieces only seeds
   * have first): the seeds' uplink is the swarm's scarcest.
   */
  private nextBlock(conn: PeerConnection, fromSeed: boolean): { piece: ActivePiece<PeerConnection>; block: number } | undefined {
    const pieces = conn.pieces!
    const has = (i: number) => pieces.has(i)
    for (const ap of this.open) {
      if (!has(ap.index) || this.heldByAnother(ap, conn)) continue
      if (fromSeed && this.peerCanServe(ap.index)) continue // a peer can send it: not the seed's uplink
      const b = ap.nextMissing()
      if (b >= 0) return { piece: ap, block: b }
    }
    if (this.picker.missing > 0) {
      const index = this.picker.pick(has)
      if (index === undefined) {
        // what this peer has is still unchecked: it may be on the target already, so it is checked before it is fetched
        if (this.picker.uncheckedPieces > 0) {
          const u = this.picker.pickUnchecked(has)
          if (u !== undefined) this.hooks.checkFirst?.(u)
        }
        return undefined
      }
      const size = pieceSize(this.torrent.layout, index)
      const buffer = this.budget.tryAlloc(size)
      if (!buffer) {
        this.memoryStarved = true
        return undefined
      }
      const ap = new ActivePiece<PeerConnection>(index, size, buffer)
      // fetched again after a hash failure with several senders: from one peer only, to know whom to blame
      if (this.blame.isSuspect(index)) ap.soleSource = conn
      this.active.set(index, ap)
      this.open.add(ap)
      this.picker.setActive(index)
      return { piece: ap, block: ap.nextMissing() }
    }
    // endgame: every missing piece is in progress; ask for blocks already asked of others
    for (const ap of this.active.values()) {
      if (!has(ap.index) || this.heldByAnother(ap, conn)) continue
      if (fromSeed && this.peerCanServe(ap.index)) continue
      const b = ap.nextDuplicate(conn, ENDGAME_ASKERS)
      if (b >= 0) return { piece: ap, block: b }
    }
    return undefined
  }

  /**
   * A suspect piece is fetched from its sole source only; a sole source that
   * cannot deliver (gone, choking us, snubbed) hands the piece to `conn`, so a
   * deploy never waits forever on one peer.
   */
  private heldByAnother(ap: ActivePiece<PeerConnection>, conn: PeerConnection): boolean {
    const sole = ap.soleSource
    if (!sole || sole === conn) return false
    if (!sole.closed && !sole.peerChoking && !sole.snubbed) return true
    ap.soleSource = conn
    return false
  }

  /** Ask `conn` for a block; false when it cannot be asked now (closed, choking us). */
  private requestBlock(conn: PeerConnection, ap: ActivePiece<PeerConnection>, block: number): boolean {
    if (!conn.request(ap.index, ap.blockOffset(block), ap.blockLength(block))) return false
    ap.markRequested(block, conn)
    if (ap.missing === 0) this.open.delete(ap)
    return true
  }

  /** DownloadSink: a block we asked `conn` for (a view valid during the call). */
  block(conn: PeerConnection, index: number, offset: number, data: Uint8Array): void {
    const ap = this.active.get(index)
    if (!ap) return // finished meanwhile (an endgame duplicate) or dropped
    const block = offset / BLOCK_SIZE
    if (data.length !== ap.blockLength(block)) return conn.close(`protocol error: block ${index}:${block} of ${data.length} bytes`)
    const others = ap.receive(block, data, conn)
    if (!others) return
    for (const o of others) if (!o.closed) o.cancel(index, offset)
    if (ap.complete) this.complete(ap)
    this.fill(conn)
  }

  /** DownloadSink: a request that ended without its block (choke, cancel, timeout, the peer gone): the block is missing again. */
  dropped(conn: PeerConnection, index: number, offset: number): void {
    const ap = this.active.get(index)
    if (ap?.dropRequest(offset / BLOCK_SIZE, conn)) {
      this.open.add(ap)
      this.scheduleFill()
    }
  }

  /** A request went unanswered too long: take back (and cancel) everything asked of this peer. */
  snubbed(conn: PeerConnection): void {
    conn.cancelAll()
    this.fillAll()
  }

  /** The peer was banned: drop every block it sent to pieces still in progress. */
  discardFrom(conn: PeerConnection): void {
    for (const ap of this.active.values()) if (ap.discardFrom(conn) > 0) this.open.add(ap)
  }

  /**
   * A web seed takes a whole piece that no connected peer has (ok: it may
   * serve it): the piece is marked in progress and its buffer taken from the
   * budget. Give it back with webSeedPiece (data) or webSeedFailed.
   */
  reserveForWebSeed(ok: (index: number) => boolean): { index: number; buffer: Buffer } | undefined {
    if (!this.hooks.canRequest() || this.picker.missing === 0) return undefined
    const index = this.picker.pickUnheld(ok)
    if (index === undefined) return undefined
    const buffer = this.budget.tryAlloc(pieceSize(this.torrent.layout, index))
    if (!buffer) {
      this.memoryStarved = true
      return undefined
    }
    this.picker.setActive(index)
    return { index, buffer }
  }

  /** A web seed could not deliver a reserved piece: it is missing again. */
  webSeedFailed(index: number, buffer: Buffer): void {
    this.budget.free(buffer)
    this.picker.setMissing(index)
    this.scheduleFill()
  }

  /** A web seed delivered a whole reserved piece: verified and written like a peer's. Resolves false if it failed its hash. */
  async webSeedPiece(index: number, buffer: Buffer, digest: Buffer): Promise<boolean> {
    this.writing += buffer.length
    this.updateReadPause()
    try {
      if (!digest.equals(pieceHash(this.torrent, index))) {
        this.picker.setMissing(index)
        this.hashFailures++
        this.fillAll()
        return false
      }
      await this.store.writePiece(index, buffer)
    } catch (err) {
      this.picker.setMissing(index)
      this.hooks.onError(err as Error)
      return false
    } finally {
      this.writing -= buffer.length
      this.budget.free(buffer)
      this.updateReadPause()
    }
    this.have.add(index)
    this.picker.setDone(index)
    await this.hooks.onPiece(index)
    return true
  }

  /** Going offline: drop the pieces in progress (their buffers go back to the budget). */
  abort(): void {
    for (const ap of this.active.values()) {
      this.budget.free(ap.buffer)
      this.picker.setMissing(ap.index)
    }
    this.active.clear()
    this.open.clear()
  }

  private complete(ap: ActivePiece<PeerConnection>): void {
    this.active.delete(ap.index)
    this.open.delete(ap)
    this.writing += ap.length
    this.verifying.add(ap)
    this.updateReadPause()
    // after the block that completed it has been handled
    const job = Promise.resolve()
      .then(() => this.verifyAndWrite(ap))
      .then(() => {
        this.writing -= ap.length
        this.verifying.delete(ap)
        this.budget.free(ap.buffer)
        this.updateReadPause()
      })
    this.jobs.add(job)
    void job.finally(() => this.jobs.delete(job))
  }

  /** Check the hash, then write if it matches. */
  private async verifyAndWrite(ap: ActivePiece<PeerConnection>): Promise<void> {
    const index = ap.index
    const data = ap.buffer
    try {
      if (!ap.digest().equals(pieceHash(this.torrent, index))) {
        this.picker.setMissing(index)
        this.hashFailures++
        const culprits = this.blame.failed(ap, data)
        this.log.warn({ piece: index, senders: ap.contributors().map((p) => p.address) }, 'piece failed its hash check; fetching it again')
        for (const who of culprits) this.hooks.onBan(who, `sent data for piece ${index} that failed its SHA-1 check`)
        this.fillAll()
        return
      }
      for (const who of this.blame.passed(index, data)) this.hooks.onBan(who, `sent a corrupt block of piece ${index} (found when the piece passed)`)
      await this.store.writePiece(index, data)
    } catch (err) {
      this.picker.setMissing(index)
      this.hooks.onError(err as Error)
      return
    }
    this.have.add(index)
    this.picker.setDone(index)
    await this.hooks.onPiece(index)
  }

  /**
   * The hash/write queue holds over 3/4 of the budget: the disk is behind.
   * Stop reading sockets (TCP then pushes back on the peers) until it is
   * down to half.
   */
  private updateReadPause(): void {
    const capacity = this.budget.capacity
    if (!this.paused && this.writing > (capacity * 3) / 4) {
      this.paused = true
      for (const p of this.hooks.peers()) p.pauseReads()
    } else if (this.paused && this.writing <= capacity / 2) {
      this.paused = false
      for (const p of this.hooks.peers()) p.resumeReads()
    }
  }

  /** Wait for pieces being hashed or written; stop listening to the budget. */
  async close(): Promise<void> {
    this.budget.off('available', this.onMemory)
    while (this.jobs.size > 0) await Promise.allSettled([...this.jobs])
  }
}
