/**
 * Announces a torrent to its HTTP/UDP trackers (bittorrent-tracker's Client)
 * and hands the peers they return to the swarm. Besides the tracker's own
 * interval, it re-announces every `reannounceMs` while the swarm asks for it
 * (wants peers, or fresh seed/leecher counts), so nodes that boot late still
 * find each other within seconds; and it sends the completed and stopped
 * events. A failing tracker is retried with exponential backoff (whether or
 * not the swarm asks) and its failure is reported in `error` until an
 * announce succeeds again.
 */
import { EventEmitter } from 'node:events'
import type { AnnounceOpts, Client } from 'bittorrent-tracker'
import type { Logger } from 'pino'
import { parsePeerAddress, type PeerAddress } from './peer-dialer.js'

export interface TrackerClientOptions {
  readonly infoHash: string
  readonly peerId: Buffer
  readonly trackers: readonly string[]
  /** Our BitTorrent listen port, announced to the tracker. */
  readonly port: number
  readonly stats: () => Required<Pick<AnnounceOpts, 'uploaded' | 'downloaded' | 'left'>>
  /** Whether to re-announce early (the swarm wants more peers, or fresh counts). */
  readonly wantsUpdate: () => boolean
  /** Early re-announce period, and the first retry delay after a failure (doubling up to BACKOFF_MAX_MS). */
  readonly reannounceMs?: number
  readonly log: Logger
}

export const DEFAULT_REANNOUNCE_MS = 15_000
/** Longest wait between two announces to a failing tracker. */
export const BACKOFF_MAX_MS = 120_000

/** A failed announce: what went wrong, how many in a row, and when the next try is. */
export interface TrackerFailure {
  readonly error: string
  readonly failures: number
  readonly retryInMs: number
}

/** "connect ECONNREFUSED 127.0.0.1:1" rather than fetch's bare "fetch failed". */
function reasonOf(err: Error): string {
  const cause = (err as { cause?: unknown }).cause
  return cause instanceof Error && cause.message ? cause.message : err.message
}

/**
 * bittorrent-tracker, loaded at the first start: it brings WebRTC and
 * WebSocket code that a swarm of static peers never uses (measured: 10-12 MiB
 * of a deploy's peak RSS, ~0.2 s of CPU).
 */
let trackerModule: Promise<typeof import('bittorrent-tracker')> | undefined

/** Emits 'peer' (PeerAddress), 'update' ({ complete, incomplete }) and 'failure' (TrackerFailure). */
export class TrackerClient extends EventEmitter {
  /** The announcing client, once bittorrent-tracker is loaded. */
  private client?: Client
  /** completed() came before the client was there. */
  private completedPending = false
  private readonly reannounceMs: number
  private timer?: NodeJS.Timeout
  private stopped = false
  /** Failed announces since the last one that worked, the last reason, and when the next try is due. */
  private failures = 0
  private lastError = ''
  private nextAt = 0
  /** Seeds and leechers the tracker last reported (summed over trackers), when known. */
  swarmCounts?: { complete: number; incomplete: number }

  constructor(private readonly opts: TrackerClientOptions) {
    super()
    this.reannounceMs = opts.reannounceMs ?? DEFAULT_REANNOUNCE_MS
  }

  private makeClient(Core: typeof Client): Client {
    const opts = this.opts
    const client = new Core({
      infoHash: opts.infoHash,
      peerId: opts.peerId,
      announce: [...opts.trackers],
      port: opts.port,
      getAnnounceOpts: () => opts.stats(),
      userAgent: 'blockswarm',
    })
    client.on('peer', (addr: string) => {
      try {
        this.emit('peer', parsePeerAddress(addr) satisfies PeerAddress)
      } catch {
        opts.log.debug({ addr }, 'tracker gave an unusable peer address')
      }
    })
    client.on('update', (u: { announce: string; complete?: number; incomplete?: number }) => {
      if (this.failures > 0 && !this.stopped) {
        opts.log.info({ tracker: u.announce, after: this.failures }, 'tracker announce works again')
        this.failures = 0
        this.lastError = ''
        this.schedule(this.reannounceMs)
      }
      if (typeof u.complete === 'number' && typeof u.incomplete === 'number') {
        this.swarmCounts = { complete: u.complete, incomplete: u.incomplete }
        this.emit('update', this.swarmCounts)
      }
    })
    client.on('warning', (err: Error) => this.failed(err))
    client.on('error', (err: Error) => this.failed(err))
    return client
  }

  private failed(err: Error): void {
    if (this.stopped) return
    this.failures++
    this.lastError = reasonOf(err)
    const retryInMs = Math.min(BACKOFF_MAX_MS, this.reannounceMs * 2 ** (this.failures - 1))
    this.schedule(retryInMs)
    this.opts.log.warn({ trackers: this.opts.trackers, err: this.lastError, failures: this.failures, retryInSeconds: retryInMs / 1000 }, 'tracker announce failed')
    this.emit('failure', { error: this.lastError, failures: this.failures, retryInMs } satisfies TrackerFailure)
  }

  /** Why announcing fails, while it does (or did when stopped): the tracker(s), the reason, the count, the next try. */
  get error(): string | undefined {
    if (this.failures === 0) return undefined
    const urls = this.opts.trackers.length === 1 ? this.opts.trackers[0] : `one of ${this.opts.trackers.join(', ')}`
    const next = this.stopped ? '' : `; next try in ${Math.max(0, Math.ceil((this.nextAt - Date.now()) / 1000))} s`
    return `announce to ${urls} failed (${this.failures}× in a row): ${this.lastError}${next}`
  }

  start(): void {
    trackerModule ??= import('bittorrent-tracker')
    trackerModule.then(
      ({ Client: Core }) => {
        if (this.stopped || this.client) return
        this.client = this.makeClient(Core)
        this.client.start()
        if (this.completedPending) this.client.complete()
        this.schedule(this.reannounceMs)
      },
      (err: Error) => this.failed(err),
    )
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer)
    this.nextAt = Date.now() + ms
    this.timer = setTimeout(() => {
      // a failing tracker is retried whether or not the swarm asks: our last announce did not reach it
      if (this.failures > 0 || this.opts.wantsUpdate()) this.client?.update()
      this.schedule(this.reannounceMs)
    }, ms)
    this.timer.unref()
  }

  completed(): void {
    if (this.client) this.client.complete()
    else this.completedPending = true
  }

  /** Send 'stopped' and release the client; resolves when the announces are done (bounded by the tracker timeouts). */
  stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    const client = this.client
    if (!client) return Promise.resolve()
    client.stop()
    return new Promise((resolve) => {
      const t = setTimeout(resolve, 2000)
      t.unref()
      client.destroy(() => {
        clearTimeout(t)
        resolve()
      })
    })
  }
}
