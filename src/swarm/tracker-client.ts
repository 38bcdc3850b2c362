/**
 * Announces a torrent to its HTTP/UDP trackers (bittorrent-tracker's Client)
 * and hands the peers they return to the swarm. Besides the tracker's own
 * interval, it re-announces every `reannounceMs` while the swarm asks for it
 * (wants peers, or fresh seed/leecher counts), so nodes that boot late still
 * find each other within seconds; and it sends the completed and stopped
 * events.
 */
import { EventEmitter } from 'node:events'
import { Client, type AnnounceOpts } from 'bittorrent-tracker'
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
  readonly reannounceMs?: number
  readonly log: Logger
}

export const DEFAULT_REANNOUNCE_MS = 15_000

/** Emits 'peer' (PeerAddress) and 'update' ({ complete, incomplete }). */
export class TrackerClient extends EventEmitter {
  private readonly client: Client
  private timer?: NodeJS.Timeout
  /** Seeds and leechers the tracker last reported (summed over trackers), when known. */
  swarmCounts?: { complete: number; incomplete: number }

  constructor(private readonly opts: TrackerClientOptions) {
    super()
    this.client = new Client({
      infoHash: opts.infoHash,
      peerId: opts.peerId,
      announce: [...opts.trackers],
      port: opts.port,
      getAnnounceOpts: () => opts.stats(),
      userAgent: 'blockswarm',
    })
    this.client.on('peer', (addr: string) => {
      try {
        this.emit('peer', parsePeerAddress(addr) satisfies PeerAddress)
      } catch {
        opts.log.debug({ addr }, 'tracker gave an unusable peer address')
      }
    })
    this.client.on('update', (u: { announce: string; complete?: number; incomplete?: number }) => {
      if (typeof u.complete === 'number' && typeof u.incomplete === 'number') {
        this.swarmCounts = { complete: u.complete, incomplete: u.incomplete }
        this.emit('update', this.swarmCounts)
      }
    })
    const report = (err: Error) => opts.log.warn({ trackers: opts.trackers, err: err.message }, 'tracker announce failed')
    this.client.on('warning', report)
    this.client.on('error', report)
  }

  start(): void {
    this.client.start()
    this.timer = setInterval(() => {
      if (this.opts.wantsUpdate()) this.client.update()
    }, this.opts.reannounceMs ?? DEFAULT_REANNOUNCE_MS)
    this.timer.unref()
  }

  completed(): void {
    this.client.complete()
  }

  /** Send 'stopped' and release the client; resolves when the announces are done (bounded by the tracker timeouts). */
  stop(): Promise<void> {
    clearInterval(this.timer)
    this.client.stop()
    return new Promise((resolve) => {
      const t = setTimeout(resolve, 2000)
      t.unref()
      this.client.destroy(() => {
        clearTimeout(t)
        resolve()
      })
    })
  }
}
