/**
 * The EZIO daemon's command line, which `blockswarm daemon` (and the same
 * program run under the name `ezio`) accepts with EZIO's meaning, mapped here
 * once onto blockswarm's own options:
 *
 *   -l, --listen ADDR          the control (gRPC) address: blockswarm's --listen
 *   -p, --port N               the BitTorrent port: blockswarm's --port
 *   -F, --file                 file mode: a target that does not exist is created as an extents directory
 *   --cache-size MB            the memory budget: --memory MB (in MiB)
 *   --aio-threads N            the hashing workers: --hash-threads N
 *   --slow-start, --slow-start-period S   blockswarm's own flags of the same names
 *   -v, --version              print the version and exit
 *   -h, --help                 (commander's)
 *
 * -l and -p are short spellings added to the existing long flags (daemon.ts,
 * options.ts); nothing of blockswarm's own command line was renamed.
 */
import type { Command } from 'commander'
import type { StoreOpener } from '../session/session.js'
import { openStore } from '../storage/store.js'

export interface EzioFlags {
  file?: boolean
  cacheSize?: string
  aioThreads?: string
  version?: boolean
  memory: string
  hashThreads?: string
}

/** Add EZIO's own flags (those blockswarm did not have under any spelling). */
export function addEzioOptions(cmd: Command): Command {
  return cmd
    .option('-F, --file', "EZIO's file mode: a target (save_path) that does not exist is created as an extents directory, NAME/<offset> files in it")
    .option('--cache-size <MB>', "EZIO's spelling of --memory, in MiB (e.g. --cache-size 64 is --memory 64M)")
    .option('--aio-threads <n>', "EZIO's spelling of --hash-threads: worker threads hashing pieces (disk I/O runs on Node's own thread pool)")
    .option('-v, --version', 'print the version and exit')
}

function positiveWhole(text: string, flag: string, max: number): number {
  const n = Number(text)
  if (!/^\d+$/.test(text.trim()) || n < 1 || n > max) throw new Error(`${flag} ${JSON.stringify(text)} must be a whole number from 1 to ${max}`)
  return n
}

/**
 * Fold --cache-size into --memory and --aio-threads into --hash-threads (in
 * place, before the swarm flags are read); giving both spellings of one
 * setting is an error. `fromCommandLine(name)` says whether a flag was given.
 */
export function foldEzioFlags(flags: EzioFlags, fromCommandLine: (name: 'memory' | 'hashThreads') => boolean): void {
  if (flags.cacheSize !== undefined) {
    if (fromCommandLine('memory')) throw new Error('--cache-size and --memory set the same memory budget: give one of them')
    flags.memory = `${positiveWhole(flags.cacheSize, '--cache-size', 1024 * 1024)}M`
  }
  if (flags.aioThreads !== undefined) {
    if (fromCommandLine('hashThreads')) throw new Error('--aio-threads and --hash-threads set the same hashing workers: give one of them')
    flags.hashThreads = String(positiveWhole(flags.aioThreads, '--aio-threads', 64))
  }
}

/** -F: every torrent's store opened with missing write targets created (storage's createMissing). */
export const fileModeOpener: StoreOpener = (torrent, target, opts) => openStore(torrent, target, { ...opts, createMissing: true })
