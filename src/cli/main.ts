/**
 * The `blockswarm` executable: one program, subcommands registered by their
 * own modules. Only the module of the command being run is loaded (every one
 * of them for --help or an unknown command, none for --version): loading them all costs ~0.4 s
 * and ~40 MiB of memory that a deploy or a seeder would carry to the end.
 *
 * Run under the name `ezio` (a symlink to bin/blockswarm.js), the program is
 * the daemon with the EZIO daemon's command line: `ezio -l ADDR -p N -F …` is
 * `blockswarm daemon -l ADDR -p N -F …`, so an installation swaps binaries
 * without touching its scripts.
 */
import { basename } from 'node:path'
import { Command, CommanderError } from 'commander'
import { VERSION } from '../version.js'
import { endQuietlyOnClosedStdout } from './shutdown.js'

type Register = (program: Command) => void

/** Each command module, in help order, with the commands it registers. */
const MODULES: { readonly commands: readonly string[]; readonly load: () => Promise<Register> }[] = [
  { commands: ['inspect'], load: async () => (await import('./inspect.js')).registerInspect },
  { commands: ['create'], load: async () => (await import('./create.js')).registerCreate },
  {
    commands: ['add', 'status', 'pause', 'resume', 'remove', 'shutdown', 'version'],
    load: async () => (await import('./control-commands.js')).registerControlCommands,
  },
  { commands: ['daemon'], load: async () => (await import('./daemon.js')).registerDaemon },
  { commands: ['seed'], load: async () => (await import('./seed.js')).registerSeed },
  { commands: ['deploy'], load: async () => (await import('./deploy.js')).registerDeploy },
  { commands: ['fleet'], load: async () => (await import('./fleet.js')).registerFleet },
]

/** The name the program was run under (a symlink's own name). */
const invokedAs = basename(process.argv[1] ?? 'blockswarm')

async function main(argv: string[]): Promise<void> {
  if (invokedAs === 'ezio') {
    const ezio = (await import('./daemon.js')).daemonCommand('ezio').showHelpAfterError()
    await ezio.parseAsync(argv)
    return
  }
  const program = new Command('blockswarm')
    .description('BitTorrent-based peer-to-peer disk imaging: put one image on many machines at once')
    .version(VERSION)
    .showHelpAfterError()
  const first = argv[2]
  const one = MODULES.find((m) => m.commands.includes(first))
  const versionOnly = first === '-V' || first === '--version'
  for (const m of one ? [one] : versionOnly ? [] : MODULES) (await m.load())(program)
  await program.parseAsync(argv)
}

/**
 * Run the program on `argv` (process.argv), as bin/blockswarm.js does. Importing
 * this module runs nothing: the bundle's chunks import it, and a worker thread
 * that loads one of them (create's hashers) must not start the program again.
 */
export function runCli(argv: string[]): void {
  endQuietlyOnClosedStdout()
  main(argv).catch((err: unknown) => {
    if (err instanceof CommanderError) process.exit(err.exitCode)
    process.stderr.write(`${invokedAs === 'ezio' ? 'ezio' : 'blockswarm'}: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
