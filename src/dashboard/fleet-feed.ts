/**
 * Feeds the fleet model (fleet-model.ts) of every torrent a session holds:
 * the embedded tracker's announces as they are answered, and once a second
 * what the session sees (its upload, each connected peer's pieces, the peers
 * it saw complete, also those that left). Emits 'change' with the info-hash
 * whenever a torrent's fleet may look different.
 */
import { EventEmitter } from 'node:events'
import type { Session } from '../session/session.js'
import { type AnnounceEvent, FleetModel, type FleetSnapshot } from './fleet-model.js'

/** What bittorrent-tracker's Server emits after answering an announce: 'start', 'update', 'complete', 'stop' with (addr, params). */
export interface AnnounceEmitter {
  on(event: string, listener: (addr: string, params: Record<string, unknown>) => void): unknown
  off(event: string, listener: (addr: string, params: Record<string, unknown>) => void): unknown
}

export interface FleetFeedOptions {
  /** The announce interval the nodes were asked for, seconds (silent = two of them). */
  readonly announceInterval: number
  /** The embedded tracker, when there is one. */
  readonly tracker?: AnnounceEmitter
  /** How often the session is looked at, ms (1000). */
  readonly tickMs?: number
}

const EVENTS: Readonly<Record<string, AnnounceEvent>> = { start: 'started', update: 'update', complete: 'completed', stop: 'stopped' }

const count = (v: unknown): number => {
  const n = Number(v)
  return Number.isFinite(n) && n >= 0 ? n : 0
}

export class FleetFeed extends EventEmitter {
  private readonly models = new Map<string, FleetModel>()
  private readonly timer: NodeJS.Timeout
  private readonly hooks: [string, (addr: string, params: Record<string, unknown>) => void][] = []

  constructor(
    private readonly session: Session,
    private readonly opts: FleetFeedOptions,
  ) {
    super()
    for (const [name, event] of Object.entries(EVENTS)) {
      const fn = (_addr: string, params: Record<string, unknown>) => this.announced(event, params)
      opts.tracker?.on(name, fn)
      this.hooks.push([name, fn])
    }
    this.timer = setInterval(() => this.tick(), opts.tickMs ?? 1000)
    this.timer.unref()
    this.tick()
  }

  /** The info-hashes with a fleet, in the order they were added. */
  hashes(): string[] {
    return [...this.models.keys()]
  }

  /** The fleet of one torrent (the first one when no hash is given). */
  snapshot(hash?: string): FleetSnapshot | undefined {
    const h = hash?.toLowerCase() ?? this.hashes()[0]
    return h === undefined ? undefined : this.models.get(h)?.snapshot(Date.now())
  }

  close(): void {
    clearInterval(this.timer)
    for (const [name, fn] of this.hooks) this.opts.tracker?.off(name, fn)
  }

  private model(hash: string): FleetModel | undefined {
    let m = this.models.get(hash)
    if (m) return m
    const torrent = this.session.torrent(hash)
    if (!torrent) return undefined
    m = new FleetModel({
      infoHash: torrent.infoHash,
      name: torrent.name,
      size: torrent.totalLength,
      pieceCount: torrent.pieceCount,
      pieceLength: torrent.pieceLength,
      seederPeerId: this.session.peerId.toString('hex'),
      seederUploadLimit: this.session.uploadLimitNow,
      announceInterval: this.opts.announceInterval,
      tracker: this.opts.tracker !== undefined,
    })
    this.models.set(hash, m)
    return m
  }

  private announced(event: AnnounceEvent, params: Record<string, unknown>): void {
    const hash = String(params.info_hash ?? '').toLowerCase()
    const m = this.model(hash)
    if (!m) return
    const left = Number(params.left)
    const fact = {
      peerId: String(params.peer_id ?? ''),
      ip: String(params.ip ?? ''),
      port: count(params.port),
      uploaded: count(params.uploaded),
      downloaded: count(params.downloaded),
      left: Number.isFinite(left) && left >= 0 ? left : Number.MAX_SAFE_INTEGER,
      event,
      at: Date.now(),
    }
    if (m.announce(fact)) this.emit('change', hash)
  }

  private tick(): void {
    const at = Date.now()
    for (const s of this.session.status()) {
      const m = this.model(s.infoHash)
      if (!m) continue
      m.observe({ at, seederUploadRate: s.uploadRate, seederUploaded: s.totalUploaded, peers: this.session.peerPieces(s.infoHash), seeds: this.session.seedsSeen(s.infoHash) })
      this.emit('change', s.infoHash)
    }
    for (const h of this.models.keys()) if (!this.session.torrent(h)) this.models.delete(h)
  }
}
