/**
 * Web seeds: HTTP servers that hold the torrent's data (BEP 19 `url-list`).
 *
 * Two layouts:
 * - "extents": the URL is a directory over an extents directory, each
 *   extent at `URL/NAME/<32-hex offset>` (as aria2, libtorrent and
 *   transmission build it for a multi-file torrent);
 * - "image": the URL is one raw disk image; an extent is read at its byte
 *   offset in that file.
 *
 * A web seed is asked for whole pieces, and only for pieces no connected
 * peer has (the fleet takes what it can from each other; HTTP fills in what
 * nobody holds yet). Each piece is read with HTTP/1.1 Range requests over
 * keep-alive connections, at most `connections` pieces in flight per server,
 * and goes through the downloader's verify-and-write path like a peer's.
 * An answer is taken only when it is exactly the range asked for (206 with a
 * matching Content-Range, or 200 for a whole extent file of that length): a
 * server that ignores Range, or sends more or fewer bytes, is an error,
 * never written. A piece that failed its hash, or a file the server does not
 * have (404/410), is not asked of that server again; other faults (5xx, a
 * stall, a connection closed early) back the server off, 1 s doubling to
 * 60 s, and it is tried again.
 */
import { createHash } from 'node:crypto'
import type http from 'node:http'
import type { Logger } from 'pino'
import { TokenBucket } from '../services/rate-limit.js'
import { extentName } from '../torrent/extents.js'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { mapPieceRange, pieceSize } from '../torrent/piece-map.js'
import type { PieceDownloader } from './piece-downloader.js'
import { RateMeter } from './rate-meter.js'
import type { WebSeedKind, WebSeedStatus } from './status.js'

export type { WebSeedKind, WebSeedStatus }

export interface WebSeedSpec {
  readonly url: string
  readonly kind: WebSeedKind
}

export interface WebSeedOptions {
  /** Pieces in flight per server (HTTP connections). */
  readonly connections: number
  /** Bytes/s from all web seeds of the torrent together; 0 = no cap. */
  readonly rate: number
  /** No data for this long ends a request as stalled. */
  readonly timeoutMs: number
  readonly log: Logger
  /** Payload bytes came from a web seed (the torrent's download meter). */
  readonly onBytes: (n: number) => void
  /** Some connected peer sends us data (unchokes us): a web seed is then only an extra source, one piece at a time. */
  readonly peersServing: () => boolean
}

export const WEB_SEED_CONNECTIONS = 4
export const WEB_SEED_TIMEOUT_MS = 30_000
const BACKOFF_MIN_MS = 1000
const BACKOFF_MAX_MS = 60_000

/** node:http and node:https, loaded when a torrent has a web seed (not at every start). */
interface HttpModules {
  readonly http: typeof import('node:http')
  readonly https: typeof import('node:https')
}

/** A fault of one request: `piece` set when only that piece is affected (the server lacks the file). */
class WebSeedError extends Error {
  constructor(
    message: string,
    readonly pieceOnly = false,
  ) {
    super(message)
  }
}

/** Why `url` cannot be a web seed (only http:// and https:// URLs can), as a message starting with `what`; undefined when it can. */
export function webSeedUrlError(url: string, what: string): string | undefined {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return `${what} ${JSON.stringify(url)} is not a URL`
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `${what} ${url}: only http:// and https:// URLs are supported`
  return undefined
}

/** The URL of one extent file under an extents-directory web seed (BEP 19 multi-file: URL/NAME/PATH). */
export function extentUrl(base: string, name: string, offset: number): string {
  const dir = base.endsWith('/') ? base : `${base}/`
  return `${dir}${encodeURIComponent(name)}/${extentName(offset)}`
}

/** `bytes A-B/TOTAL` → A and B, or undefined when malformed. */
export function parseContentRange(header: string | undefined): { first: number; last: number } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header?.trim() ?? '')
  if (!m) return undefined
  return { first: Number(m[1]), last: Number(m[2]) }
}

class WebSeed {
  readonly meter = new RateMeter()
  readonly spoiled = new Set<number>()
  inFlight = 0
  failures = 0
  lastError?: string
  private backoffUntil = 0
  private readonly agent: http.Agent
  private readonly requests = new Set<http.ClientRequest>()
  private readonly get: typeof http.get

  constructor(
    readonly spec: WebSeedSpec,
    private readonly torrent: ExtentTorrent,
    private readonly opts: WebSeedOptions,
    private readonly bucket: TokenBucket,
    net: HttpModules,
  ) {
    const mod = spec.url.startsWith('https:') ? net.https : net.http
    this.agent = new mod.Agent({ keepAlive: true, maxSockets: opts.connections })
    this.get = mod.get
  }

  get backingOff(): boolean {
    return Date.now() < this.backoffUntil
  }

  canTake(limit: number): boolean {
    return this.inFlight < limit && !this.backingOff
  }

  /** Read piece `index` into `buffer`, extent slice by slice. */
  async fetchPiece(index: number, buffer: Buffer): Promise<void> {
    const slices = mapPieceRange(this.torrent.layout, index, 0, pieceSize(this.torrent.layout, index))
    for (const s of slices) {
      const extent = this.torrent.extents[s.extent]
      const into = buffer.subarray(s.bufferOffset, s.bufferOffset + s.length)
      if (this.spec.kind === 'image') await this.fetchRange(this.spec.url, s.diskOffset, into, false)
      else {
        const start = s.diskOffset - extent.offset
        await this.fetchRange(extentUrl(this.spec.url, this.torrent.name, extent.offset), start, into, start === 0 && s.length === extent.length)
      }
    }
  }

  /** GET `url` bytes start..start+into.length-1 into `into`; `whole`: the range is the whole file, so a 200 of that length is the same bytes. */
  private fetchRange(url: string, start: number, into: Buffer, whole: boolean): Promise<void> {
    const want = into.length
    const range = `bytes=${start}-${start + want - 1}`
    return new Promise<void>((resolve, reject) => {
      let settled = false
      const done = (err?: Error) => {
        if (settled) return
        settled = true
        this.requests.delete(req)
        if (err) {
          req.destroy()
          reject(err)
        } else resolve()
      }
      const req = this.get(url, { agent: this.agent, headers: { Range: range } }, (res) => {
        const code = res.statusCode ?? 0
        if (code === 404 || code === 410) {
          res.resume()
          return done(new WebSeedError(`HTTP ${code} for ${url}`, true))
        }
        if (code === 200) {
          const length = Number(res.headers['content-length'])
          if (!whole || length !== want) {
            res.resume()
            return done(new WebSeedError(`${url} ignores Range (HTTP 200 to ${range}, ${res.headers['content-length'] ?? 'no'} bytes): not written`))
          }
        } else if (code === 206) {
          const cr = parseContentRange(res.headers['content-range'])
          if (!cr || cr.first !== start || cr.last !== start + want - 1) {
            res.resume()
            return done(new WebSeedError(`${url} answered ${range} with Content-Range ${res.headers['content-range'] ?? '(none)'}: not written`))
          }
        } else {
          res.resume()
          return done(new WebSeedError(`HTTP ${code} ${res.statusMessage ?? ''} for ${url}`.trim()))
        }
        let got = 0
        res.on('data', (chunk: Buffer) => {
          if (got + chunk.length > want) return done(new WebSeedError(`${url} sent more than the ${want} bytes of ${range}: not written`))
          chunk.copy(into, got)
          got += chunk.length
          this.meter.add(chunk.length)
          this.opts.onBytes(chunk.length)
          const wait = this.bucket.take(chunk.length)
          if (wait > 0) {
            res.pause()
            setTimeout(() => res.resume(), wait).unref()
          }
        })
        res.on('end', () => (got === want ? done() : done(new WebSeedError(`${url} ended after ${got} of ${want} bytes of ${range}`))))
        res.on('aborted', () => done(new WebSeedError(`${url} closed the connection after ${got} of ${want} bytes of ${range}`)))
        res.on('error', (err) => done(new WebSeedError(`${url}: ${err.message} after ${got} of ${want} bytes`)))
        res.on('close', () => {
          if (got !== want) done(new WebSeedError(`${url} closed the connection after ${got} of ${want} bytes of ${range}`))
        })
      })
      this.requests.add(req)
      req.setTimeout(this.opts.timeoutMs, () => done(new WebSeedError(`${url} stalled: no data for ${Math.round(this.opts.timeoutMs / 1000)} s`)))
      req.on('error', (err) => done(new WebSeedError(`${url}: ${err.message}`)))
    })
  }

  /** A request failed: the piece is not asked of it again (pieceOnly), or the whole server backs off. */
  fault(index: number, err: Error): void {
    this.lastError = err.message
    if (err instanceof WebSeedError && err.pieceOnly) {
      this.spoiled.add(index)
      return
    }
    // the other requests in flight fail with it: one fault per backoff
    if (this.backingOff) return
    this.failures++
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.failures - 1))
    this.backoffUntil = Date.now() + delay
    this.opts.log.warn({ webSeed: this.spec.url, err: err.message, retryInMs: delay }, 'web seed failed; backing off')
  }

  spoil(index: number): void {
    this.spoiled.add(index)
    this.lastError = `piece ${index} failed its SHA-1 check: not asked of this server again`
    this.opts.log.warn({ webSeed: this.spec.url, piece: index }, 'a piece from a web seed failed its hash check; fetching it elsewhere')
  }

  succeeded(): void {
    this.failures = 0
  }

  status(): WebSeedStatus {
    return {
      url: this.spec.url,
      kind: this.spec.kind,
      state: this.backingOff ? 'backoff' : this.inFlight > 0 ? 'active' : 'idle',
      downloadRate: this.meter.rate(),
      totalDownloaded: this.meter.total,
      inFlight: this.inFlight,
      spoiled: this.spoiled.size,
      failures: this.failures,
      lastError: this.lastError,
    }
  }

  close(): void {
    for (const r of this.requests) r.destroy(new Error('torrent went offline'))
    this.requests.clear()
    this.agent.destroy()
  }
}

/** The web seeds of one torrent, fed pieces by its downloader. */
export class WebSeeds {
  private seeds: WebSeed[] = []
  private readonly specs: WebSeedSpec[] = []
  private readonly bucket: TokenBucket
  private loading?: Promise<void>
  private closed = false

  constructor(
    specs: readonly WebSeedSpec[],
    private readonly torrent: ExtentTorrent,
    private readonly downloads: PieceDownloader,
    private readonly opts: WebSeedOptions,
  ) {
    this.bucket = new TokenBucket(opts.rate)
    const seen = new Set<string>()
    for (const s of specs) {
      if (seen.has(s.url)) continue
      seen.add(s.url)
      this.specs.push(s)
    }
  }

  get size(): number {
    return this.specs.length
  }

  /** Make the servers once node:http is loaded; then pump. */
  private load(): void {
    this.loading = Promise.all([import('node:http'), import('node:https')]).then(([http, https]) => {
      const net = { http: http.default, https: https.default }
      this.seeds = this.specs.map((s) => new WebSeed(s, this.torrent, this.opts, this.bucket, net))
      this.pump()
    })
  }

  /** Bytes received from web seeds. */
  get totalDownloaded(): number {
    let n = 0
    for (const s of this.seeds) n += s.meter.total
    return n
  }

  /** Give every server that has room a piece no peer has (called every tick and after each piece). */
  pump(): void {
    if (this.closed || this.specs.length === 0) return
    if (!this.loading) return this.load()
    // the fleet takes most bytes from each other: with peers serving us, a web seed only fills in, one piece at a time
    const limit = this.opts.peersServing() ? 1 : this.opts.connections
    for (const seed of this.seeds) {
      while (seed.canTake(limit)) {
        const r = this.downloads.reserveForWebSeed((i) => !seed.spoiled.has(i))
        if (!r) break
        void this.run(seed, r.index, r.buffer)
      }
    }
  }

  private async run(seed: WebSeed, index: number, buffer: Buffer): Promise<void> {
    seed.inFlight++
    try {
      await seed.fetchPiece(index, buffer)
    } catch (err) {
      seed.inFlight--
      if (!this.closed) seed.fault(index, err as Error)
      this.downloads.webSeedFailed(index, buffer)
      return
    }
    seed.inFlight--
    const digest = createHash('sha1').update(buffer).digest()
    const passed = await this.downloads.webSeedPiece(index, buffer, digest)
    if (passed) seed.succeeded()
    else seed.spoil(index)
    this.pump()
  }

  status(): WebSeedStatus[] {
    if (this.seeds.length === 0) return this.specs.map((s) => ({ url: s.url, kind: s.kind, state: 'idle', downloadRate: 0, totalDownloaded: 0, inFlight: 0, spoiled: 0, failures: 0 }))
    return this.seeds.map((s) => s.status())
  }

  /** Stop every request (going offline); pump() may start again after reopen(). */
  close(): void {
    this.closed = true
    for (const s of this.seeds) s.close()
  }

  reopen(): void {
    this.closed = false
  }
}
