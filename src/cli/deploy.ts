/**
 * `blockswarm deploy TORRENT TARGET`: one-shot deploy. Download what the
 * target lacks, verify every piece, finish (zero gaps if required, flush),
 * seed until the done policy says done, and exit 0 only if every piece was
 * verified and flushed. Then the then-action (--then, --then-command) runs,
 * after the session closed the target.
 *
 * Exit codes: 0 deployed; 1 not deployed (or a bad flag); 3 deployed, but
 * the then-action failed; 130/143 stopped by SIGINT/SIGTERM.
 */
import { existsSync } from 'node:fs'
import { type Command, Option } from 'commander'
import { deploySucceeded, etaSeconds } from '../session/outcome.js'
import { Session } from '../session/session.js'
import type { TorrentStatus } from '../swarm/status.js'
import { type DeployOutcome, describeThenAction, EXIT_THEN_FAILED, runThenAction, type ThenChoice, type ThenResult } from './then-action.js'
import { createImageFile } from '../storage/store.js'
import { extentsEnd } from '../torrent/extents.js'
import { formatBytes } from '../util/size.js'
import { loadTorrentFile } from './torrent-file.js'
import { addSwarmOptions, addThenOptions, addWebSeedOptions, makeLogger, optionalNumber, sessionOptions, type SwarmFlags, thenActionOf, type WebSeedFlags } from './options.js'
import { onStopSignal, outliveClosedStdout, signalExitCode } from './shutdown.js'
import { formatDuration, formatRate } from './torrent-view.js'

interface DeployFlags extends SwarmFlags, ThenChoice, WebSeedFlags {
  seedRatio?: string
  seedIdle: string
  force?: boolean
  sequential?: boolean
  skipCheck?: boolean
  checkFirst?: boolean
  createImage?: boolean
  json?: boolean
  progressInterval: string
  stallTimeout: string
}

/** Default --stall-timeout, seconds. */
export const DEFAULT_STALL_TIMEOUT = 300
/** Progress lines mention a stall from this many seconds without data on. */
const STALL_NOTICE_MS = 10_000

/** Why the deploy gives up: nothing came for the stall timeout (undefined while it may go on). */
function stallMessage(s: TorrentStatus, timeoutMs: number, now: number): string | undefined {
  if (timeoutMs <= 0 || s.lastProgress === undefined || now - s.lastProgress < timeoutMs) return undefined
  const why = [s.peers === 0 ? 'no peer connected' : `${s.peers} peer(s) connected, none sent data`]
  const unreachable = s.unreachable ?? []
  for (const u of unreachable.slice(0, 3)) why.push(`${u.address} unreachable: ${u.error} (${u.failures} failed dial${u.failures === 1 ? '' : 's'})`)
  if (unreachable.length > 3) why.push(`${unreachable.length - 3} more peers unreachable`)
  if (s.trackerError) why.push(`tracker: ${s.trackerError}`)
  return (
    `stalled: no data for ${timeoutMs / 1000} s (--stall-timeout); ${why.join('; ')}; ` +
    `${s.piecesDone}/${s.pieceCount} pieces are on the target, a new deploy resumes from there`
  )
}

function progressLine(s: TorrentStatus): string {
  const pct = `${(Math.floor(s.progress * 1000) / 10).toFixed(1)}%`
  return (
    `deploy ${s.name}: ${s.state} ${pct} ${s.piecesDone}/${s.pieceCount} pieces, ` +
    `down ${formatRate(s.downloadRate)}, up ${formatRate(s.uploadRate)}, peers ${s.peers} (${s.seeds} seeds), ETA ${formatDuration(etaSeconds(s))}` +
    (s.bans.length ? `, ${s.bans.length} banned` : '') +
    (s.lastProgress !== undefined && Date.now() - s.lastProgress >= STALL_NOTICE_MS ? `, no data for ${Math.floor((Date.now() - s.lastProgress) / 1000)}s` : '') +
    (s.trackerError ? `, tracker failing` : '')
  )
}

/** A cli-progress bar on a terminal (the module loaded only then), plain periodic lines otherwise. */
async function progressReporter(tty: boolean, intervalMs: number) {
  if (tty) {
    const { default: cliProgress } = await import('cli-progress')
    const bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: '{name} [{bar}] {percentage}% | {state} | ↓ {down} ↑ {up} | peers {peers} | ETA {timeLeft}',
        hideCursor: true,
        barsize: 30,
      },
      cliProgress.Presets.shades_classic,
    )
    let started = false
    return {
      update(s: TorrentStatus) {
        const fields = { name: s.name, state: s.state, down: formatRate(s.downloadRate), up: formatRate(s.uploadRate), peers: s.peers, timeLeft: formatDuration(etaSeconds(s)) }
        if (!started) {
          // bytes, not pieces: the bar moves with every block received (TorrentStatus.totalDone)
          bar.start(Math.max(s.total, 1), s.totalDone, fields)
          started = true
        } else bar.update(s.totalDone, fields)
      },
      stop: () => started && bar.stop(),
    }
  }
  let last = 0
  let lastState = ''
  return {
    update(s: TorrentStatus) {
      const t = Date.now()
      if (t - last < intervalMs && s.state === lastState) return
      last = t
      lastState = s.state
      process.stderr.write(progressLine(s) + '\n')
    },
    stop() {},
  }
}

/** The then-action's part of the result: its outcome, or (reboot, kexec) what is about to run. */
interface ThenReport {
  action: string
  /** null: it runs after this report. */
  ok: boolean | null
  message: string
  /** A command's exit code (null: killed by a signal). */
  exitCode?: number | null
}

function thenReport(action: string, r: ThenResult | undefined): ThenReport {
  if (!r) return { action, ok: null, message: 'runs after this report' }
  return { action, ok: r.ok, message: r.message, ...(r.commands ? { exitCode: r.commands[0].exitCode } : {}) }
}

function summary(s: TorrentStatus, ok: boolean, seconds: number, then: ThenReport | null) {
  return {
    ok,
    infoHash: s.infoHash,
    name: s.name,
    target: s.target,
    state: s.state,
    error: s.error ?? null,
    piecesDone: s.piecesDone,
    pieceCount: s.pieceCount,
    total: s.total,
    downloaded: s.totalDownloaded,
    uploaded: s.totalUploaded,
    reused: s.totalReused,
    checkRate: s.checkRate ?? null,
    /** Bytes the resume check read back from the target (a probe only, on a fresh disk). */
    checked: s.totalChecked,
    /** Seconds from the add to the first payload byte. */
    firstByteSeconds: s.firstDownload ? (s.firstDownload - s.startedAt) / 1000 : null,
    downloadSeconds: s.finishedAt ? (s.finishedAt - s.startedAt) / 1000 : null,
    /** Wall-clock time (ms since the epoch) when the last piece was verified and flushed. */
    finishedAt: s.finishedAt ?? null,
    seconds,
    doneReason: s.doneReason ?? null,
    bans: s.bans,
    /** Why announcing fails, if it does (the deploy may still work from --peer peers). */
    trackerError: s.trackerError ?? null,
    unreachable: s.unreachable ?? [],
    hashFailures: s.hashFailures,
    /** Payload bytes from web seeds (part of downloaded), and each web seed's state, bytes and last fault. */
    fromWebSeeds: s.totalFromWebSeeds,
    webSeeds: s.webSeeds,
    /** null when no then-action ran (plain exit, or interrupted). */
    then,
  }
}

function printHuman(r: ReturnType<typeof summary>, interrupted: string | undefined): void {
  const out: string[] = []
  if (r.ok) out.push(`deployed ${r.name} to ${r.target}: ${r.piecesDone}/${r.pieceCount} pieces verified and flushed`)
  else out.push(`deploy of ${r.name} to ${r.target} FAILED: ${interrupted ?? r.error ?? `stopped at ${r.piecesDone}/${r.pieceCount} pieces`}`)
  out.push(`  downloaded  ${formatBytes(r.downloaded)} (${r.downloaded} bytes)`)
  out.push(`  uploaded    ${formatBytes(r.uploaded)} (${r.uploaded} bytes)`)
  const check = r.checkRate === null ? '' : ` (resume check at ${formatRate(r.checkRate)})`
  out.push(`  re-used     ${formatBytes(r.reused)} (${r.reused} bytes) already on the target${check}`)
  const dl = r.downloadSeconds === null ? 'not finished' : `${r.downloadSeconds.toFixed(1)} s to finish`
  out.push(`  time        ${dl}, ${r.seconds.toFixed(1)} s in all${r.doneReason ? ` (stopped seeding: ${r.doneReason})` : ''}`)
  if (r.webSeeds.length > 0) {
    const share = r.downloaded > 0 ? ` (${((r.fromWebSeeds / r.downloaded) * 100).toFixed(0)}% of the download; ${(100 - (r.fromWebSeeds / r.downloaded) * 100).toFixed(0)}% from peers)` : ''
    out.push(`  web seeds   ${formatBytes(r.fromWebSeeds)} (${r.fromWebSeeds} bytes)${share}`)
    for (const w of r.webSeeds) out.push(`    ${w.url}: ${formatBytes(w.totalDownloaded)}${w.lastError ? `, last error: ${w.lastError}` : ''}`)
  }
  for (const b of r.bans) out.push(`  banned      ${b.peer}: ${b.reason}`)
  if (r.then) out.push(`  then        ${r.then.action}: ${r.then.message}`)
  process.stdout.write(out.join('\n') + '\n')
}

export function registerDeploy(program: Command): void {
  const cmd = program
    .command('deploy')
    .description('download an extent torrent onto a target, verify and flush it, seed a while, exit 0 only if all is on the target')
    .argument('<torrent>', '.torrent file')
    .argument('<target>', 'block device, partition or image file to write')
  addThenOptions(addWebSeedOptions(addSwarmOptions(cmd)), 'once the deploy is done (by the done policy) and the target is closed')
    .option('--seed-ratio <r>', 'after finishing, seed until uploaded >= R × size')
    .option('--seed-idle <seconds>', 'after finishing, seed until no upload for this long (0: stop at once)', '10')
    .option('--force', 'write to a target that is mounted or otherwise in use (never to one another blockswarm torrent holds)')
    .option('--sequential', 'download pieces in order instead of rarest first')
    .option('--skip-check', 'the target holds nothing of the image (a fresh disk): do not check it, download everything')
    .addOption(
      new Option('--check-first', 'check the whole target before downloading (default: the check runs beside the download, and a probe skips it on a fresh disk)').conflicts(
        'skipCheck',
      ),
    )
    .option('--create-image', "create TARGET as a sparse image file of the torrent's target size if it does not exist")
    .option('--stall-timeout <seconds>', 'give up (exit 1) when no data arrived for this long while pieces are missing (0: wait forever)', String(DEFAULT_STALL_TIMEOUT))
    .option('--progress-interval <seconds>', 'seconds between progress lines when not on a terminal', '2')
    .option('--json', 'print the result as one JSON object')
    .action(async (torrentPath: string, target: string, flags: DeployFlags) => {
      // not deployed until the report below says so: however this process ends before it (a closed stdout), it is not 0
      process.exitCode = 1
      const then = thenActionOf(flags)
      const torrent = await loadTorrentFile(torrentPath, 'blockswarm deploy TORRENT TARGET')
      if (flags.createImage && !existsSync(target)) {
        await createImageFile(target, torrent.meta.targetSize ?? extentsEnd(torrent.extents))
      }
      const seedRatio = optionalNumber(flags.seedRatio, '--seed-ratio')
      const seedIdle = optionalNumber(flags.seedIdle, '--seed-idle')
      const interval = (optionalNumber(flags.progressInterval, '--progress-interval') ?? 2) * 1000
      const stallMs = (optionalNumber(flags.stallTimeout, '--stall-timeout') ?? DEFAULT_STALL_TIMEOUT) * 1000
      const log = makeLogger(flags.logLevel ?? 'warn')
      const started = Date.now()
      const session = await Session.start(sessionOptions(flags, log))
      let metrics
      try {
        // prom-client only with --metrics (~0.06 s of CPU at every start otherwise)
        metrics = flags.metrics === undefined ? undefined : await (await import('../metrics/metrics-server.js')).serveSessionMetrics(session, flags.metrics, log)
      } catch (err) {
        await session.close()
        throw err
      }
      const progress = await progressReporter(!flags.json && process.stderr.isTTY === true, interval)

      let stopSignal: NodeJS.Signals | undefined
      let wake: () => void = () => {}
      const removeSignals = onStopSignal((sig) => {
        stopSignal = sig
        wake()
      })
      const settled = (s: TorrentStatus | undefined) => !s || s.state === 'error' || s.done
      let final: TorrentStatus | undefined
      let stalled: string | undefined
      try {
        const added = await session.add(torrent, { target, force: flags.force, sequential: flags.sequential, skipCheck: flags.skipCheck, checkFirst: flags.checkFirst, seedRatio, seedIdle, webSeeds: flags.webSeed, webSeedImages: flags.webSeedImage })
        const hash = added.infoHash
        await new Promise<void>((resolve) => {
          const check = () => {
            const s = session.get(hash)
            if (s) progress.update(s)
            stalled ??= s && stallMessage(s, stallMs, Date.now())
            if (stopSignal || stalled || settled(s)) {
              session.off('change', onChange)
              clearInterval(timer)
              resolve()
            }
          }
          const onChange = (s: TorrentStatus) => {
            if (s.infoHash === hash) check()
          }
          const timer = setInterval(check, Math.min(interval, 1000))
          session.on('change', onChange)
          wake = check
          check()
        })
        final = session.get(hash)
      } finally {
        progress.stop()
        removeSignals()
        await metrics?.close()
        try {
          await session.close()
        } catch (err) {
          process.stderr.write(`blockswarm: ${(err as Error).message}\n`)
          if (final && final.state !== 'error') final = { ...final, state: 'error', error: (err as Error).message }
        }
      }
      if (!final) throw new Error('the torrent disappeared from the session')
      const ok = !stopSignal && deploySucceeded(final)
      const interrupted = stopSignal ? `interrupted by ${stopSignal} at ${final.piecesDone}/${final.pieceCount} pieces` : stalled
      const outcome: DeployOutcome = { target, infoHash: final.infoHash, name: final.name, size: final.total, ok, error: final.error ?? interrupted }
      // a command's outcome goes into the report; reboot and kexec run after it (and only after a deploy)
      const runsNow = then.kind === 'command' && !stopSignal
      const runsAfter = (then.kind === 'reboot' || then.kind === 'kexec') && !stopSignal
      const thenResult = runsNow ? await runThenAction(then, [outcome], log) : undefined
      const action = describeThenAction(then)
      const shown = runsNow || (runsAfter && ok) ? thenReport(action, thenResult) : runsAfter ? { action, ok: false, message: 'not run: the deploy failed' } : null
      const r = summary(final, ok, (Date.now() - started) / 1000, shown)
      // reboot or kexec happen whether or not anyone reads the report
      const outlive = runsAfter && ok ? outliveClosedStdout() : undefined
      if (flags.json) process.stdout.write(JSON.stringify(interrupted ? { ...r, error: interrupted } : r, null, 2) + '\n')
      else printHuman(r, interrupted)
      if (!ok) process.exitCode = stopSignal ? signalExitCode(stopSignal) : 1
      else if (thenResult && !thenResult.ok) process.exitCode = EXIT_THEN_FAILED
      else process.exitCode = 0
      if (!runsAfter || !ok) return
      try {
        const after = await runThenAction(then, [outcome], log)
        if (!after.ok) {
          process.stderr.write(`blockswarm: --then ${then.kind} failed: ${after.message}\n`)
          process.exitCode = EXIT_THEN_FAILED
        }
      } finally {
        outlive?.()
      }
    })
}
