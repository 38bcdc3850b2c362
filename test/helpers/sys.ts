/**
 * Test helpers for real things: temporary directories, shell commands, loop
 * devices and child processes, each tracked so that `cleanupAll()` (run by
 * every test file's afterAll/afterEach) removes what the test made, also when
 * the test failed.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createServer } from 'node:net'
import { promisify } from 'node:util'
import { xorshiftBytes } from '../../tools/lib/random.js'

const execFileP = promisify(execFile)

export const ROOT = resolve(import.meta.dirname, '../..')
export const CLI = join(ROOT, 'bin/blockswarm.js')

const cleanups: (() => Promise<void>)[] = []

/** Register a cleanup action; run in reverse order by cleanupAll(). */
export function onCleanup(fn: () => Promise<void>): void {
  cleanups.push(fn)
}

export async function cleanupAll(): Promise<void> {
  while (cleanups.length) {
    const fn = cleanups.pop()!
    try {
      await fn()
    } catch {
      // keep cleaning up the rest
    }
  }
}

export async function tempDir(prefix = 'bsw-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  onCleanup(() => rm(dir, { recursive: true, force: true }))
  return dir
}

export interface RunResult {
  stdout: string
  stderr: string
  code: number
}

/** Run a command; never throws on a non-zero exit (the result says it). */
export async function run(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  try {
    const p = execFileP(cmd, args, { maxBuffer: 256 * 1024 * 1024, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 600_000 })
    if (opts.input !== undefined) p.child.stdin!.end(opts.input)
    const { stdout, stderr } = await p
    return { stdout, stderr, code: 0 }
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number | string; message: string }
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? e.message, code: typeof e.code === 'number' ? e.code : 1 }
  }
}

/** Run a command and throw (with its stderr) unless it exits 0. */
export async function sh(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const r = await run(cmd, args, opts)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`)
  return r.stdout
}

/** Run the built `blockswarm` CLI. */
export function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], opts)
}

/** Attach a file to a loop device (read-write unless readOnly); detached by cleanupAll(). */
export async function loopAttach(file: string, opts: { readOnly?: boolean; partscan?: boolean } = {}): Promise<string> {
  const args = ['--find', '--show']
  if (opts.readOnly) args.push('--read-only')
  if (opts.partscan) args.push('--partscan')
  const dev = (await sh('losetup', [...args, file])).trim()
  onCleanup(async () => {
    await run('losetup', ['-d', dev])
  })
  return dev
}

/** Start a long-running child process; killed (by its PID) in cleanupAll(). */
export function startProcess(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd })
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await new Promise((r) => child.once('exit', r))
    }
  })
  return child
}

/** Wait for a child to exit, bounded in time; returns its exit code (or throws on timeout). */
export function waitExit(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolveP, reject) => {
    const t = setTimeout(() => reject(new Error(`process ${child.pid} did not exit within ${timeoutMs} ms`)), timeoutMs)
    child.once('exit', (code) => {
      clearTimeout(t)
      resolveP(code)
    })
  })
}

/** Collect a child's stdout+stderr as text (for assertions and failure messages). */
export function captureOutput(child: ChildProcess): { text: () => string } {
  let buf = ''
  child.stdout?.on('data', (d) => (buf += d))
  child.stderr?.on('data', (d) => (buf += d))
  return { text: () => buf }
}

/** Deterministic pseudo-random bytes (xorshift), so tests are reproducible. */
export const pseudoRandom = xorshiftBytes

/** A free TCP port below 32768 on 127.0.0.1 (this machine's ephemeral range starts above). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer()
      s.once('error', () => resolve(false))
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
    })
    if (ok) return port
  }
}

/** Poll `pred` until it holds, bounded in time; the error carries the output so far. */
export async function waitFor(what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number, output: () => string = () => ''): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await pred())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; output so far:\n${output()}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** The bytes of `length` at `offset` of a file or device (fewer at its end). */
export async function readRange(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.alloc(length)
    const { bytesRead } = await fh.read(buf, 0, length, offset)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}
