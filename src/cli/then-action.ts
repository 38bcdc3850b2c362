/**
 * What a node does once its deploy is over: exit, reboot, kexec into the
 * deployed system, or run a command. "Over" means done by the done policy
 * (every piece verified and flushed, then seeded until the policy said
 * done) and the session closed (targets flushed and closed), not merely
 * downloaded.
 *
 * Reboot and kexec end the machine's current life: they are refused unless
 * allowed explicitly, and the check happens at startup, before a byte is
 * downloaded. They run only when every torrent was deployed; a command runs
 * either way and reads the result from BLOCKSWARM_RESULT.
 */
import { spawn } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { extractBootFiles } from './boot-files.js'

export type ThenAction =
  | { readonly kind: 'exit' }
  | { readonly kind: 'reboot' }
  /** kernel / initrd: paths in the deployed filesystem (default /boot/vmlinuz, /boot/initrd.img); append: the kernel command line. */
  | { readonly kind: 'kexec'; readonly kernel?: string; readonly initrd?: string; readonly append?: string }
  | { readonly kind: 'command'; readonly command: string }

export const THEN_KINDS = ['exit', 'reboot', 'kexec'] as const

/** Exit code of deploy and daemon when every torrent was deployed but the then-action failed. */
export const EXIT_THEN_FAILED = 3

/** The choice as the command line spells it. */
export interface ThenChoice {
  readonly then?: string
  readonly thenCommand?: string
  readonly kexecKernel?: string
  readonly kexecInitrd?: string
  readonly kexecAppend?: string
  readonly allowDangerous?: boolean
}

/** The action a choice names; throws (saying what to add or drop) when it is contradictory or not allowed. */
export function thenActionFrom(c: ThenChoice): ThenAction {
  if (c.then !== undefined && !(THEN_KINDS as readonly string[]).includes(c.then)) {
    throw new Error(`--then ${JSON.stringify(c.then)} is not one of ${THEN_KINDS.join(', ')} (for a command, give --then-command 'CMD')`)
  }
  if (c.thenCommand !== undefined && c.then !== undefined) throw new Error(`give either --then ${c.then} or --then-command, not both`)
  if (c.thenCommand !== undefined && c.thenCommand.trim() === '') throw new Error('--then-command is empty')
  const kexecFlags = c.kexecKernel !== undefined || c.kexecInitrd !== undefined || c.kexecAppend !== undefined
  if (kexecFlags && c.then !== 'kexec') throw new Error('--kexec-kernel, --kexec-initrd and --kexec-append go with --then kexec')
  if ((c.then === 'reboot' || c.then === 'kexec') && !c.allowDangerous) {
    const what = c.then === 'reboot' ? 'reboots this machine' : 'replaces the running system with the deployed kernel (kexec)'
    throw new Error(`--then ${c.then} ${what} once the deploy is done: add --allow-dangerous to allow it`)
  }
  if (c.thenCommand !== undefined) return { kind: 'command', command: c.thenCommand }
  if (c.then === 'reboot') return { kind: 'reboot' }
  if (c.then === 'kexec') return { kind: 'kexec', kernel: c.kexecKernel, initrd: c.kexecInitrd, append: c.kexecAppend }
  return { kind: 'exit' }
}

export function describeThenAction(a: ThenAction): string {
  return a.kind === 'command' ? `command ${JSON.stringify(a.command)}` : a.kind
}

function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean)) {
    try {
      accessSync(join(dir, name), constants.X_OK)
      return true
    } catch {
      // not in this directory
    }
  }
  return false
}

/** Tools the action needs, checked at startup so that a missing one does not surface after the deploy. */
export function checkThenTools(a: ThenAction): void {
  const need = a.kind === 'reboot' ? [['reboot', 'systemd or sysvinit']] : a.kind === 'kexec' ? [['kexec', 'kexec-tools'], ['debugfs', 'e2fsprogs']] : []
  for (const [tool, pkg] of need) if (!onPath(tool)) throw new Error(`--then ${a.kind} needs ${tool}, which is not on PATH: install ${pkg}`)
}

/** How one torrent's deploy ended, as the action sees it. */
export interface DeployOutcome {
  readonly target: string
  readonly infoHash: string
  readonly name: string
  /** Bytes the torrent covers. */
  readonly size: number
  /** Every piece verified and flushed. */
  readonly ok: boolean
  readonly error?: string
}

/** The environment a --then-command gets for one torrent (besides the inherited one). */
export function thenEnv(o: DeployOutcome): Record<string, string> {
  return {
    BLOCKSWARM_TARGET: o.target,
    BLOCKSWARM_INFOHASH: o.infoHash,
    BLOCKSWARM_NAME: o.name,
    BLOCKSWARM_TORRENT_SIZE: String(o.size),
    BLOCKSWARM_RESULT: o.ok ? 'ok' : 'failed',
    BLOCKSWARM_ERROR: o.ok ? '' : (o.error ?? 'not every piece was verified'),
  }
}

/** `kexec` arguments that load a kernel for the next `kexec -e`. */
export function kexecLoadArgs(kernel: string, initrd: string | undefined, append: string): string[] {
  return ['-l', kernel, ...(initrd ? [`--initrd=${initrd}`] : []), `--append=${append}`]
}

/** The command line when none is given: the deployed filesystem as root, read-only until its init remounts it. */
export function defaultKexecAppend(uuid: string): string {
  return `root=UUID=${uuid} ro`
}

export interface ThenResult {
  readonly ok: boolean
  /** What happened, for people (empty for exit). */
  readonly message: string
  /** Per torrent, for a command: its exit code (null if killed by a signal). */
  readonly commands?: readonly { readonly target: string; readonly exitCode: number | null; readonly signal: string | null }[]
}

/** Run a program, its output on our stderr (stdout stays the command's result); resolves with how it ended. */
function runTool(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ exitCode: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 2, 2], env: env ?? process.env })
    child.once('error', (err) => reject(new Error(`cannot run ${file}: ${err.message}`)))
    child.once('exit', (exitCode, signal) => resolve({ exitCode, signal }))
  })
}

const ended = (r: { exitCode: number | null; signal: string | null }) => (r.signal ? `was killed by ${r.signal}` : `exited ${r.exitCode}`)

async function runCommand(command: string, outcomes: readonly DeployOutcome[], log?: Logger): Promise<ThenResult> {
  const commands = []
  for (const o of outcomes) {
    log?.info({ torrent: o.name, target: o.target, result: o.ok ? 'ok' : 'failed', command }, 'then-command starting')
    const r = await runTool('/bin/sh', ['-c', command], { ...process.env, ...thenEnv(o) })
    log?.[r.exitCode === 0 ? 'info' : 'error']({ torrent: o.name, exitCode: r.exitCode, signal: r.signal }, 'then-command finished')
    commands.push({ target: o.target, ...r })
  }
  const failed = commands.filter((c) => c.exitCode !== 0)
  const message = failed.length
    ? failed.map((c) => `--then-command for ${c.target} ${ended(c)}`).join('; ')
    : `--then-command exited 0${outcomes.length > 1 ? ` for all ${outcomes.length} torrents` : ''}`
  return { ok: failed.length === 0, message, commands }
}

async function kexec(a: Extract<ThenAction, { kind: 'kexec' }>, targets: readonly string[], log?: Logger): Promise<ThenResult> {
  const dir = await mkdtemp(join(tmpdir(), 'blockswarm-kexec-'))
  try {
    // the first target whose filesystem holds a kernel (a separate /boot may be any of them)
    const problems: string[] = []
    for (const target of targets) {
      let files
      try {
        files = await extractBootFiles(target, dir, { kernel: a.kernel, initrd: a.initrd })
      } catch (err) {
        problems.push((err as Error).message)
        continue
      }
      const args = kexecLoadArgs(files.kernel, files.initrd, a.append ?? defaultKexecAppend(files.uuid))
      log?.info({ target, kernel: files.kernelPath, initrd: files.initrdPath ?? null, args }, 'kexec: loading the deployed kernel')
      const load = await runTool('kexec', args)
      if (load.exitCode !== 0) return { ok: false, message: `kexec ${args.join(' ')} ${ended(load)}` }
      log?.info('kexec: starting the deployed kernel')
      const exec = await runTool('kexec', ['-e'])
      return { ok: false, message: `kexec -e returned (it ${ended(exec)}): the loaded kernel did not start` }
    }
    return { ok: false, message: `kexec: no kernel to load: ${problems.join('; ')}` }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * Carry out the action once every torrent's deploy is over (the session
 * closed). Reboot and kexec are skipped, failing, when any deploy failed.
 */
export async function runThenAction(a: ThenAction, outcomes: readonly DeployOutcome[], log?: Logger): Promise<ThenResult> {
  if (a.kind === 'exit') return { ok: true, message: '' }
  if (a.kind === 'command') return runCommand(a.command, outcomes, log)
  const failed = outcomes.filter((o) => !o.ok)
  if (failed.length > 0 || outcomes.length === 0) {
    const why = failed.length ? `the deploy of ${failed.map((o) => `${o.name} to ${o.target}`).join(', ')} failed` : 'nothing was deployed'
    return { ok: false, message: `not running --then ${a.kind}: ${why}` }
  }
  if (a.kind === 'kexec') return kexec(a, outcomes.map((o) => o.target), log)
  log?.info('rebooting')
  const r = await runTool('reboot', [])
  return r.exitCode === 0 ? { ok: true, message: 'reboot started' } : { ok: false, message: `reboot ${ended(r)}` }
}
