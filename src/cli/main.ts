/**
 * The `blockswarm` executable: one program, subcommands registered by their own modules.
 */
import { Command, CommanderError } from 'commander'
import { VERSION } from '../version.js'
import { registerControlCommands } from './control-commands.js'
import { registerCreate } from './create.js'
import { registerDaemon } from './daemon.js'
import { registerDeploy } from './deploy.js'
import { registerInspect } from './inspect.js'
import { registerSeed } from './seed.js'

const program = new Command('blockswarm')
  .description('BitTorrent-based peer-to-peer disk imaging: put one image on many machines at once')
  .version(VERSION)
  .showHelpAfterError()

registerInspect(program)
registerCreate(program)
registerControlCommands(program)
registerDaemon(program)
registerSeed(program)
registerDeploy(program)

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode)
  process.stderr.write(`blockswarm: ${(err as Error).message}\n`)
  process.exit(1)
})
