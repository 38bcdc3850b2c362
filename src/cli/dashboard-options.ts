/**
 * `--dashboard [ADDR:]PORT` on `seed` and `daemon`: the fleet view
 * (src/dashboard) of the session's torrents. The daemon's dashboard follows
 * its control-port flags (--tls-cert, --tls-key, --tls-client-ca,
 * --token-file, --insecure); `seed` gets the same flags for its dashboard.
 */
import type { Command } from 'commander'
import type { Logger } from 'pino'
import type { ControlSecurity } from '../control/security.js'
import type { AnnounceEmitter } from '../dashboard/fleet-feed.js'
import type { Session } from '../session/session.js'

export interface DashboardFlags {
  dashboard?: string
}

export function addDashboardOption(cmd: Command): Command {
  return cmd.option(
    '--dashboard <[addr:]port>',
    'serve the fleet view (a web page, /api/fleet JSON, /api/fleet/events SSE), read-only; a bare PORT listens on loopback, another address needs TLS or a token (or --insecure)',
  )
}

/** seed's own copy of the control port's security flags, for its dashboard. */
export function addDashboardSecurityOptions(cmd: Command): Command {
  return cmd
    .option('--tls-cert <file>', 'serve the dashboard over HTTPS with this PEM certificate (chain); needs --tls-key')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option('--tls-client-ca <file>', 'with --tls-cert: accept only browsers and tools with a client certificate signed by this PEM CA')
    .option('--token-file <file>', 'require this file\'s token on every dashboard request (?token=TOKEN or "authorization: Bearer TOKEN"; default: $BLOCKSWARM_TOKEN)')
    .option('--insecure', 'allow a dashboard address that is not loopback without TLS')
}

export interface Dashboard {
  readonly url: string
  close(): Promise<void>
}

/** Refuse a --dashboard address before anything is started (as the control port's addresses are all checked before one is bound). */
export async function checkDashboardFlag(address: string, security: ControlSecurity): Promise<void> {
  const { checkDashboardHost, parseDashboardAddress } = await import('../dashboard/fleet-server.js')
  checkDashboardHost(parseDashboardAddress(address).host, security)
}

/** Start the fleet feed and its server; the feed stops if the server cannot start. */
export async function startDashboard(
  session: Session,
  address: string,
  security: ControlSecurity,
  feedOptions: { announceInterval: number; tracker?: AnnounceEmitter },
  log: Logger,
): Promise<Dashboard> {
  const [{ FleetFeed }, { startFleetServer }] = await Promise.all([import('../dashboard/fleet-feed.js'), import('../dashboard/fleet-server.js')])
  const feed = new FleetFeed(session, feedOptions)
  try {
    const server = await startFleetServer(feed, address, security, log)
    return {
      url: server.url,
      close: async () => {
        feed.close()
        await server.close()
      },
    }
  } catch (err) {
    feed.close()
    throw err
  }
}
