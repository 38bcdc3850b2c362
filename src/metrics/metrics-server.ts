/**
 * The Prometheus endpoint (`--metrics HOST:PORT`): GET /metrics answers the
 * session's registry in the text exposition format. Read-only and without
 * authentication, like most exporters: bind it to loopback or a management
 * network. Neither the server nor a scraper's open connection keeps the
 * process alive.
 */
import { createServer, type Server } from 'node:http'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { Session } from '../session/session.js'
import { sessionRegistry } from './torrent-metrics.js'

export interface MetricsServer {
  /** "host:port" as listened on (port resolved when 0 was asked). */
  readonly address: string
  close(): Promise<void>
}

/** "host:port" or "[v6]:port" → its parts; throws naming the flag's value. */
export function parseMetricsAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text.trim())
  const port = m ? Number(m[3]) : NaN
  if (!m || port > 65535) throw new Error(`--metrics ${JSON.stringify(text)} is not HOST:PORT (e.g. 127.0.0.1:9100, 0.0.0.0:9100 or [::1]:9100)`)
  return { host: m[1] ?? m[2], port }
}

export async function startMetricsServer(registry: Registry, address: string, log?: Logger): Promise<MetricsServer> {
  const { host, port } = parseMetricsAddress(address)
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('blockswarm: metrics are at /metrics\n')
      return
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: Error) => {
        log?.error({ err: err.message }, 'metrics: collecting failed')
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${err.message}\n`)
      },
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot serve metrics on ${address}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.code === 'EADDRNOTAVAIL' ? 'the host is not an address of this machine' : (err.code ?? err.message)}`)),
    )
    server.listen(port, host, () => resolve())
  })
  server.unref()
  server.on('connection', (socket) => socket.unref())
  const bound = server.address()
  const actual = typeof bound === 'object' && bound ? bound.port : port
  const shown = `${host.includes(':') ? `[${host}]` : host}:${actual}`
  log?.info({ address: shown }, 'metrics listening')
  return {
    address: shown,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/** The endpoint for one session's metrics (torrent-metrics.ts). */
export function serveSessionMetrics(session: Session, address: string, log?: Logger): Promise<MetricsServer> {
  return startMetricsServer(sessionRegistry(session), address, log)
}
