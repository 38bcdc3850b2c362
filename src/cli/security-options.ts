/**
 * The control-API security flags: the daemon's (--tls-cert, --tls-key,
 * --tls-client-ca, --token-file, --insecure) and the client commands' (--tls,
 * --tls-ca, --tls-cert, --tls-key, --token-file), each read into the options
 * of src/control.
 */
import type { Command } from 'commander'
import type { ClientSecurity } from '../control/client.js'
import { loadServerTls, readCertificate, readKeyPair, readToken, type ControlSecurity } from '../control/security.js'

export interface ControlSecurityFlags {
  tlsCert?: string
  tlsKey?: string
  tlsClientCa?: string
  tokenFile?: string
  insecure?: boolean
}

/** Add the daemon's security flags to a command. */
export function addControlSecurityOptions(cmd: Command): Command {
  return cmd
    .option('--tls-cert <file>', 'serve the control API over TLS with this PEM certificate (chain); needs --tls-key')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option('--tls-client-ca <file>', 'with --tls-cert: accept only clients with a certificate signed by this PEM CA (mutual TLS)')
    .option('--token-file <file>', 'require "authorization: Bearer TOKEN" on every control call, TOKEN being this file\'s content (default: $BLOCKSWARM_TOKEN)')
    .option('--insecure', 'allow a control address that is not loopback or unix: without TLS (anyone who can reach it controls the daemon)')
}

/** The daemon's flags as startControlServer's `security` option; reads and checks the files (errors name them). */
export function controlSecurityFrom(flags: ControlSecurityFlags): ControlSecurity {
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together: give both')
  if (flags.tlsClientCa !== undefined && flags.tlsCert === undefined) throw new Error('--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked only over TLS)')
  return {
    tls: flags.tlsCert === undefined ? undefined : loadServerTls({ cert: flags.tlsCert, key: flags.tlsKey!, clientCa: flags.tlsClientCa }),
    token: readToken(flags.tokenFile),
    insecure: Boolean(flags.insecure),
  }
}

export interface ClientSecurityFlags {
  tls?: boolean
  tlsCa?: string
  tlsCert?: string
  tlsKey?: string
  tokenFile?: string
}

/** Add the client commands' security flags to a command. */
export function addClientSecurityOptions(cmd: Command): Command {
  return cmd
    .option('--tls', 'connect to the daemon over TLS, trusting the system\'s CAs (implied by --tls-ca, --tls-cert)')
    .option('--tls-ca <file>', 'connect over TLS, trusting this PEM CA to have signed the daemon\'s certificate')
    .option('--tls-cert <file>', 'connect over TLS presenting this PEM client certificate (for a daemon with --tls-client-ca); needs --tls-key')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option('--token-file <file>', 'send the bearer token in this file (default: $BLOCKSWARM_TOKEN)')
}

/** The client commands' flags as connectControl's security option. */
export function clientSecurityFrom(flags: ClientSecurityFlags): ClientSecurity {
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together: give both')
  const useTls = Boolean(flags.tls) || flags.tlsCa !== undefined || flags.tlsCert !== undefined
  const pair = flags.tlsCert === undefined ? undefined : readKeyPair(flags.tlsCert, flags.tlsKey!, '--tls-cert', '--tls-key')
  return {
    token: readToken(flags.tokenFile),
    tls: useTls ? { ca: flags.tlsCa === undefined ? undefined : readCertificate(flags.tlsCa, '--tls-ca').pem, ...pair } : undefined,
  }
}
