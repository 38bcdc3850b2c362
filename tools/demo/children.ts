/**
 * The demo's child processes (`blockswarm seed`, `blockswarm daemon` and the
 * one-shot commands), run from this package's bin/: their output is kept for
 * error messages, and they are stopped by PID, gracefully first.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Cleanup } from './cleanup.js'

/** bin/blockswarm.js of this package, found from dist/tools/demo/ (built) or tools/demo/ (source). */
export const CLI: string = (() => {
  for (const up of ['../../..', '../..']) {
    const bin = resolve(import.meta.dirname, up, 'bin/blockswarm.js')
    if (existsSync(bin)) return bin
  }
  throw new Error(`cannot find bin/blockswarm.js above ${import.meta.dirname}`)
})()

/** Output kept per child: the tail is what explains a failure. */
const KEEP = 16 * 1024

export class Child {
  private out = ''
  readonly exited: Promise<number | null>

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
  ) {
    const keep = (d: Buffer) => (this.out = (this.out + d.toString()).slice(-KEEP))
    process.stdout?.on('data', keep)
    process.stderr?.on('data', keep)
    this.exited = new Promise((r) => process.once('exit', (code, signal) => r(signal ? null : code)))
  }

  get pid(): number {
    return this.process.pid!
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null
  }

  /** The last lines it printed, indented, for an error message. */
  output(): string {
    const text = this.out.trim()
    return text ? text.split('\n').slice(-20).map((l) => `    ${l}`).join('\n') : '    (no output)'
  }

  /** Resolve once `text` appears in its output; reject if it exits first or `timeoutMs` passes. */
  async waitForOutput(text: string, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs
    while (!this.out.includes(text)) {
      if (!this.running) throw new Error(`${this.name} (pid ${this.pid}) exited with ${this.process.exitCode ?? this.process.signalCode} before it was ready:\n${this.output()}`)
      if (Date.now() > until) throw new Error(`${this.name} (pid ${this.pid}) was not ready within ${timeoutMs / 1000} s:\n${this.output()}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  /** Send `signal`, then SIGKILL if it has not exited after `graceMs`; resolves to its exit code (null if killed). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<number | null> {
    if (this.running) this.process.kill(signal)
    const timer = setTimeout(() => this.running && this.process.kill('SIGKILL'), graceMs)
    try {
      return await this.exited
    } finally {
      clearTimeout(timer)
    }
  }
}

/** Start `blockswarm ARGS…` in the background; `cleanup` stops it (SIGTERM, then SIGKILL) unless it already exited. */
export function startCli(name: string, args: string[], cleanup: Cleanup): Child {
  const child = new Child(name, spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }))
  cleanup.add(`stop ${name} (pid ${child.pid})`, async () => {
    await child.stop('SIGTERM', 5000)
  })
  return child
}

/** Run `blockswarm ARGS…` to the end; its stdout, or an error with its stderr. */
export function runCli(args: string[], timeoutMs: number, cleanup: Cleanup): Promise<string> {
  return runTool(process.execPath, [CLI, ...args], timeoutMs, { cleanup, name: `blockswarm ${args[0]}` })
}

/** Run a program to the end (`cleanup`, if given, kills it if it runs then); its stdout, or an error naming it with its stderr. */
export function runTool(cmd: string, args: string[], timeoutMs: number, opts: { cleanup?: Cleanup; name?: string } = {}): Promise<string> {
  const name = opts.name ?? cmd
  return new Promise((resolveP, reject) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      dismiss()
      if (!err) return resolveP(stdout)
      const why = err.killed ? `was stopped after ${timeoutMs / 1000} s` : `exited with ${err.code}`
      reject(new Error(`${name} ${why}: ${(stderr || stdout || err.message).trim()}`))
    })
    const dismiss =
      opts.cleanup?.add(`kill ${name} (pid ${child.pid})`, () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      }) ?? (() => {})
  })
}
