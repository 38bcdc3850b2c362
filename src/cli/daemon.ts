/**
 * `blockswarm daemon`: a long-running Session, controlled over gRPC at
 * `--listen` (the EZIO and blockswarm services) and given torrents on the
 * command line too (--add TORRENT=TARGET, --seed TORRENT=SOURCE). Logs are
 * pino JSON lines on stderr; SIGTERM and SIGINT (or a Shutdown call) close
 * the session gracefully: peers closed, targets flushed.
 */
import type { Command } from 'commander'
import { startControlServer } from '../control/server.js'
import { DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_UPLOADS, Session } from '../session/session.js'
import type { TorrentStatus } from '../session/status.js'
import { loadTorrentFile } from './inspect.js'
import { addSwarmOptions, collect, makeLogger, optionalNumber, sessionOptions, type SwarmFlags } from './options.js'
import { addControlSecurityOptions, type ControlSecurityFlags, controlSecurityFrom } from './security-options.js'
import { onStopSignal } from './shutdown.js'

export const DEFAULT_CONTROL_ADDRESS = '127.0.0.1:50051'

interface DaemonFlags extends SwarmFlags, ControlSecurityFlags {
  listen: string[]
  add: string[]
  seed: string[]
  seedRatio?: string
  seedIdle?: string
  force?: boolean
  statusInterval: string
}

/** "TORRENT=PATH" → its two halves (split at the first '='). */
export function splitPair(text: string, flag: string): { torrent: string; path: string } {
  const at = text.indexOf('=')
  if (at <= 0 || at === text.length - 1) throw new Error(`${flag} ${JSON.stringify(text)} is not TORRENT=PATH (e.g. ${flag} sda1.torrent=/dev/sda1)`)
  return { torrent: text.slice(0, at), path: text.slice(at + 1) }
}

export function registerDaemon(program: Command): void {
  const cmd = program
    .command('daemon')
    .description('run a long-lived swarm session for any number of torrents, each with its own target')
    .option('--listen <addr>', `control (gRPC) address, host:port or unix:/path (repeatable; default ${DEFAULT_CONTROL_ADDRESS})`, collect, [])
  addControlSecurityOptions(cmd)
  addSwarmOptions(cmd)
    .option('--add <torrent=target>', 'deploy a torrent onto a target: check it, download what is missing, then seed (repeatable)', collect, [])
    .option('--seed <torrent=source>', 'seed a torrent from a golden image, trusted without hashing (repeatable)', collect, [])
    .option('--seed-ratio <r>', 'default done policy: stop seeding a finished torrent after uploading R × its size')
    .option('--seed-idle <seconds>', 'default done policy: stop seeding a finished torrent after this long without an upload')
    .option('--force', 'use targets that are mounted or otherwise in use')
    .option('--status-interval <seconds>', 'seconds between status log lines (0: none)', '30')
    .action(async (flags: DaemonFlags) => {
      const jobs = [
        ...flags.add.map((a) => ({ ...splitPair(a, '--add'), seedingMode: false })),
        ...flags.seed.map((a) => ({ ...splitPair(a, '--seed'), seedingMode: true })),
      ]
      const torrents = await Promise.all(jobs.map((j) => loadTorrentFile(j.torrent)))
      const seedRatio = optionalNumber(flags.seedRatio, '--seed-ratio')
      const seedIdle = optionalNumber(flags.seedIdle, '--seed-idle')
      const statusEvery = (optionalNumber(flags.statusInterval, '--status-interval') ?? 30) * 1000
      const listen = flags.listen.length > 0 ? flags.listen : [DEFAULT_CONTROL_ADDRESS]
      const security = controlSecurityFrom(flags)
      const log = makeLogger(flags.logLevel ?? 'info')
      const options = { ...sessionOptions(flags, log), donePolicy: { seedRatio, seedIdle } }
      const session = await Session.start(options)
      let exitCode: ((code: number) => void) | undefined
      const exited = new Promise<number>((resolve) => (exitCode = resolve))
      let control
      try {
        control = await startControlServer(session, {
          listen,
          log,
          security,
          facts: {
            maxUploads: options.maxUploads ?? DEFAULT_MAX_UPLOADS,
            maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
            memory: options.memory,
            uploadRate: options.uploadRate ?? 0,
          },
          onExit: (code) => exitCode!(code),
        })
      } catch (err) {
        await session.close()
        throw err
      }
      log.info({ control: control.addresses, btPort: session.port }, 'daemon started')

      for (let i = 0; i < jobs.length; i++) {
        try {
          await session.add(torrents[i], { target: jobs[i].path, seedingMode: jobs[i].seedingMode, force: flags.force })
        } catch (err) {
          // one bad torrent does not stop the others
          log.error({ torrent: jobs[i].torrent, target: jobs[i].path, err: (err as Error).message }, 'torrent not added')
        }
      }
      const onChange = (s: TorrentStatus) => {
        if (s.state === 'error') log.error({ torrent: s.name, infoHash: s.infoHash, err: s.error }, 'torrent error')
      }
      session.on('change', onChange)
      const timer =
        statusEvery > 0
          ? setInterval(() => {
              for (const s of session.status()) {
                log.info(
                  {
                    torrent: s.name,
                    state: s.state,
                    progress: +s.progress.toFixed(4),
                    downloadRate: Math.round(s.downloadRate),
                    uploadRate: Math.round(s.uploadRate),
                    peers: s.peers,
                    bans: s.bans.length,
                  },
                  'status',
                )
              }
            }, statusEvery)
          : undefined
      onStopSignal((signal) => {
        log.info({ signal }, 'shutting down')
        void control.shutdown()
      })
      const code = await exited
      clearInterval(timer)
      session.off('change', onChange)
      log.info({ code }, 'daemon stopped')
      process.exitCode = code
    })
}
