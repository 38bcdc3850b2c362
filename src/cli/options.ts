/**
 * The swarm flags shared by `daemon`, `seed` and `deploy` (one spelling for
 * all three), turned into Session options; the then-action flags of `deploy`
 * and `daemon`; and the pino logger on stderr.
 */
import { type Command, Option } from 'commander'
import pino, { type Logger } from 'pino'
import { DEFAULT_CHOKING, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_UPLOADS, DEFAULT_PORT, type SessionOptions } from '../session/session.js'
import { CHOKING_POLICIES } from '../swarm/choker.js'
import { addressKey, parsePeerAddress } from '../swarm/peer-dialer.js'
import { ipBytes, PeerFilter } from '../swarm/peer-filter.js'
import { LSD_GROUP, LSD_PORT } from '../services/local-discovery.js'
import { DEFAULT_SLOW_START } from '../services/slow-start.js'
import { checkThenTools, THEN_KINDS, type ThenAction, thenActionFrom, type ThenChoice } from './then-action.js'
import { parseSize } from '../util/size.js'
import { WEB_SEED_CONNECTIONS } from '../swarm/web-seed.js'
import { REQUEST_TIMEOUT_MS, STALL_TIMEOUT_MS } from '../swarm/peer-connection.js'

export { addWebSeedOptions, type WebSeedFlags } from './web-seed-options.js'

export interface SwarmFlags {
  port: string
  bind?: string
  peer: string[]
  memory: string
  maxUploads?: string
  maxConnections?: string
  choking: 'fleet' | 'tit-for-tat'
  uploadRate?: string
  slowStart?: boolean
  slowStartPeriod: string
  slowStartStep: string
  hashThreads?: string
  allowPeers: string[]
  requestTimeout: string
  peerStallTimeout: string
  logLevel?: string
  metrics?: string
  lsd?: boolean
  webSeedConnections: string
  webSeedRate?: string
}

import { collect } from './web-seed-options.js'
export { collect }

/** Add the shared swarm flags to a command. */
export function addSwarmOptions(cmd: Command): Command {
  return cmd
    .option('-p, --port <n>', 'BitTorrent listen port (0: any free port)', String(DEFAULT_PORT))
    .option('--bind <addr>', 'local address to listen on and connect from (default: all)')
    .option('--peer <host:port>', 'a peer to connect to, for networks without a tracker (repeatable)', collect, [])
    .option('--memory <size>', 'memory for in-flight pieces and the upload cache', '64M')
    .option('--max-uploads <n>', `unchoke slots per torrent (default: every connected peer with --choking fleet, ${DEFAULT_MAX_UPLOADS} with tit-for-tat)`)
    .addOption(
      new Option('--choking <policy>', 'who may download from us: fleet (every interested peer; round-robin when --max-uploads caps the slots) or tit-for-tat (those that give the most, for swarms of strangers)')
        .choices([...CHOKING_POLICIES])
        .default(DEFAULT_CHOKING),
    )
    .option('--max-connections <n>', `peer connections per torrent (default ${DEFAULT_MAX_CONNECTIONS})`)
    .option('--upload-rate <size>', 'upload limit per second for the whole session, e.g. 100M (default: none)')
    .option('--slow-start', 'ramp the upload cap up from the first upload, step by step')
    .option('--slow-start-period <seconds>', 'slow start: seconds per step', String(DEFAULT_SLOW_START.period / 1000))
    .option('--slow-start-step <size>', 'slow start: cap growth per step, per second', `${DEFAULT_SLOW_START.step / 1024 / 1024}M`)
    .option('--hash-threads <n>', 'worker threads hashing pieces (0: the main thread; default 1 when there are 2 or more cores)')
    .option('--allow-peers <cidr,...>', 'only these networks may be peers, e.g. 10.0.0.0/8,fd00::/8: others are neither accepted nor dialed (repeatable; default: any)', collect, [])
    .option('--peer-stall-timeout <seconds>', 'seconds without a requested block before a peer counts as stalled: its requests go elsewhere, one is left with it (at most --request-timeout)', String(STALL_TIMEOUT_MS / 1000))
    .option('--request-timeout <seconds>', 'seconds a stalled peer then has to send a requested block before it is disconnected; a web seed stalled this long is backed off', String(REQUEST_TIMEOUT_MS / 1000))
    .addOption(new Option('--log-level <level>', 'log level (JSON lines on stderr)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9100)')
    .option('--lsd', `find peers on the LAN by Local Service Discovery (BEP 14: multicast to ${LSD_GROUP}:${LSD_PORT}, TTL 1); off by default`)
    .option('--web-seed-connections <n>', 'HTTP connections (pieces in flight) per web seed of a torrent', String(WEB_SEED_CONNECTIONS))
    .option('--web-seed-rate <size>', "download limit per second from a torrent's web seeds together, e.g. 50M (default: none)")
}

/** Add the then-action flags; `when` says when the action runs for this command. */
export function addThenOptions(cmd: Command, when: string): Command {
  return cmd
    .addOption(new Option('--then <action>', `what to do ${when} (default exit; reboot and kexec need --allow-dangerous)`).choices(THEN_KINDS))
    .option('--then-command <cmd>', `run CMD with /bin/sh ${when}, once per torrent, with BLOCKSWARM_TARGET, BLOCKSWARM_INFOHASH, BLOCKSWARM_NAME, BLOCKSWARM_TORRENT_SIZE, BLOCKSWARM_RESULT (ok|failed) and BLOCKSWARM_ERROR set`)
    .option('--kexec-kernel <path>', 'with --then kexec: the kernel in the deployed ext2/3/4 filesystem (default /boot/vmlinuz, then /vmlinuz)')
    .option('--kexec-initrd <path>', 'with --then kexec: the initrd in the deployed filesystem (default /boot/initrd.img, then /initrd.img, if there is one)')
    .option('--kexec-append <cmdline>', 'with --then kexec: the kernel command line (default "root=UUID=<the deployed filesystem\'s UUID> ro")')
    .option('--allow-dangerous', 'allow --then reboot and --then kexec')
}

/** The then-action the flags choose, with the tools it needs checked: before anything is downloaded. */
export function thenActionOf(flags: ThenChoice): ThenAction {
  const action = thenActionFrom(flags)
  checkThenTools(action)
  return action
}

function wholeNumber(text: string, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(text)
  if (!/^\d+$/.test(text.trim()) || n < min || n > max) throw new Error(`${flag} ${JSON.stringify(text)} must be a whole number from ${min} to ${max}`)
  return n
}

function size(text: string, flag: string): number {
  try {
    return parseSize(text)
  } catch (err) {
    throw new Error(`${flag}: ${(err as Error).message}`)
  }
}

/** Check a list of --peer values, naming the bad one (also one given by an IP address outside `allow`). */
export function checkPeers(peers: readonly string[], allow = PeerFilter.any): string[] {
  for (const p of peers) {
    let a
    try {
      a = parsePeerAddress(p)
    } catch (err) {
      throw new Error(`--peer: ${(err as Error).message}`)
    }
    if (ipBytes(a.host) && !allow.allows(a.host)) throw new Error(`--peer ${addressKey(a)} is outside --allow-peers ${allow}: it would never be connected`)
  }
  return [...peers]
}

function allowList(specs: readonly string[]): PeerFilter {
  try {
    return PeerFilter.parse(specs)
  } catch (err) {
    throw new Error(`--allow-peers: ${(err as Error).message}`)
  }
}

/** A positive number of seconds from a flag, in milliseconds. */
function seconds(text: string, flag: string): number {
  const n = Number(text)
  if (text.trim() === '' || !Number.isFinite(n) || n <= 0) throw new Error(`${flag} ${JSON.stringify(text)} must be a number of seconds > 0`)
  return Math.max(1, Math.round(n * 1000))
}

/** A positive ratio or a number of seconds from a flag, or undefined when absent. */
export function optionalNumber(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined
  const n = Number(text)
  if (text.trim() === '' || !Number.isFinite(n) || n < 0) throw new Error(`${flag} ${JSON.stringify(text)} must be a number >= 0`)
  return n
}

export function makeLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }))
}

export function sessionOptions(flags: SwarmFlags, log: Logger): SessionOptions {
  return {
    port: wholeNumber(flags.port, '--port', 0, 65535),
    bind: flags.bind,
    peers: checkPeers(flags.peer, allowList(flags.allowPeers)),
    allowPeers: flags.allowPeers,
    requestTimeout: seconds(flags.requestTimeout, '--request-timeout'),
    peerStallTimeout: seconds(flags.peerStallTimeout, '--peer-stall-timeout'),
    memory: size(flags.memory, '--memory'),
    maxUploads: flags.maxUploads === undefined ? undefined : wholeNumber(flags.maxUploads, '--max-uploads', 1),
    maxConnections: flags.maxConnections === undefined ? undefined : wholeNumber(flags.maxConnections, '--max-connections', 1),
    choking: flags.choking,
    uploadRate: flags.uploadRate === undefined ? undefined : size(flags.uploadRate, '--upload-rate'),
    slowStart: flags.slowStart
      ? {
          period: wholeNumber(flags.slowStartPeriod, '--slow-start-period', 1) * 1000,
          step: size(flags.slowStartStep, '--slow-start-step'),
        }
      : undefined,
    hashThreads: flags.hashThreads === undefined ? undefined : wholeNumber(flags.hashThreads, '--hash-threads', 0, 64),
    lsd: !!flags.lsd,
    webSeedConnections: wholeNumber(flags.webSeedConnections, '--web-seed-connections', 1, 64),
    webSeedRate: flags.webSeedRate === undefined ? undefined : size(flags.webSeedRate, '--web-seed-rate'),
    log,
  }
}
