/**
 * The fleet view over HTTP (`--dashboard [ADDR:]PORT`), read-only:
 *   GET /                   the page (page.ts: one HTML file, nothing from elsewhere)
 *   GET /api/fleet          the fleet of a torrent as JSON (FleetSnapshot; ?torrent=HASH, default the first)
 *   GET /api/fleet/events   the same as server-sent events: one `fleet` event at once, then one on every change
 *   GET /api/torrents       the info-hashes that have a fleet
 * Closed by default like the control port: a bare PORT listens on loopback;
 * any other address needs TLS or a token, or --insecure. With a token every
 * request must carry it, as "authorization: Bearer TOKEN" or ?token=TOKEN
 * (a browser's address bar and EventSource cannot send headers).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { Logger } from 'pino'
import { isLoopbackHost } from '../control/address.js'
import type { ControlSecurity } from '../control/security.js'
import type { FleetFeed } from './fleet-feed.js'
import { FLEET_PAGE } from './page.js'

/** `[ADDR:]PORT` → host and port; a bare port is loopback. Throws naming the flag. */
export function parseDashboardAddress(text: string): { host: string; port: number } {
  const m = /^(?:(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):)?(\d{1,5})$/.exec(text.trim())
  const port = m ? Number(m[3]) : NaN
  if (!m || port > 65535) throw new Error(`--dashboard ${JSON.stringify(text)} is not [ADDR:]PORT (e.g. 8080 for loopback, 0.0.0.0:8080 or [::1]:8080)`)
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port }
}

/**
 * Whether the dashboard may listen on `host`: loopback always; elsewhere TLS
 * or a token is required (a token only over TLS, unless --insecure), as for
 * the control port. Throws saying what to add; returns a warning for the log
 * when it is allowed only by --insecure or by TLS alone.
 */
export function checkDashboardHost(host: string, security: ControlSecurity): string | undefined {
  if (isLoopbackHost(host)) return undefined
  const where = `the dashboard on ${host}`
  const hint = 'add --tls-cert FILE --tls-key FILE and --token-file FILE (or --tls-client-ca FILE), or listen on loopback (--dashboard PORT)'
  if (security.tls) return security.token || security.tls.clientCa ? undefined : `${where} uses TLS but neither client certificates nor a token: anyone who can reach it may read the fleet`
  if (security.insecure) return security.token ? `${where} takes its token in plaintext (--insecure)` : `${where} is open to anyone who can reach it (--insecure, no TLS, no token)`
  if (security.token) throw new Error(`refusing to serve ${where} with a token but no TLS: the token would cross the network in plaintext; ${hint}, or add --insecure`)
  throw new Error(`refusing to serve ${where} without TLS or a token: it is not a loopback address; ${hint}, or add --insecure to serve it in plaintext anyway`)
}

export interface FleetServer {
  /** The page's URL (http or https, the port resolved). */
  readonly url: string
  close(): Promise<void>
}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest()

/** Whether a request carries the token (header or query), compared in constant time. */
function authorized(req: IncomingMessage, url: URL, expected: Buffer | undefined): boolean {
  if (!expected) return true
  const header = /^bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1]
  const given = header ?? url.searchParams.get('token') ?? undefined
  return given !== undefined && timingSafeEqual(digest(given), expected)
}

/** Serve the fleet of `feed` on `address` (`[ADDR:]PORT`). */
export async function startFleetServer(feed: FleetFeed, address: string, security: ControlSecurity, log?: Logger): Promise<FleetServer> {
  const { host, port } = parseDashboardAddress(address)
  const warning = checkDashboardHost(host, security)
  if (warning) log?.warn(warning)
  const token = security.token === undefined ? undefined : digest(security.token)
  const streams = new Set<ServerResponse>()

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://dashboard')
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (!authorized(req, url, token)) {
      log?.warn({ peer: req.socket.remoteAddress, path: url.pathname }, 'dashboard request without the right token refused')
      res.writeHead(401, { 'content-type': 'text/plain; charset=utf-8', 'www-authenticate': 'Bearer' }).end('this dashboard needs its token: add ?token=TOKEN to the URL, or send "authorization: Bearer TOKEN"\n')
      return
    }
    const hash = url.searchParams.get('torrent') ?? undefined
    switch (url.pathname) {
      case '/':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(req.method === 'HEAD' ? undefined : FLEET_PAGE)
        return
      case '/api/torrents':
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(feed.hashes()))
        return
      case '/api/fleet': {
        const snap = feed.snapshot(hash)
        if (!snap) {
          res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: hash ? `no torrent ${hash} here` : 'no torrent yet' }))
          return
        }
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(snap))
        return
      }
      case '/api/fleet/events':
        stream(res, hash)
        return
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('blockswarm dashboard: the page is at /, the data at /api/fleet and /api/fleet/events\n')
    }
  }

  /** Server-sent events: the snapshot at once, then on every change, at most 4 a second; a comment every 15 s keeps proxies from closing it. */
  const stream = (res: ServerResponse, hash: string | undefined) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    streams.add(res)
    let lastSent = 0
    let pending: NodeJS.Timeout | undefined
    const send = () => {
      pending = undefined
      lastSent = Date.now()
      const snap = feed.snapshot(hash)
      if (snap) res.write(`event: fleet\ndata: ${JSON.stringify(snap)}\n\n`)
    }
    const onChange = (changed: string) => {
      const wanted = hash?.toLowerCase() ?? feed.hashes()[0]
      if (changed !== wanted || pending) return
      const wait = lastSent + 250 - Date.now()
      if (wait <= 0) send()
      else pending = setTimeout(send, wait)
    }
    const beat = setInterval(() => res.write(': keep-alive\n\n'), 15_000)
    feed.on('change', onChange)
    res.on('close', () => {
      clearInterval(beat)
      clearTimeout(pending)
      feed.off('change', onChange)
      streams.delete(res)
    })
    res.write('retry: 2000\n\n')
    send()
  }

  const server: Server = security.tls
    ? createHttpsServer({ cert: security.tls.cert, key: security.tls.key, ca: security.tls.clientCa, requestCert: security.tls.clientCa !== undefined, rejectUnauthorized: security.tls.clientCa !== undefined }, handle)
    : createHttpServer(handle)
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot serve the dashboard on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.code === 'EADDRNOTAVAIL' ? 'the host is not an address of this machine' : (err.code ?? err.message)}`)),
    )
    server.listen(port, host, () => resolve())
  })
  server.unref()
  server.on('connection', (socket) => socket.unref())
  const bound = server.address()
  const actual = typeof bound === 'object' && bound ? bound.port : port
  const url = `${security.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${actual}/`
  log?.info({ url }, 'dashboard listening')
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        for (const s of streams) s.end()
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
