/**
 * The peers of one torrent, from dial to goodbye: whom to connect to
 * (PeerDialer: static list and tracker answers, with backoff), the
 * connections that come and go (ours and the listener's), which of them are
 * banned and why (BanList; this is where a peer is banned), and what each
 * connection's events mean for the torrent — pieces it has (availability for
 * the picker, our interest), requests for blocks (UploadServer), blocks we
 * asked for (PieceDownloader), choking (Choking).
 */
import type { Logger } from 'pino'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { pieceSize } from '../torrent/piece-map.js'
import { BanList, type PeerIdentity } from './ban-list.js'
import type { Choking } from './choking.js'
import { connectPeer, PeerConnection, REQUEST_TIMEOUT_MS, STALL_TIMEOUT_MS } from './peer-connection.js'
import { addressKey, type PeerAddress, PeerDialer } from './peer-dialer.js'
import type { PieceDownloader } from './piece-downloader.js'
import type { PiecePicker } from './piece-picker.js'
import type { PieceSet } from './piece-set.js'
import type { RateMeter } from './rate-meter.js'
import type { SwarmContext } from './swarm-context.js'
import type { Reveal, SeedStripes } from './seed-stripes.js'
import type { UploadServer } from './upload-server.js'
import { BLOCK_SIZE, MAX_QUEUED_REQUESTS } from './wire-messages.js'

export const CONNECT_TIMEOUT_MS = 10_000
/** How long we stay interested in a peer that has nothing we want, while we download (see updateInterest). */
export const INTEREST_GRACE_MS = 1500
/** Seeds remembered per torrent (seedsSeen), at most: a fleet's worth, and a bound against peer-id churn. */
export const SEEDS_SEEN_MAX = 10_000
/**
 * A HAVE to a peer that lacks the piece waits at most this long for another
 * message to that peer to ride with (a request or a block, ~10 a second to
 * each peer mid-deploy); a piece takes ~100 ms to send at 20 Mbit.
 */
export const HAVE_HOLD_MS = 50
/** …and only while this many of our peers have the piece too: a rare piece (a fresh one from the seeder) is told at once. */
export const HAVE_HOLD_MIN_HOLDERS = 2

/** After dialing for this long, a torrent that few peers have dialed dials more (dialLimit). */
export const DIAL_SETTLE_MS = 3000

/**
 * Connections a torrent dials at most: all of a limit up to 16, 40% (at
 * least 8) of a larger one: the rest is for peers that dial it, so the
 * average degree stays below the limit and a latecomer finds room. Once it
 * has dialed for DIAL_SETTLE_MS, a torrent that `incoming` peers have dialed
 * dials up to twice that 40% less them (within the limit): every node then
 * has about the average degree. Without that, a node that announced after
 * the others had dialed their 40% keeps its own 10 connections of 25 and
 * gets ~10/25 of a link (simulated, N = 100: the last node at 0.62 C all the
 * way, 1.44 × T*; dialing more after 3 s: 1.27 × T*; after 1 s the first
 * nodes fill each other again: 1.64).
 */
export function dialLimit(maxConnections: number, incoming = 0, dialingMs = 0): number {
  const base = maxConnections <= 16 ? maxConnections : Math.max(8, Math.floor(maxConnections * 0.4))
  if (dialingMs < DIAL_SETTLE_MS) return base
  return Math.min(maxConnections, Math.max(base, 2 * base - incoming))
}

/** What a peer has, as a predicate (nothing before its bitfield came). */
const piecesOf = (conn: PeerConnection) => (index: number) => conn.pieces?.has(index) ?? false

/** A peer seen to hold every piece (its bitfield and HAVEs). */
export interface SeedSeen {
  /** 40 hex digits. */
  readonly peerId: string
  /** "ip:port" when it was seen complete. */
  readonly address: string
  /** When it was first seen complete, ms since the epoch. */
  readonly at: number
}

export interface PeersDeps {
  readonly torrent: ExtentTorrent
  readonly ctx: SwarmContext
  readonly log: Logger
  readonly maxConnections: number
  readonly have: PieceSet
  readonly picker: PiecePicker
  readonly downloads: PieceDownloader
  readonly uploads: UploadServer
  readonly choking: () => Choking
  /** The torrent is online (takes peers, requests blocks). */
  readonly online: () => boolean
  /** Something a status reader would see has changed. */
  readonly changed: () => void
  /** The torrent's payload totals (every peer's bytes are counted here too). */
  readonly downloaded: RateMeter
  readonly uploaded: RateMeter
  /** A seeding-mode torrent under the fleet policy shows its pieces in stripes (seed-stripes.ts). */
  readonly stripes?: SeedStripes<PeerConnection>
}

export class SwarmPeers {
  private readonly connected = new Set<PeerConnection>()
  /** Pieces each peer has that we lack (our interest in it). */
  private readonly wanted = new Map<PeerConnection, number>()
  /** Peers with nothing we want, still told we are interested, and since when (see updateInterest). */
  private readonly interestIdle = new Map<PeerConnection, number>()
  readonly dialer = new PeerDialer()
  readonly bans = new BanList()
  /** Peers seen to have every piece, by peer id; kept after they leave (a seed closes its connection to another seed at once); at most SEEDS_SEEN_MAX. */
  readonly seedsSeen = new Map<string, SeedSeen>()
  private connecting = 0
  private haveTimer?: NodeJS.Timeout
  /** When dial() first ran (dialLimit's settling time). */
  private firstDialAt?: number

  constructor(private readonly d: PeersDeps) {}

  get size(): number {
    return this.connected.size
  }

  [Symbol.iterator](): Iterator<PeerConnection> {
    return this.connected[Symbol.iterator]()
  }

  /** Peers we know of that have not finished: connected non-seeds and dialable non-seeds. */
  get leechers(): number {
    let n = this.dialer.unfinished
    for (const p of this.connected) if (!p.isSeed) n++
    return n
  }

  // ---------------------------------------------------------------------------
  // Connecting

  /** Dial what is due, within the connection limit. */
  /**
   * Dial while there is room, keeping part of the connections for peers that
   * dial us (dialLimit): if every node dialed up to the limit, the first
   * nodes to come up would fill each other's slots and a latecomer would
   * find nobody to take it (measured in tools/sim: at N > 26 with 25
   * connections, 7 latecomers finished 20 s after the rest); after
   * DIAL_SETTLE_MS, a node few peers dialed dials more.
   */
  dial(): void {
    const now = performance.now()
    this.firstDialAt ??= now
    let outgoing = 0
    for (const c of this.connected) if (c.direction === 'out') outgoing++
    const limit = dialLimit(this.d.maxConnections, this.connected.size - outgoing, now - this.firstDialAt)
    const room = Math.min(this.d.maxConnections - this.connected.size, limit - outgoing) - this.connecting
    if (room <= 0) return
    // a peer that dialed us is not dialed back: that connection would only be closed as a duplicate (measured: without
    // this, each of 16 daemons opened ~300 TCP connections in a 73 s deploy, ~20 per peer, redialing the peers that had
    // dialed it every few seconds as the tracker listed them again)
    const live = new Set<string>()
    for (const c of this.connected) live.add(addressKey({ host: c.ip, port: c.listenPort }))
    const due = this.dialer.due(room, (a) => (this.d.have.complete && a.seed) || live.has(addressKey(a)) || this.bans.isBanned({ ip: a.host, port: a.port }))
    for (const a of due) this.connectTo(a)
  }

  private allowed(ip: string): boolean {
    return this.d.ctx.allowPeers?.allows(ip) ?? true
  }

  /** A peer a tracker answered with, or one local service discovery heard. */
  found(a: PeerAddress, source: 'tracker' | 'lsd' = 'tracker'): void {
    if (a.host === this.d.ctx.bind && a.port === this.d.ctx.port()) return // our own listener
    if (!this.allowed(a.host)) {
      this.d.log.debug({ peer: addressKey(a), allowed: String(this.d.ctx.allowPeers) }, `${source} peer outside --allow-peers: not dialed`)
      return
    }
    this.dialer.add(a, source)
    this.dial()
  }

  private connectTo(a: PeerAddress): void {
    const { ctx, log } = this.d
    this.connecting++
    log.debug({ peer: addressKey(a) }, 'dialing')
    const bind = ctx.bind && ctx.bind !== '0.0.0.0' && ctx.bind !== '::' ? ctx.bind : undefined
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
      log.debug({ peer: addressKey(a), err: err.message }, 'connect failed')
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
        log.warn({ peer: addressKey(a), ip, allowed: String(ctx.allowPeers) }, 'peer address outside --allow-peers: not connecting')
        return
      }
      const conn = new PeerConnection(socket, 'out', ip, a.port)
      if (!this.d.online()) {
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
      conn.once('handshake', (infoHash: string, peerId: string) => {
        if (infoHash !== this.d.torrent.infoHash) return conn.close('handshake for another torrent')
        if (peerId === ctx.peerId.toString('hex')) {
          this.dialer.markSelf(a)
          return conn.close('connected to ourselves')
        }
        attached = this.attach(conn)
        if (attached) this.dialer.connected(a)
      })
      this.sendHandshake(conn)
    })
  }

  private sendHandshake(conn: PeerConnection): void {
    conn.handshake(this.d.torrent.infoHash, this.d.ctx.peerId, { v: 'blockswarm', p: this.d.ctx.port(), reqq: MAX_QUEUED_REQUESTS })
  }

  /** An incoming connection whose handshake named this torrent. */
  adopt(conn: PeerConnection): void {
    if (!this.d.online()) return conn.close('torrent not active')
    if (conn.peerId === this.d.ctx.peerId.toString('hex')) {
      // we dialed our own address (a tracker lists us too): that side never sees a handshake, so it is told here,
      // or it would count a failure and dial again, and be listed again by the next announce
      this.dialer.markSelf({ host: conn.ip, port: this.d.ctx.port() })
      return conn.close('connected to ourselves')
    }
    this.sendHandshake(conn)
    this.attach(conn)
  }

  /** Take a handshaken connection into the swarm; false (and closed) if refused. */
  private attach(conn: PeerConnection): boolean {
    if (this.bans.isBanned(conn.identity)) {
      conn.close('banned')
      return false
    }
    const twin = [...this.connected].find((p) => p.peerId === conn.peerId)
    if (twin) {
      // both sides dialed: keep the connection opened by the side with the lower peer id
      const keepOutgoing = this.d.ctx.peerId.toString('hex') < (conn.peerId ?? '')
      const loser = (conn.direction === 'out') === keepOutgoing ? twin : conn
      loser.close('duplicate connection')
      if (loser === conn) return false
    }
    if (this.connected.size >= this.d.maxConnections) {
      conn.close('too many connections')
      return false
    }
    this.connected.add(conn)
    this.wanted.set(conn, 0)
    if (this.d.downloads.readsPaused) conn.pauseReads()
    this.wireUp(conn)
    const stripes = this.d.stripes
    if (stripes && !stripes.revealingAll) this.reveal(conn, stripes.attach(conn, piecesOf(conn)))
    else if (this.d.have.count > 0) conn.bitfield(this.d.have.bits)
    this.d.log.debug({ peer: conn.address, dir: conn.direction, client: conn.client }, 'peer connected')
    this.d.choking().fillSlots()
    return true
  }

  private wireUp(conn: PeerConnection): void {
    const { downloads, uploads } = this.d
    const timeout = this.d.ctx.requestTimeout ?? REQUEST_TIMEOUT_MS
    const stall = Math.min(this.d.ctx.peerStallTimeout ?? STALL_TIMEOUT_MS, timeout)
    conn.setTorrent(this.d.torrent.pieceCount, (index, offset, length) => this.checkBlock(index, offset, length))
    conn.setDownloadSink(downloads)
    conn.setRequestTimeout(timeout, stall)
    conn.on('bitfield', (gained: number[]) => {
      for (const i of gained) this.gained(conn, i)
      this.afterPieces(conn, gained)
    })
    conn.on('have', (index: number) => {
      this.gained(conn, index)
      this.afterPieces(conn, [index])
    })
    conn.on('unchoke', () => downloads.fill(conn))
    conn.on('interested', () => this.d.choking().gainedInterest(conn))
    conn.on('uninterested', () => this.d.choking().lostInterest())
    conn.on('request', (index: number, offset: number, length: number) => {
      uploads.request(conn, index, offset, length)
      const more = this.d.stripes?.requested(conn, index, piecesOf(conn))
      if (more) this.reveal(conn, more)
    })
    conn.on('cancel', (index: number, offset: number, length: number) => uploads.cancel(conn, index, offset, length))
    // no requested block for `stall` ms: take its requests back and leave it one; if that one gets no answer in `timeout` ms, drop it
    conn.on('timeout', () => {
      if (downloads.readsPaused) return // we stopped reading (the disk is behind): not the peer's fault
      if (conn.snubbed) {
        this.d.log.info({ peer: conn.address, timeoutMs: timeout }, 'peer answers no requests: disconnected')
        return conn.close(`requests timed out: no block in ${(stall + timeout) / 1000} s`)
      }
      this.d.log.debug({ peer: conn.address, requests: conn.requests, stallMs: stall }, 'peer stalled: its requests go elsewhere (snubbed)')
      conn.snub()
      downloads.snubbed(conn)
    })
    conn.on('download', (bytes: number) => this.d.downloaded.add(bytes))
    conn.on('upload', (bytes: number) => this.d.uploaded.add(bytes))
    conn.on('extended', () => {
      // its listen port is known now: it may be a banned address
      if (this.bans.isBanned(conn.identity)) conn.close('banned')
    })
    conn.once('close', (reason: string) => this.detach(conn, reason))
  }

  /** A block's header, before the connection buffers the block: one we ask for (in range, 16 KiB-aligned)? */
  private checkBlock(index: number, offset: number, length: number): string | undefined {
    const n = this.d.torrent.pieceCount
    if (index >= n) return `block of piece ${index} of ${n}`
    const size = pieceSize(this.d.torrent.layout, index)
    if (offset % BLOCK_SIZE !== 0 || length !== Math.min(BLOCK_SIZE, size - offset)) {
      return `block of ${length} bytes at ${offset} of piece ${index} (${size} bytes), not a ${BLOCK_SIZE / 1024} KiB block we ask for`
    }
    return undefined
  }

  private gained(conn: PeerConnection, index: number): void {
    this.d.picker.peerHas(index)
    if (!this.d.have.has(index)) this.wanted.set(conn, (this.wanted.get(conn) ?? 0) + 1)
  }

  private afterPieces(conn: PeerConnection, gained: readonly number[]): void {
    const stripes = this.d.stripes
    if (stripes && !stripes.revealingAll) {
      for (const i of gained) {
        const more = stripes.peerHas(conn, i, piecesOf(conn))
        if (more) this.reveal(conn, more)
      }
    }
    if (conn.isSeed) {
      this.dialer.markSeed({ host: conn.ip, port: conn.listenPort })
      if (conn.peerId && !this.seedsSeen.has(conn.peerId)) {
        // bounded: the oldest is forgotten first (a Map iterates in insertion order)
        if (this.seedsSeen.size >= SEEDS_SEEN_MAX) this.seedsSeen.delete(this.seedsSeen.keys().next().value!)
        this.seedsSeen.set(conn.peerId, { peerId: conn.peerId, address: conn.address, at: Date.now() })
      }
      // a striping seeder first shows it the rest, and lets it close: it must see us as a seed too
      if (stripes && !stripes.revealingAll) return this.reveal(conn, stripes.peerComplete(conn))
      if (this.d.have.complete) return conn.close('both sides are seeds', true)
    }
    this.updateInterest(conn)
    this.d.downloads.fill(conn)
  }

  /**
   * Interested while the peer has a piece we lack. Losing interest waits a
   * tick or two while we still download (see lapseInterest): a striping
   * seeder shows the next pieces just after we announce the last ones, and a
   * NOT_INTERESTED followed at once by INTERESTED races the choke it draws:
   * requests sent meanwhile are answered twice (measured: a whole piece
   * fetched twice on a resumed deploy).
   */
  private updateInterest(conn: PeerConnection): void {
    if ((this.wanted.get(conn) ?? 0) > 0 && !this.d.have.complete) {
      this.interestIdle.delete(conn)
      conn.interested()
    } else if (this.d.have.complete || !conn.amInterested) {
      this.interestIdle.delete(conn)
      conn.uninterested()
    } else if (!this.interestIdle.has(conn)) {
      this.interestIdle.set(conn, performance.now())
    }
  }

  /** Once a tick: NOT_INTERESTED to peers that have had nothing we want for INTEREST_GRACE_MS. */
  lapseInterest(): void {
    const now = performance.now()
    for (const [conn, since] of this.interestIdle) {
      if (now - since < INTEREST_GRACE_MS) continue
      this.interestIdle.delete(conn)
      if ((this.wanted.get(conn) ?? 0) === 0 && !conn.closed) conn.uninterested()
    }
  }

  private detach(conn: PeerConnection, reason: string): void {
    if (!this.connected.delete(conn)) return
    this.wanted.delete(conn)
    this.interestIdle.delete(conn)
    this.d.log.debug({ peer: conn.address, reason }, 'peer gone')
    if (conn.misbehaved) {
      this.d.downloads.discardFrom(conn)
      this.ban(conn.identity, reason)
    }
    const pieces = conn.pieces
    if (pieces && pieces.count > 0) {
      for (let i = 0; i < this.d.torrent.pieceCount; i++) if (pieces.has(i)) this.d.picker.peerLost(i)
    }
    this.d.uploads.clear(conn)
    this.d.stripes?.detach(conn)
    this.d.choking().forget(conn)
    if (this.d.online()) {
      this.d.choking().fillSlots()
      this.d.downloads.fillAll()
    }
  }

  // ---------------------------------------------------------------------------
  // What the torrent tells its peers

  /** Once a tick: the HAVEs held back (haveLater) that no message of ours carried yet go out, so none is more than a tick late. */
  haveTick(): void {
    for (const p of this.connected) p.flushHaves()
  }

  /** Once a tick, for a striping seeder: new stripes for peers that need them, or everything to everyone. */
  stripeTick(): void {
    const stripes = this.d.stripes
    if (!stripes || stripes.revealingAll) return
    for (const [conn, r] of stripes.tick(piecesOf)) if (!conn.closed) this.reveal(conn, r)
  }

  /** Show a peer pieces of a striping seeder: HAVE for each (a bitfield only if it is the first message). */
  private reveal(conn: PeerConnection, r: Reveal): void {
    if ('have' in r) {
      for (const i of r.have) conn.have(i)
      return
    }
    if (!r.except) return conn.bitfield(this.d.have.bits)
    for (let i = 0; i < this.d.torrent.pieceCount; i++) if (!r.except.has(i)) conn.have(i)
  }

  /** We verified and wrote a piece: every peer hears of it; interest goes where nothing more is wanted. */
  havePiece(index: number): void {
    const common = this.d.picker.availability(index) >= HAVE_HOLD_MIN_HOLDERS
    for (const p of this.connected) {
      const theirs = p.pieces!.has(index)
      // a seed hears at once (a seeder's stripes move on HAVEs); a peer that has it will not ask for it, so it hears with
      // our next message or at the next tick; one that lacks it, of a rare piece at once, else with our next message or
      // within HAVE_HOLD_MS
      if (p.isSeed || (!theirs && !common)) p.have(index)
      else p.haveLater(index, !theirs)
      if (theirs) {
        const left = (this.wanted.get(p) ?? 1) - 1
        this.wanted.set(p, left)
        if (left === 0) this.updateInterest(p)
      }
    }
    if (!this.haveTimer) {
      this.haveTimer = setTimeout(() => {
        this.haveTimer = undefined
        for (const p of this.connected) if (p.hasUrgentHaves) p.flushHaves()
      }, HAVE_HOLD_MS)
      this.haveTimer.unref()
    }
  }

  /** We became a seed: seeds have nothing to say to each other; the others lose our interest. */
  nowSeeding(): void {
    for (const p of [...this.connected]) {
      p.flushHaves()
      if (p.isSeed) p.close('both sides are seeds', true)
      else this.updateInterest(p)
    }
  }

  /** Ban a peer (ip:port and peer id): its blocks in progress are discarded, its connections closed, its address forgotten. */
  ban(who: PeerIdentity, reason: string): void {
    const entry = this.bans.ban(who, reason)
    this.d.log.warn({ peer: entry.peer, reason }, 'peer banned')
    for (const p of [...this.connected]) {
      if (!this.bans.isBanned(p.identity)) continue
      this.d.downloads.discardFrom(p)
      p.close(`banned: ${reason}`)
    }
    this.dialer.remove({ host: who.ip, port: who.port })
    this.d.changed()
  }

  /** Going offline: every connection closes. */
  closeAll(reason: string): void {
    clearTimeout(this.haveTimer)
    this.haveTimer = undefined
    for (const p of [...this.connected]) p.close(reason)
  }
}
