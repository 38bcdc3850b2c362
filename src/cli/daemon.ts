/**
 * `blockswarm daemon`: a long-running Session, controlled over gRPC at
 * `--listen` (the EZIO and blockswarm services) and given torrents on the
 * command line too (--add TORRENT=TARGET, --seed TORRENT=SOURCE). Logs are
 * pino JSON lines on stderr; SIGTERM and SIGINT (or a Shutdown call) close
 * the session gracefully: peers closed, targets flushed.
 *
 * It accepts the EZIO daemon's command line too (ezio-options.ts), and is
 * what the program runs when invoked under the name `ezio` (main.ts).
 *
 * With --exit-when-done it also stops by itself once every torrent is done
 * by its done policy (or failed), and then runs the then-action (--then,
 * --then-command) for the torrents it had. Exit codes as for deploy: 0; 1 a
 * torrent failed or the session did not close cleanly; 3 the then-action
 * failed.
 */
import { Command } from 'commander'
import { startControlServer } from '../control/server.js'
import { deploySucceeded } from '../session/outcome.js'
import { DEFAULT_CHOKING, DEFAULT_MAX_CONNECTIONS, effectiveMaxUploads, Session } from '../session/session.js'
import type { TorrentStatus } from '../swarm/status.js'
import { type DeployOutcome, describeThenAction, EXIT_THEN_FAILED, runThenAction, type ThenChoice } from './then-action.js'
import { loadTorrentFile } from './torrent-file.js'
import { addSwarmOptions, addThenOptions, collect, makeLogger, optionalNumber, sessionOptions, type SwarmFlags, thenActionOf } from './options.js'
import { addControlSecurityOptions, type ControlSecurityFlags, controlSecurityFrom } from './security-options.js'
import { onStopSignal } from './shutdown.js'
import { addDashboardOption, checkDashboardFlag, type DashboardFlags, startDashboard } from './dashboard-options.js'
import { addEzioOptions, type EzioFlags, fileModeOpener, foldEzioFlags } from './ezio-options.js'
import { VERSION } from '../version.js'

export const DEFAULT_CONTROL_ADDRESS = '127.0.0.1:50051'

interface DaemonFlags extends SwarmFlags, ControlSecurityFlags, ThenChoice, EzioFlags, DashboardFlags {
  exitWhenDone?: boolean
  listen: string[]
  add: string[]
  seed: string[]
  seedRatio?: string
  seedIdle?: string
  force?: boolean
  statusInterval: string
}

/** Every torrent has finished its life here: done by its policy, or failed. None at all does not count (more may be added). */
export function everyTorrentDone(statuses: readonly TorrentStatus[]): boolean {
  return statuses.length > 0 && statuses.every((s) => s.done || s.state === 'error')
}

/** How a torrent's deploy ended, for the then-action. */
export function outcomeOf(s: TorrentStatus): DeployOutcome {
  return { target: s.target, infoHash: s.infoHash, name: s.name, size: s.total, ok: deploySucceeded(s), error: s.error }
}

/** "TORRENT=PATH" → its two halves (split at the first '='). */
export function splitPair(text: string, flag: string): { torrent: string; path: string } {
  const at = text.indexOf('=')
  if (at <= 0 || at === text.length - 1) throw new Error(`${flag} ${JSON.stringify(text)} is not TORRENT=PATH (e.g. ${flag} sda1.torrent=/dev/sda1)`)
  return { torrent: text.slice(0, at), path: text.slice(at + 1) }
}

export function registerDaemon(program: Command): void {
  program.addCommand(daemonCommand('daemon').copyInheritedSettings(program))
}

/** The daemon as a command of this name: `daemon` under blockswarm, or the whole program when run as `ezio`. */
export function daemonCommand(name: string): Command {
  const cmd = new Command(name)
    .description('run a long-lived swarm session for any number of torrents, each with its own target (accepts the EZIO daemon\'s command line too)')
    .option('-l, --listen <addr>', `control (gRPC) address, host:port or unix:/path (repeatable; default ${DEFAULT_CONTROL_ADDRESS})`, collect, [])
  addEzioOptions(cmd)
  addControlSecurityOptions(cmd)
  addDashboardOption(cmd)
  addSwarmOptions(cmd)
    .option('--add <torrent=target>', 'deploy a torrent onto a target: check it, download what is missing, then seed (repeatable)', collect, [])
    .option('--seed <torrent=source>', 'seed a torrent from a golden image, trusted without hashing (repeatable)', collect, [])
    .option('--seed-ratio <r>', 'default done policy: stop seeding a finished torrent after uploading R × its size')
    .option('--seed-idle <seconds>', 'default done policy: stop seeding a finished torrent after this long without an upload')
    .option('--force', 'use targets that are mounted or otherwise in use (never one another blockswarm torrent holds)')
    .option('--status-interval <seconds>', 'seconds between status log lines (0: none)', '30')
    .option('--exit-when-done', 'exit once every torrent is done by its done policy (or failed); needs a done policy (flags or SetDonePolicy)')
  addThenOptions(cmd, 'when the daemon exits by --exit-when-done (not on SIGTERM or Shutdown)')
    .action(async (flags: DaemonFlags) => {
      if (flags.version) {
        // the same line as `blockswarm --version` (which also answers `blockswarm daemon --version`)
        process.stdout.write(`${VERSION}\n`)
        return
      }
      foldEzioFlags(flags, (option) => cmd.getOptionValueSource(option) === 'cli')
      const then = thenActionOf(flags)
      if (then.kind !== 'exit' && !flags.exitWhenDone) {
        throw new Error(`${then.kind === 'command' ? '--then-command' : `--then ${then.kind}`} runs when the daemon exits by itself: add --exit-when-done`)
      }
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
      if (flags.dashboard !== undefined) await checkDashboardFlag(flags.dashboard, security)
      const log = makeLogger(flags.logLevel ?? 'info')
      const options = { ...sessionOptions(flags, log), donePolicy: { seedRatio, seedIdle }, openStore: flags.file ? fileModeOpener : undefined }
      const session = await Session.start(options)
      let metrics
      try {
        // prom-client only with --metrics (~0.05 s of CPU at every start otherwise)
        metrics = flags.metrics === undefined ? undefined : await (await import('../metrics/metrics-server.js')).serveSessionMetrics(session, flags.metrics, log)
      } catch (err) {
        await session.close()
        throw err
      }
      let exitCode: ((code: number) => void) | undefined
      const exited = new Promise<number>((resolve) => (exitCode = resolve))
      let control
      try {
        control = await startControlServer(session, {
          listen,
          log,
          security,
          facts: {
            maxUploads: effectiveMaxUploads(options.choking ?? DEFAULT_CHOKING, options.maxUploads, options.maxConnections ?? DEFAULT_MAX_CONNECTIONS),
            maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
            memory: options.memory,
            uploadRate: options.uploadRate ?? 0,
            exitWhenDone: !!flags.exitWhenDone,
            thenAction: then.kind,
          },
          onExit: (code) => exitCode!(code),
        })
      } catch (err) {
        await metrics?.close()
        await session.close()
        throw err
      }
      let dashboard
      try {
        // no tracker here: nodes are the peers connected to this daemon; silent after two default announce intervals
        dashboard = flags.dashboard === undefined ? undefined : await startDashboard(session, flags.dashboard, security, { announceInterval: 30 }, log)
      } catch (err) {
        await control.shutdown()
        await metrics?.close()
        throw err
      }
      log.info({ control: control.addresses, btPort: session.port, dashboard: dashboard?.url }, 'daemon started')

      for (let i = 0; i < jobs.length; i++) {
        try {
          await session.add(torrents[i], { target: jobs[i].path, seedingMode: jobs[i].seedingMode, force: flags.force })
        } catch (err) {
          // one bad torrent does not stop the others
          log.error({ torrent: jobs[i].torrent, target: jobs[i].path, err: (err as Error).message }, 'torrent not added')
        }
      }
      if (flags.exitWhenDone && seedRatio === undefined && seedIdle === undefined) {
        log.warn('--exit-when-done without --seed-ratio or --seed-idle: torrents are never done until a done policy is set (SetDonePolicy)')
      }
      /** The torrents as they were when the last one became done (set once): the daemon is exiting by --exit-when-done. */
      let finalStatus: TorrentStatus[] | undefined
      let stopSignalled = false
      const checkAllDone = () => {
        if (!flags.exitWhenDone || finalStatus || stopSignalled) return
        const all = session.status()
        if (!everyTorrentDone(all)) return
        finalStatus = all
        log.info({ torrents: all.length, failed: all.filter((s) => s.state === 'error').length, then: describeThenAction(then) }, 'every torrent is done; exiting')
        void control.shutdown()
      }
      const onChange = (s: TorrentStatus) => {
        if (s.state === 'error') log.error({ torrent: s.name, infoHash: s.infoHash, err: s.error }, 'torrent error')
        checkAllDone()
      }
      session.on('change', onChange)
      session.on('removed', checkAllDone)
      checkAllDone()
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
        stopSignalled = true
        log.info({ signal }, 'shutting down')
        void control.shutdown()
      })
      let code = await exited
      clearInterval(timer)
      session.off('change', onChange)
      session.off('removed', checkAllDone)
      await metrics?.close()
      await dashboard?.close()
      if (finalStatus) {
        // a failed close may have left a target unflushed: no reboot or kexec then
        const closeFailed = code !== 0
        const outcomes = finalStatus.map(outcomeOf).map((o) => (closeFailed && o.ok ? { ...o, ok: false, error: 'the session did not close cleanly' } : o))
        if (outcomes.some((o) => !o.ok)) code = 1
        const r = await runThenAction(then, outcomes, log)
        if (!r.ok) {
          log.error({ then: describeThenAction(then), err: r.message }, 'then-action failed')
          if (code === 0) code = EXIT_THEN_FAILED
        }
      }
      log.info({ code }, 'daemon stopped')
      process.exitCode = code
    })
  return cmd
}
