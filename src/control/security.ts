/**
 * Who may control the daemon. A control address that is not loopback or a
 * unix socket needs TLS (server certificate; with a client CA, mTLS) or an
 * explicit --insecure; a bearer token, when configured, is required on every
 * call on every address and needs TLS (or --insecure) off loopback too.
 */
import { createHash, createPrivateKey, timingSafeEqual, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ServerCredentials } from '@grpc/grpc-js'
import { type CallContext, ServerError, type ServerMiddlewareCall, Status } from 'nice-grpc-common'
import type { Logger } from 'pino'
import { isLocalAddress, unixPath } from './address.js'

/** The daemon's TLS identity (PEM). */
export interface ServerTls {
  cert: Buffer
  key: Buffer
  /** Require client certificates signed by this CA (mTLS). */
  clientCa?: Buffer
}

export interface ControlSecurity {
  /** Serve TLS on every host:port address (unix sockets stay plaintext: file permissions guard them). */
  tls?: ServerTls
  /** Every call, on every address, must carry `authorization: Bearer <token>`. */
  token?: string
  /** Allow a non-loopback address without TLS (the daemon logs a warning). */
  insecure?: boolean
}

/** What to add on the daemon's command line, said in every refusal. */
const TLS_HINT = 'add --tls-cert FILE --tls-key FILE (with --tls-client-ca FILE to require client certificates, or --token-file FILE to require a bearer token)'

/**
 * Whether the daemon may listen on `address` with `security`: throws if not,
 * saying why and what to add; returns a warning for the log if it may, but
 * only because of --insecure (or TLS alone lets any client in).
 */
export function checkListenAddress(address: string, security: ControlSecurity): string | undefined {
  if (isLocalAddress(address)) return undefined
  const { tls, token, insecure } = security
  if (tls) {
    if (token || tls.clientCa) return undefined
    return `control API on ${address} uses TLS but neither client certificates nor a token: any client that can reach it may control this daemon (add --tls-client-ca FILE or --token-file FILE)`
  }
  if (token) {
    if (insecure) return `control API on ${address} takes its bearer token in plaintext (--insecure): anyone on the network path can read the token`
    throw new Error(`refusing to listen on ${address} with a bearer token but no TLS: the token would cross the network in plaintext; ${TLS_HINT}, or add --insecure to allow it anyway`)
  }
  if (insecure) return `control API on ${address} is open to anyone who can reach it (--insecure, no TLS, no token): they can write torrents to this machine's disks`
  throw new Error(
    `refusing to listen on ${address} without TLS or a token: it is not a loopback address or a unix socket, so anyone who can reach it could control this daemon and write to its disks; ${TLS_HINT}, or add --insecure to listen there in plaintext anyway`,
  )
}

/** Credentials for one listen address: TLS on host:port when configured, plaintext on unix sockets. */
export function serverCredentials(address: string, security: ControlSecurity): ServerCredentials {
  const { tls } = security
  if (!tls || unixPath(address) !== undefined) return ServerCredentials.createInsecure()
  return ServerCredentials.createSsl(tls.clientCa ?? null, [{ private_key: tls.key, cert_chain: tls.cert }], tls.clientCa !== undefined)
}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest()

const BEARER = /^bearer\s+(\S+)\s*$/i

/**
 * Server middleware: refuse any call (either service, reflection too) whose
 * `authorization` metadata is not "Bearer <token>" with UNAUTHENTICATED,
 * logging the peer (never the token). The comparison takes the same time
 * whatever the token sent.
 */
export function tokenMiddleware(token: string, log?: Logger) {
  const expected = digest(token)
  return async function* requireToken<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    const header = context.metadata.get('authorization')
    const given = typeof header === 'string' ? BEARER.exec(header)?.[1] : undefined
    if (given === undefined) {
      log?.warn({ peer: context.peer, method: call.method.path }, 'control call without a bearer token refused')
      throw new ServerError(
        Status.UNAUTHENTICATED,
        'this daemon requires a bearer token: send the metadata "authorization: Bearer TOKEN" (blockswarm commands: --token-file FILE or $BLOCKSWARM_TOKEN)',
      )
    }
    if (!timingSafeEqual(digest(given), expected)) {
      log?.warn({ peer: context.peer, method: call.method.path }, 'control call with a wrong bearer token refused')
      throw new ServerError(Status.UNAUTHENTICATED, 'the bearer token is wrong: it is not the one the daemon was started with (--token-file or $BLOCKSWARM_TOKEN)')
    }
    return yield* call.next(call.request as never, context)
  }
}

function readNamed(path: string, flag: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new Error(`cannot read ${flag} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

/** A PEM certificate (chain) read from `path`; the error names the flag and the file. */
export function readCertificate(path: string, flag: string): { pem: Buffer; first: X509Certificate } {
  const pem = readNamed(path, flag)
  try {
    return { pem, first: new X509Certificate(pem) }
  } catch (err) {
    throw new Error(`${flag} ${path} is not a PEM certificate: ${(err as Error).message}`)
  }
}

/** A PEM private key read from `path`. */
export function readPrivateKey(path: string, flag: string): { pem: Buffer; key: ReturnType<typeof createPrivateKey> } {
  const pem = readNamed(path, flag)
  try {
    return { pem, key: createPrivateKey(pem) }
  } catch (err) {
    throw new Error(`${flag} ${path} is not a PEM private key (or it is encrypted): ${(err as Error).message}`)
  }
}

/** A certificate and its key, checked to belong together and to be valid now. */
export function readKeyPair(certPath: string, keyPath: string, certFlag: string, keyFlag: string): { cert: Buffer; key: Buffer } {
  const cert = readCertificate(certPath, certFlag)
  const key = readPrivateKey(keyPath, keyFlag)
  if (!cert.first.checkPrivateKey(key.key)) throw new Error(`${keyFlag} ${keyPath} is not the private key of ${certFlag} ${certPath}`)
  const now = Date.now()
  if (Date.parse(cert.first.validTo) < now) throw new Error(`${certFlag} ${certPath} expired on ${cert.first.validTo}`)
  if (Date.parse(cert.first.validFrom) > now) throw new Error(`${certFlag} ${certPath} is not valid before ${cert.first.validFrom}`)
  return { cert: cert.pem, key: key.pem }
}

/** The daemon's TLS identity from files, each checked, with errors naming the daemon's flags. */
export function loadServerTls(files: { cert: string; key: string; clientCa?: string }): ServerTls {
  const pair = readKeyPair(files.cert, files.key, '--tls-cert', '--tls-key')
  const clientCa = files.clientCa === undefined ? undefined : readCertificate(files.clientCa, '--tls-client-ca').pem
  return { ...pair, clientCa }
}

/** Printable ASCII without spaces: what an HTTP/2 header value carries unchanged. */
const TOKEN_TEXT = /^[\x21-\x7e]+$/

/**
 * The bearer token: the file's content (trailing newline and blanks ignored)
 * if a file is given, else $BLOCKSWARM_TOKEN, else none.
 */
export function readToken(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  let token: string
  let source: string
  if (file !== undefined) {
    token = readNamed(file, '--token-file').toString('utf8').trim()
    source = `--token-file ${file}`
  } else if (env.BLOCKSWARM_TOKEN !== undefined && env.BLOCKSWARM_TOKEN !== '') {
    token = env.BLOCKSWARM_TOKEN.trim()
    source = '$BLOCKSWARM_TOKEN'
  } else {
    return undefined
  }
  if (token === '') throw new Error(`the token in ${source} is empty (make one with: openssl rand -hex 32)`)
  if (!TOKEN_TEXT.test(token)) throw new Error(`the token in ${source} holds spaces or characters other than printable ASCII, which a gRPC header cannot carry (make one with: openssl rand -hex 32)`)
  return token
}
