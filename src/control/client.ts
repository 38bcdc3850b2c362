/**
 * A client of the daemon's control API (both services) for the CLI and for
 * scripts, with errors that say which daemon could not be reached or what it
 * refused.
 */
import { ChannelCredentials, type Client, ClientError, createClientFactory, Channel, Status } from 'nice-grpc'
import { BlockswarmService, type BlockswarmDefinition } from './blockswarm-wire.js'
import { EzioService, type EzioDefinition } from './ezio-wire.js'
import { DEFAULT_CONTROL_ADDRESS, unixPath } from './address.js'

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

export function connectControl(address: string): ControlClient {
  const channel = new Channel(channelTarget(address), ChannelCredentials.createInsecure(), {})
  const factory = createClientFactory()
  return {
    address,
    ezio: factory.create(EzioService, channel),
    blockswarm: factory.create(BlockswarmService, channel),
    close: () => channel.close(),
  }
}

/** grpc-js's "No connection established. Last error: Error: connect ECONNREFUSED …. Resolution note: " → "connect ECONNREFUSED …". */
function connectFailure(details: string): string {
  return details
    .replace(/^No connection established\. Last error: (?:Error: )?/, '')
    .replace(/\.? ?Resolution note: ?$/, '')
    .trim()
}

/** An Error for the user: an unreachable daemon, or what the daemon answered. */
export function describeControlError(err: unknown, address: string): Error {
  if (err instanceof ClientError) {
    if (err.code === Status.UNAVAILABLE) {
      return new Error(
        `cannot reach the blockswarm daemon at ${address} (${connectFailure(err.details)}); start one with \`blockswarm daemon\`, or point --daemon (or $BLOCKSWARM_DAEMON) at it`,
      )
    }
    if (err.code === Status.UNIMPLEMENTED) {
      return new Error(`the daemon at ${address} does not serve ${err.path}: is it a blockswarm daemon (and not another EZIO server)?`)
    }
    return new Error(`${err.details} [${Status[err.code]}]`)
  }
  return err instanceof Error ? err : new Error(String(err))
}

/** Run `fn` with a connected client, closing it after and rewording its errors. */
export async function withControl<T>(address: string, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const client = connectControl(address)
  try {
    return await fn(client)
  } catch (err) {
    throw describeControlError(err, address)
  } finally {
    client.close()
  }
}
