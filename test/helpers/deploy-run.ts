/**
 * Real `blockswarm seed` and `blockswarm deploy` processes for the fault
 * tests: free loopback ports, a seeder that is up when it returns, a deploy
 * whose progress lines are followed (pieces done, state) so that a test can
 * act at a chosen moment, its --json result, and byte comparisons of targets.
 * Every process is started through startProcess (killed by cleanupAll).
 */
import type { ChildProcess } from 'node:child_process'
import { open } from 'node:fs/promises'
import { captureOutput, CLI, freePort, startProcess, waitFor } from './sys.js'

export interface Proc {
  readonly child: ChildProcess
  readonly text: () => string
}

export interface Seeder extends Proc {
  /** The port it listens on, 127.0.0.1. */
  readonly port: number
}

/**
 * `blockswarm seed TORRENT SOURCE` on 127.0.0.1, once it says it is seeding;
 * on any free port (the kernel's choice, so no other test can take it first)
 * unless `port` is given (a seeder started again where peers look for it).
 */
export async function startSeed(torrentFile: string, source: string, extra: string[] = [], port = 0): Promise<Seeder> {
  const child = startProcess(process.execPath, [CLI, 'seed', torrentFile, source, '--port', String(port), '--bind', '127.0.0.1', '--log-level', 'warn', ...extra])
  const out = captureOutput(child)
  await waitFor('the seeder to start', () => out.text().includes('opentracker whitelist line') || child.exitCode !== null, 30_000, out.text)
  if (child.exitCode !== null) throw new Error(`seeder exited ${child.exitCode}:\n${out.text()}`)
  const listening = /^ {2}peer port +(\d+)/m.exec(out.text())
  if (!listening) throw new Error(`seeder did not say its port:\n${out.text()}`)
  return { child, text: out.text, port: Number(listening[1]) }
}

/** A running `blockswarm deploy`, followed through its progress lines (--progress-interval 0.05, not a terminal). */
export interface DeployProc extends Proc {
  /** The most pieces a progress line reported done. */
  readonly pieces: () => number
  /** The state in the last progress line ('' before the first). */
  readonly state: () => string
}

export function startDeploy(args: string[]): DeployProc {
  const child = startProcess(process.execPath, [CLI, 'deploy', ...args, '--progress-interval', '0.05'])
  const out = captureOutput(child)
  const lines = () => [...out.text().matchAll(/^deploy [^:]+: (\w+) [\d.]+% (\d+)\/\d+ pieces/gm)]
  return {
    child,
    text: out.text,
    pieces: () => Math.max(0, ...lines().map((m) => Number(m[2]))),
    state: () => lines().at(-1)?.[1] ?? '',
  }
}

/** What `deploy --json` prints. */
export interface DeployJson {
  ok: boolean
  state: string
  error: string | null
  piecesDone: number
  pieceCount: number
  total: number
  downloaded: number
  reused: number
  trackerError: string | null
  unreachable: { address: string; error: string; failures: number }[]
}

/** The JSON object at the start of a deploy's stdout. */
export function deployJson(text: string): DeployJson {
  const start = text.indexOf('{\n')
  const end = text.indexOf('\n}', start)
  if (start < 0 || end < 0) throw new Error(`deploy printed no JSON:\n${text}`)
  return JSON.parse(text.slice(start, end + 2)) as DeployJson
}

/** The first offset in [0, length) where two files or devices differ, or -1. */
export async function firstDifference(a: string, b: string, length: number): Promise<number> {
  const [fa, fb] = [await open(a, 'r'), await open(b, 'r')]
  try {
    const chunk = 1024 * 1024
    const [ba, bb] = [Buffer.alloc(chunk), Buffer.alloc(chunk)]
    for (let at = 0; at < length; at += chunk) {
      const n = Math.min(chunk, length - at)
      const [ra, rb] = [await fa.read(ba, 0, n, at), await fb.read(bb, 0, n, at)]
      if (ra.bytesRead !== n || rb.bytesRead !== n) return at + Math.min(ra.bytesRead, rb.bytesRead)
      if (!ba.subarray(0, n).equals(bb.subarray(0, n))) {
        for (let i = 0; i < n; i++) if (ba[i] !== bb[i]) return at + i
      }
    }
    return -1
  } finally {
    await fa.close()
    await fb.close()
  }
}

export { freePort, waitFor }
