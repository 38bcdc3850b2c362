/**
 * Announces a torrent to its trackers (HTTP and HTTPS: tracker-announce.ts,
 * UDP: tracker-udp.ts) and hands the peers they return to the swarm. Each
 * tracker is announced to on its own: 'started' first (again until one gets
 * through), 'completed' when the download finishes, 'stopped' at the end,
 * and a regular announce at the tracker's interval. Besides that interval, it
 * re-announces every `reannounceMs` while the swarm asks for it (wants peers,
 * or fresh seed/leecher counts), so nodes that boot late still find each
 * other within seconds. A failing tracker is retried with exponential
 * backoff (whether or not the swarm asks) and its failure is reported in
 * `error` until an announce to it succeeds again. Other schemes (WebSocket
 * trackers, which hand out WebRTC peers) are left out with a log line.
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { PeerAddress } from './peer-dialer.js'
import { type AnnounceAnswer, type AnnounceEvent, type Announcer, httpAnnouncer } from './tracker-announce.js'
import { UdpTracker } from './tracker-udp.js'

export interface TrackerClientOptions {
  readonly infoHash: string
  readonly peerId: Buffer
  readonly trackers: readonly string[]
  /** Our BitTorrent listen port, announced to the tracker. */
  readonly port: number
  readonly stats: () => { uploaded: number; downloaded: number; left: number }
  /** Whether to re-announce early (the swarm wants more peers, or fresh counts). */
  readonly wantsUpdate: () => boolean
  /** Early re-announce period, and the first retry delay after a failure (doubling up to BACKOFF_MAX_MS). */
  readonly reannounceMs?: number
  readonly log: Logger
}

export const DEFAULT_REANNOUNCE_MS = 15_000
/** Longest wait between two announces to a failing tracker. */
export const BACKOFF_MAX_MS = 120_000
/** How long one announce may take. */
export const ANNOUNCE_TIMEOUT_MS = 15_000
/** How long stop() waits for the 'stopped' announces. */
const STOP_TIMEOUT_MS = 2_000
/** Peers asked for in each announce. */
const NUMWANT = 50
/** The tracker's interval is kept within these bounds (a tracker may say 0, or a day). */
const MIN_INTERVAL_MS = 1_000
const MAX_INTERVAL_MS = 3_600_000

/** A failed announce: to which tracker, what went wrong, how many in a row, and when the next try is. */
export interface TrackerFailure {
  readonly tracker: string
  readonly error: string
  readonly failures: number
  readonly retryInMs: number
}

/** The announcer for `url`, or why blockswarm cannot announce there. */
export function announcerFor(url: string): Announcer | { unsupported: string } {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return { unsupported: 'not a URL' }
  }
  if (u.protocol === 'http:' || u.protocol === 'https:') return httpAnnouncer(u)
  if (u.protocol === 'udp:') {
    const udp = new UdpTracker(u)
    return (req, opts) => udp.announce(req, opts)
  }
  return { unsupported: `${u.protocol.replace(/:$/, '')} trackers are not supported (blockswarm announces over http, https and udp)` }
}

/** One tracker's announce state. */
interface Tracker {
  readonly url: string
  readonly announce: Announcer
  /** A 'started' announce got through. */
  started: boolean
  /** The download finished and this tracker has not been told yet. */
  completedPending: boolean
  /** The announce under way, if one is. */
  inFlight?: AbortController
  intervalMs: number
  lastOkAt: number
  trackerId?: string
  /** The last warning message it sent (logged once). */
  warning?: string
  /** Failed announces since the last one that worked, the last reason, and when the next try is due. */
  failures: number
  lastError: string
  nextAt: number
  timer?: NodeJS.Timeout
}

/** Emits 'peer' (PeerAddress), 'update' ({ complete, incomplete }) and 'failure' (TrackerFailure). */
export class TrackerClient extends EventEmitter {
  private readonly reannounceMs: number
  private readonly trackers: Tracker[] = []
  private readonly infoHash: Buffer
  /** BEP 3's key: one random number for this client's announces. */
  private readonly key = randomBytes(4).readUInt32BE(0)
  private stopped = false
  /** Seeds and leechers the tracker that answered last reported, when known. */
  swarmCounts?: { complete: number; incomplete: number }

  constructor(private readonly opts: TrackerClientOptions) {
    super()
    this.reannounceMs = opts.reannounceMs ?? DEFAULT_REANNOUNCE_MS
    this.infoHash = Buffer.from(opts.infoHash, 'hex')
    for (const url of opts.trackers) {
      const announce = announcerFor(url)
      if ('unsupported' in announce) {
        opts.log.warn({ tracker: url, why: announce.unsupported }, 'tracker not announced to')
        continue
      }
      this.trackers.push({ url, announce, started: false, completedPending: false, intervalMs: this.reannounceMs, lastOkAt: 0, failures: 0, lastError: '', nextAt: 0 })
    }
  }

  /** Why announcing fails, while it does (or did when stopped): each failing tracker, the reason, the count, the next try. */
  get error(): string | undefined {
    const failing = this.trackers.filter((t) => t.failures > 0)
    if (failing.length === 0) return undefined
    return failing
      .map((t) => {
        const next = this.stopped ? '' : `; next try in ${Math.max(0, Math.ceil((t.nextAt - Date.now()) / 1000))} s`
        return `announce to ${t.url} failed (${t.failures}× in a row): ${t.lastError}${next}`
      })
      .join('; ')
  }

  start(): void {
    for (const t of this.trackers) void this.announceTo(t)
  }

  /** The download finished: tell every tracker (after its 'started', if that has not got through yet). */
  completed(): void {
    for (const t of this.trackers) {
      t.completedPending = true
      if (t.started && !t.inFlight && !this.stopped) void this.announceTo(t)
    }
  }

  /** Send 'stopped' to the trackers that know us; resolves when those announces are done (within STOP_TIMEOUT_MS). */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    const sends: Promise<unknown>[] = []
    for (const t of this.trackers) {
      clearTimeout(t.timer)
      const knowsUs = t.started || t.inFlight !== undefined
      t.inFlight?.abort()
      t.inFlight = undefined
      if (knowsUs) sends.push(t.announce(this.request(t, 'stopped'), { timeoutMs: STOP_TIMEOUT_MS }).catch(() => {}))
    }
    await Promise.all(sends)
  }

  private request(t: Tracker, event: AnnounceEvent | undefined) {
    return { ...this.opts.stats(), infoHash: this.infoHash, peerId: this.opts.peerId, port: this.opts.port, event, numwant: NUMWANT, key: this.key, trackerId: t.trackerId }
  }

  private async announceTo(t: Tracker): Promise<void> {
    if (this.stopped || t.inFlight) return
    clearTimeout(t.timer)
    const event: AnnounceEvent | undefined = !t.started ? 'started' : t.completedPending ? 'completed' : undefined
    const ac = new AbortController()
    t.inFlight = ac
    let answer: AnnounceAnswer
    try {
      answer = await t.announce(this.request(t, event), { timeoutMs: ANNOUNCE_TIMEOUT_MS, signal: ac.signal })
    } catch (err) {
      if (t.inFlight !== ac) return // stopped meanwhile
      t.inFlight = undefined
      this.failed(t, err as Error)
      return
    }
    if (t.inFlight !== ac) return
    t.inFlight = undefined
    this.answered(t, answer, event)
  }

  private answered(t: Tracker, answer: AnnounceAnswer, event: AnnounceEvent | undefined): void {
    if (event === 'started') t.started = true
    if (event === 'completed') t.completedPending = false
    t.lastOkAt = Date.now()
    t.intervalMs = Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, answer.interval * 1000))
    if (answer.trackerId !== undefined) t.trackerId = answer.trackerId
    if (answer.warning !== undefined && answer.warning !== t.warning) this.opts.log.warn({ tracker: t.url, warning: answer.warning }, 'tracker warning')
    t.warning = answer.warning
    if (t.failures > 0) {
      this.opts.log.info({ tracker: t.url, after: t.failures }, 'tracker announce works again')
      t.failures = 0
      t.lastError = ''
    }
    for (const p of answer.peers) this.emit('peer', p satisfies PeerAddress)
    if (answer.complete !== undefined && answer.incomplete !== undefined) {
      this.swarmCounts = { complete: answer.complete, incomplete: answer.incomplete }
      this.emit('update', this.swarmCounts)
    }
    if (t.completedPending) void this.announceTo(t)
    else this.schedule(t, Math.min(this.reannounceMs, t.intervalMs))
  }

  private failed(t: Tracker, err: Error): void {
    t.failures++
    t.lastError = err.message
    const retryInMs = Math.min(BACKOFF_MAX_MS, this.reannounceMs * 2 ** (t.failures - 1))
    this.schedule(t, retryInMs)
    this.opts.log.warn({ tracker: t.url, err: t.lastError, failures: t.failures, retryInSeconds: retryInMs / 1000 }, 'tracker announce failed')
    this.emit('failure', { tracker: t.url, error: t.lastError, failures: t.failures, retryInMs } satisfies TrackerFailure)
  }

  private schedule(t: Tracker, ms: number): void {
    clearTimeout(t.timer)
    t.nextAt = Date.now() + ms
    t.timer = setTimeout(() => {
      // a failing tracker is retried whether or not the swarm asks: our last announce did not reach it
      const due = t.failures > 0 || t.completedPending || Date.now() >= t.lastOkAt + t.intervalMs || this.opts.wantsUpdate()
      if (due) void this.announceTo(t)
      else this.schedule(t, this.reannounceMs)
    }, ms)
    t.timer.unref()
  }
}
