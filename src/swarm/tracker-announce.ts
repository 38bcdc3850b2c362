/**
 * One announce to one tracker: the request, the answer decoded and checked,
 * the peers it lists. HTTP and HTTPS here (BEP 3, compact peers BEP 23,
 * IPv6 peers BEP 7); UDP (BEP 15) is tracker-udp.ts. Nothing else: WebSocket
 * trackers hand out WebRTC peers, and blockswarm's peers speak TCP.
 *
 * Every failure is an Error whose message says what went wrong in words a
 * status line can show: the tracker's own `failure reason`, the socket error
 * ("connect ECONNREFUSED 10.0.0.1:6969"), the HTTP status, or what is wrong
 * with the answer ("the answer is not bencoded: <!DOCTYPE html>…").
 */
import type { ClientRequest, IncomingMessage, request as httpRequest, RequestOptions } from 'node:http'
import { decodeBencode } from '../torrent/metainfo.js'
import { VERSION } from '../version.js'
import type { PeerAddress } from './peer-dialer.js'

export type AnnounceEvent = 'started' | 'completed' | 'stopped'

export interface AnnounceRequest {
  /** 20 bytes. */
  readonly infoHash: Buffer
  /** 20 bytes. */
  readonly peerId: Buffer
  /** Our BitTorrent listen port. */
  readonly port: number
  readonly uploaded: number
  readonly downloaded: number
  readonly left: number
  /** undefined: a regular announce. */
  readonly event?: AnnounceEvent
  readonly numwant: number
  /** A random number that stays the same for one client (lets a tracker know it across address changes). */
  readonly key: number
  /** The `tracker id` of this tracker's last answer (BEP 3). */
  readonly trackerId?: string
}

export interface AnnounceAnswer {
  /** Seconds until the tracker wants the next regular announce. */
  readonly interval: number
  readonly complete?: number
  readonly incomplete?: number
  readonly peers: PeerAddress[]
  /** The tracker's `warning message`: it answered, but says something is off. */
  readonly warning?: string
  readonly trackerId?: string
}

export interface AnnounceOptions {
  readonly timeoutMs: number
  readonly signal?: AbortSignal
}

/** Announces to one tracker URL; keeps what it needs between announces (a UDP connection id). */
export type Announcer = (req: AnnounceRequest, opts: AnnounceOptions) => Promise<AnnounceAnswer>

/** The HTTP(S) announcer of `url`. */
export function httpAnnouncer(url: URL): Announcer {
  return (req, opts) => announceHttp(url, req, opts)
}

/** A tracker answer larger than this is refused (50 peers are ~300 bytes compact, ~4 KiB as dictionaries). */
export const MAX_ANSWER_BYTES = 1024 * 1024

// ---------------------------------------------------------------------------
// Peers, as trackers list them

/** An address of 4 or 16 bytes as text ("10.0.0.5", "fd00::5"). */
function ipText(b: Buffer): string {
  if (b.length === 4) return b.join('.')
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16))
  // the URL parser writes an IPv6 address in its shortest form
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1)
}

/** Compact peers: `size` bytes each (6: IPv4 + port, 18: IPv6 + port); port 0 is left out. */
export function compactPeers(b: Buffer, size: 6 | 18, what: string): PeerAddress[] {
  if (b.length % size !== 0) throw new Error(`${what} is ${b.length} bytes, not a multiple of ${size}`)
  const peers: PeerAddress[] = []
  for (let at = 0; at < b.length; at += size) {
    const port = b.readUInt16BE(at + size - 2)
    if (port !== 0) peers.push({ host: ipText(b.subarray(at, at + size - 2)), port })
  }
  return peers
}

// ---------------------------------------------------------------------------
// HTTP

/** Every byte %-escaped (info_hash and peer_id are binary). */
function escapeBytes(b: Buffer): string {
  let s = ''
  for (const x of b) s += (x < 16 ? '%0' : '%') + x.toString(16)
  return s
}

/** The announce URL with our parameters after the tracker's own (a passkey, say). */
export function httpAnnounceUrl(url: URL, req: AnnounceRequest): string {
  const params = [
    `info_hash=${escapeBytes(req.infoHash)}`,
    `peer_id=${escapeBytes(req.peerId)}`,
    `port=${req.port}`,
    `uploaded=${Math.max(0, Math.floor(req.uploaded))}`,
    `downloaded=${Math.max(0, Math.floor(req.downloaded))}`,
    `left=${Math.max(0, Math.floor(req.left))}`,
    'compact=1',
    `numwant=${req.numwant}`,
    `key=${(req.key >>> 0).toString(16).padStart(8, '0')}`,
  ]
  if (req.event) params.push(`event=${req.event}`)
  if (req.trackerId !== undefined) params.push(`trackerid=${encodeURIComponent(req.trackerId)}`)
  const base = new URL(url.href)
  base.hash = ''
  return base.href + (base.search ? '&' : '?') + params.join('&')
}

const isDict = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)
const text = (v: unknown): string | undefined => (v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : undefined)
const count = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined)

/** The first bytes of an answer, printable, for an error message. */
function preview(body: Buffer): string {
  if (body.length === 0) return 'an empty body'
  const shown = body.subarray(0, 60).toString('latin1').replace(/[^\x20-\x7e]/g, '.')
  return JSON.stringify(shown) + (body.length > 60 ? '…' : '')
}

/** A peer of a non-compact answer ({ ip, port, peer id }), or undefined when it is unusable. */
function dictPeer(p: unknown): PeerAddress | undefined {
  if (!isDict(p)) return undefined
  const host = text(p.ip)?.replace(/^\[|\]$/g, '')
  const port = count(p.port)
  if (!host || !port || port > 65535 || /[\s/]/.test(host)) return undefined
  return { host, port }
}

/** A tracker's HTTP answer body → the answer; throws naming what is wrong (or the tracker's failure reason). */
export function parseHttpAnswer(body: Buffer): AnnounceAnswer {
  let d: unknown
  try {
    d = decodeBencode(body)
  } catch {
    throw new Error(`the answer is not bencoded: ${preview(body)}`)
  }
  if (!isDict(d)) throw new Error(`the answer is not a bencoded dictionary: ${preview(body)}`)
  if (d['failure reason'] !== undefined) throw new Error(text(d['failure reason']) || 'the tracker refused the announce without a reason')
  const interval = count(d.interval)
  if (interval === undefined) throw new Error('the answer has no interval')
  const peers: PeerAddress[] = []
  if (d.peers instanceof Uint8Array) peers.push(...compactPeers(Buffer.from(d.peers), 6, 'the answer\'s "peers"'))
  else if (Array.isArray(d.peers)) {
    for (const p of d.peers) {
      const a = dictPeer(p)
      if (a) peers.push(a)
    }
  }
  else if (d.peers !== undefined || d.peers6 === undefined) throw new Error('the answer has no peer list')
  if (d.peers6 instanceof Uint8Array) peers.push(...compactPeers(Buffer.from(d.peers6), 18, 'the answer\'s "peers6"'))
  return {
    interval,
    complete: count(d.complete),
    incomplete: count(d.incomplete),
    peers,
    warning: text(d['warning message']),
    trackerId: text(d['tracker id']),
  }
}

async function announceHttp(url: URL, req: AnnounceRequest, opts: AnnounceOptions): Promise<AnnounceAnswer> {
  // loaded at the first announce: a deploy from --peer peers only never needs either
  const send = url.protocol === 'https:' ? (await import('node:https')).request : (await import('node:http')).request
  const { status, statusText, body } = await get(send, httpAnnounceUrl(url, req), opts)
  if (status === 200) return parseHttpAnswer(body)
  throw new Error(`HTTP ${status}${statusText ? ` ${statusText}` : ''}${failureReason(body)}`)
}

/** ": REASON" when an error page is a bencoded dictionary with a failure reason, else "". */
function failureReason(body: Buffer): string {
  try {
    const d = decodeBencode(body)
    const reason = isDict(d) ? text(d['failure reason']) : undefined
    return reason ? `: ${reason}` : ''
  } catch {
    return ''
  }
}

/** One GET: the status and the body (at most MAX_ANSWER_BYTES), within opts.timeoutMs. */
function get(send: typeof httpRequest, href: string, opts: AnnounceOptions): Promise<{ status: number; statusText?: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    // a new connection each time: a tracker may close an idle one without a word (opentracker does)
    const options: RequestOptions = { agent: false, headers: { 'user-agent': `blockswarm/${VERSION}`, 'accept-encoding': 'identity', connection: 'close' } }
    let req: ClientRequest | undefined
    const done = (err: Error | undefined, value?: { status: number; statusText?: string; body: Buffer }) => {
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', abort)
      if (err) reject(err)
      else resolve(value!)
    }
    /** Give up with `err` (the socket is closed; what it says after that does not count). */
    const fail = (err: Error) => {
      done(err)
      req?.destroy()
    }
    const timer = setTimeout(() => fail(new Error(`no answer within ${opts.timeoutMs / 1000} s`)), opts.timeoutMs)
    const abort = () => fail(new Error('announce cancelled'))
    if (opts.signal?.aborted) return abort()
    opts.signal?.addEventListener('abort', abort)
    try {
      req = send(href, options)
    } catch (err) {
      return fail(err as Error)
    }
    req.on('error', (err) => done(socketError(err)))
    req.on('response', (res: IncomingMessage) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > MAX_ANSWER_BYTES) fail(new Error(`the answer is larger than ${MAX_ANSWER_BYTES / 1024} KiB`))
        else chunks.push(c)
      })
      res.on('error', (err) => done(err))
      res.on('end', () => done(undefined, { status: res.statusCode ?? 0, statusText: res.statusMessage, body: Buffer.concat(chunks) }))
    })
    req.end()
  })
}

/** A socket error in one line; a dual-stack host name's AggregateError names each address tried. */
function socketError(err: Error): Error {
  if (err instanceof AggregateError && !err.message) return new Error(err.errors.map((e: Error) => e.message).join('; '))
  return err
}
