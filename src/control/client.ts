/**
 * A client of the daemon's control API (both services) for the CLI and for
 * scripts, with errors that say which daemon could not be reached or what it
 * refused.
 */
import { type CallOptions, ChannelCredentials, type Client, ClientError, type ClientMiddlewareCall, createClientFactory, Channel, Metadata, Status } from 'nice-grpc'
import { BlockswarmService, type BlockswarmDefinition } from './blockswarm-wire.js'
import { EzioService, type EzioDefinition } from './ezio-wire.js'
import { DEFAULT_CONTROL_ADDRESS, unixPath } from './address.js'

/** How the client proves itself and checks the daemon. */
export interface ClientSecurity {
  /** Sent as `authorization: Bearer <token>` with every call. */
  token?: string
  /** Connect with TLS: trust `ca` (PEM; default: the system's CAs), and present cert + key if given (mTLS). */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer }
}

export interface ControlClient {
  readonly address: string
  readonly ezio: Client<EzioDefinition>
  readonly blockswarm: Client<BlockswarmDefinition>
  close(): void
}

/** The daemon address to use: the option, else $BLOCKSWARM_DAEMON, else 127.0.0.1:50051. */
export function daemonAddress(option?: string): string {
  return option || process.env.BLOCKSWARM_DAEMON || DEFAULT_CONTROL_ADDRESS
}

/** The gRPC channel target for a daemon address (host:port or unix:/path). */
function channelTarget(address: string): string {
  const path = unixPath(address)
  if (path !== undefined) return `unix:${path}`
  if (!/:\d+$/.test(address)) throw new Error(`daemon address ${JSON.stringify(address)} is neither host:port nor unix:/path`)
  return address
}

/** Client middleware adding the bearer token to every call. */
function bearer(token: string) {
  return async function* withToken<Req, Res>(call: ClientMiddlewareCall<Req, Res>, options: CallOptions) {
    return yield* call.next(call.request as never, { ...options, metadata: Metadata(options.metadata).set('authorization', `Bearer ${token}`) })
  }
}

function channelCredentials(security: ClientSecurity): ChannelCredentials {
  const { tls } = security
  if (!tls) return ChannelCredentials.createInsecure()
  return ChannelCredentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null)
}

export function connectControl(address: string, security: ClientSecurity = {}): ControlClient {
  const channel = new Channel(channelTarget(address), channelCredentials(security), {})
  const factory = security.token === undefined ? createClientFactory() : createClientFactory().use(bearer(security.token))
  return {
    address,
    ezio: factory.create(EzioService, channel),
    blockswarm: factory.create(BlockswarmService, channel),
    close: () => channel.close(),
  }
}

/**
 * grpc-js's "No connection established. Last error: Error: connect ECONNREFUSED …. Resolution note: "
 * → "connect ECONNREFUSED …"; an OpenSSL error line → its reason ("wrong version number").
 */
function connectFailure(details: string): string {
  return details
    .replace(/^No connection established\. Last error: (?:Error: )?/, '')
    .replace(/\.? ?Resolution note: ?$/, '')
    .replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:[^:]*:([^:]+):[\s\S]*$/, '$1')
    .replace(/ \(\d{4}-\d\d-\d\dT[\d:.]+Z\)$/, '')
    .trim()
}

/** What to change when a connection failed for a TLS reason (or, in plaintext, perhaps because the daemon wants TLS); undefined if it did not. */
function tlsAdvice(reason: string, address: string, security: ClientSecurity): string | undefined {
  if (!security.tls) {
    if (reason === 'Failed to connect') {
      return `the daemon at ${address} did not answer as a plaintext gRPC server (${reason}): if it serves TLS, add --tls-ca FILE (or --tls); else check that --daemon names a blockswarm daemon's control address`
    }
    return undefined
  }
  if (/wrong version number|packet length too long/.test(reason)) return `the daemon at ${address} does not speak TLS (${reason}): leave out --tls, --tls-ca and --tls-cert, or start the daemon with --tls-cert and --tls-key`
  if (/certificate required/.test(reason)) return `the daemon at ${address} requires a client certificate (${reason}): add --tls-cert FILE --tls-key FILE, signed by the CA of its --tls-client-ca`
  if (/verify|self[- ]signed|issuer|expired|not yet valid|altnames|does not match/i.test(reason)) {
    return `the daemon at ${address} presented a certificate this client does not accept (${reason}): give --tls-ca FILE, the CA that signed the daemon's --tls-cert (which must name the host of --daemon)`
  }
  if (/unknown ca|bad certificate|certificate unknown/.test(reason) || (reason === 'Failed to connect' && security.tls.cert)) {
    return `the daemon at ${address} did not accept this client (${reason}): is --tls-cert signed by the CA of the daemon's --tls-client-ca?`
  }
  return undefined
}

/** An Error for the user: an unreachable daemon, a TLS mismatch, or what the daemon answered. */
export function describeControlError(err: unknown, address: string, security: ClientSecurity = {}): Error {
  if (err instanceof ClientError) {
    if (err.code === Status.UNAVAILABLE) {
      const reason = connectFailure(err.details)
      const advice = tlsAdvice(reason, address, security)
      if (advice) return new Error(advice)
      return new Error(`cannot reach the blockswarm daemon at ${address} (${reason}); start one with \`blockswarm daemon\`, or point --daemon (or $BLOCKSWARM_DAEMON) at it`)
    }
    if (err.code === Status.UNIMPLEMENTED) {
      return new Error(`the daemon at ${address} does not serve ${err.path}: is it a blockswarm daemon (and not another EZIO server)?`)
    }
    return new Error(`${err.details} [${Status[err.code]}]`)
  }
  return err instanceof Error ? err : new Error(String(err))
}

/** Run `fn` with a connected client, closing it after and rewording its errors. */
export async function withControl<T>(address: string, fn: (c: ControlClient) => Promise<T>, security: ClientSecurity = {}): Promise<T> {
  const client = connectControl(address, security)
  try {
    return await fn(client)
  } catch (err) {
    throw describeControlError(err, address, security)
  } finally {
    client.close()
  }
}
