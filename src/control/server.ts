/**
 * The daemon's control server: ezio.EZIO, blockswarm.v1.Blockswarm and server
 * reflection on every listen address (host:port or unix:/path), behind the
 * listen policy, TLS and bearer token of security.ts.
 */
import { existsSync, lstatSync, unlinkSync } from 'node:fs'
import { connect } from 'node:net'
import type { ServerCredentials } from '@grpc/grpc-js'
// The server half of nice-grpc only: its index also loads the client half
// and patches grpc-js's client transport (~0.04 s of every daemon start).
import { createServer, type Server } from 'nice-grpc/lib/server/Server.js'
import type { Logger } from 'pino'
import type { Session } from '../session/session.js'
import { unixPath } from './address.js'
import { BlockswarmService } from './blockswarm-wire.js'
import { blockswarmImplementation } from './blockswarm-service.js'
import type { ControlContext, DaemonFacts } from './control-context.js'
import { errorMiddleware } from './errors.js'
import { ezioImplementation } from './ezio-service.js'
import { EzioService } from './ezio-wire.js'
import { loadProto, PROTO_FILES } from './proto-loader.js'
import { ReflectionV1AlphaService, ReflectionV1Service, reflectionImplementation } from './reflection-service.js'
import { checkListenAddress, type ControlSecurity, serverCredentials, tokenMiddleware } from './security.js'

/**
 * Largest request accepted: a .torrent of a big, fragmented filesystem holds
 * hundreds of thousands of extents (grpc-js's default is 4 MiB).
 */
export const MAX_REQUEST_BYTES = 256 * 1024 * 1024

/** How long a graceful close waits for calls in flight before cutting them. */
const CLOSE_GRACE_MS = 5000

export interface ControlServerOptions {
  /** Addresses to listen on: "host:port" (port 0 = any) or "unix:/path". */
  listen: string[]
  log?: Logger
  /** Limits reported by GetDaemonInfo: pass the SessionOptions the Session was started with. */
  facts?: DaemonFacts
  /** Called once a Shutdown call (or shutdown()) has closed everything: the daemon exits here. */
  onExit?: (code: number) => void
  /** TLS, bearer token, --insecure. Without any, only loopback and unix: addresses are allowed. */
  security?: ControlSecurity
}

export interface ControlServer {
  /** The addresses listened on, ports resolved (e.g. "127.0.0.1:50051", "unix:/run/blockswarm.sock"). */
  readonly addresses: string[]
  /** Stop serving (calls in flight finish, watches end). Does not touch the Session. */
  close(): Promise<void>
  /** What the Shutdown call does: close, then session.close(), then onExit(0) (1 if the session failed to close). Idempotent. */
  shutdown(): Promise<void>
}

/** True if something accepts connections on the unix socket at `path`. */
function socketInUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** Remove a socket file left by a daemon that did not exit cleanly; refuse if a live daemon owns it. */
async function clearStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return
  if (!lstatSync(path).isSocket()) throw new Error(`cannot listen on unix:${path}: the path exists and is not a socket`)
  if (await socketInUse(path)) throw new Error(`cannot listen on unix:${path}: another daemon is listening there`)
  unlinkSync(path)
}

async function listenOn(server: Server, address: string, credentials: ServerCredentials): Promise<string> {
  const path = unixPath(address)
  if (path !== undefined) {
    if (!path.startsWith('/')) throw new Error(`control address ${address}: give an absolute socket path (unix:/run/blockswarm.sock)`)
    await clearStaleSocket(path)
    try {
      await server.listen(`unix:${path}`, credentials)
    } catch (err) {
      throw new Error(`cannot listen on unix:${path}: ${(err as Error).message}`)
    }
    return `unix:${path}`
  }
  const m = /^(.*):(\d+)$/.exec(address)
  if (!m || m[1] === '') throw new Error(`control address ${JSON.stringify(address)} is neither host:port nor unix:/path`)
  let port: number
  try {
    port = await server.listen(address, credentials)
  } catch (err) {
    // grpc-js says only "No address added out of total 1 resolved" for a port in use.
    throw new Error(`cannot listen on ${address}: ${(err as Error).message} (is the port in use, e.g. by another daemon? is the host an address of this machine?)`)
  }
  return `${m[1]}:${port}`
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown()
      resolve()
    }, CLOSE_GRACE_MS)
    server.shutdown().then(
      () => {
        clearTimeout(timer)
        resolve()
      },
      () => {
        clearTimeout(timer)
        server.forceShutdown()
        resolve()
      },
    )
  })
}

export async function startControlServer(session: Session, opts: ControlServerOptions): Promise<ControlServer> {
  if (opts.listen.length === 0) throw new Error('no control address to listen on')
  const security = opts.security ?? {}
  // Every address is checked before any is bound.
  const warnings = opts.listen.map((address) => checkListenAddress(address, security))
  const closing = new AbortController()
  const addresses: string[] = []
  const servers: Server[] = []
  const sockets: string[] = []
  let shuttingDown: Promise<void> | undefined

  const close = async (): Promise<void> => {
    closing.abort()
    await Promise.all(servers.map(closeServer))
    for (const path of sockets) if (existsSync(path)) unlinkSync(path)
  }

  const shutdown = (): Promise<void> =>
    (shuttingDown ??= (async () => {
      opts.log?.info('control: shutting down')
      await close()
      let code = 0
      try {
        await session.close()
      } catch (err) {
        opts.log?.error({ err }, 'session did not close cleanly')
        code = 1
      }
      opts.onExit?.(code)
    })())

  const ctx: ControlContext = {
    session,
    log: opts.log,
    addresses: () => [...addresses],
    facts: opts.facts ?? {},
    startedAt: Date.now(),
    closing: closing.signal,
    // Let the Shutdown reply go out first; closing waits for calls in flight.
    requestShutdown: () => void setImmediate(() => void shutdown()),
  }
  const ezio = ezioImplementation(ctx)
  const blockswarm = blockswarmImplementation(ctx)
  const reflection = reflectionImplementation(() => Object.fromEntries(PROTO_FILES.map((f) => [f, loadProto(f, { keepCase: true })])))

  try {
    for (const address of opts.listen) {
      const base = createServer({ 'grpc.max_receive_message_length': MAX_REQUEST_BYTES })
      const server = (security.token === undefined ? base : base.use(tokenMiddleware(security.token, opts.log))).use(errorMiddleware(opts.log))
      server.add(EzioService, ezio)
      server.add(BlockswarmService, blockswarm)
      server.add(ReflectionV1Service, reflection)
      server.add(ReflectionV1AlphaService, reflection)
      servers.push(server)
      const bound = await listenOn(server, address, serverCredentials(address, security))
      addresses.push(bound)
      const path = unixPath(bound)
      if (path) sockets.push(path)
    }
  } catch (err) {
    await close()
    throw err
  }
  for (const warning of warnings) if (warning) opts.log?.warn(warning)
  opts.log?.info(
    { addresses, tls: security.tls ? (security.tls.clientCa ? 'mutual' : 'server') : 'off', token: security.token !== undefined },
    'control API listening',
  )
  return { addresses, close, shutdown }
}
