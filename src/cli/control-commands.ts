/**
 * The thin client commands: add, status, pause, resume, remove, shutdown,
 * version. Each talks to a running daemon over its gRPC control API
 * (--daemon ADDR, default 127.0.0.1:50051 or $BLOCKSWARM_DAEMON), over TLS
 * and with a bearer token if asked (security-options.ts).
 */
import { resolve } from 'node:path'
import cliProgress, { type SingleBar } from 'cli-progress'
import { type Command, InvalidArgumentError, Option } from 'commander'
import type { TorrentInfo } from '../control/blockswarm-wire.js'
import { type ClientSecurity, type ControlClient, daemonAddress, withControl } from '../control/client.js'
import { isInfoHash } from '../torrent/metainfo.js'
import { readTorrentFile } from './torrent-file.js'
import { VERSION } from '../version.js'
import { addClientSecurityOptions, type ClientSecurityFlags, clientSecurityFrom } from './security-options.js'
import { BAR_FORMAT, barFields, stateText, torrentJson, torrentTable } from './torrent-view.js'
import { addWebSeedOptions, collect } from './web-seed-options.js'

/** Add --daemon and the TLS / token flags. */
const daemonOptions = (cmd: Command): Command =>
  addClientSecurityOptions(cmd.addOption(new Option('--daemon <addr>', 'daemon control address: host:port or unix:/path (default $BLOCKSWARM_DAEMON or 127.0.0.1:50051)')))

interface DaemonFlags extends ClientSecurityFlags {
  daemon?: string
}

function clientSecurity(flags: DaemonFlags): ClientSecurity {
  const security = clientSecurityFrom(flags)
  // grpc-js gives the --daemon host to TLS as the server name, and Node flags an IP there (DEP0123) on stderr: a note for grpc-js, not for the user.
  if (security.tls) process.noDeprecation = true
  return security
}

/** Run `fn` against the daemon the flags name. */
const control = <T>(flags: DaemonFlags, fn: (c: ControlClient) => Promise<T>): Promise<T> => withControl(daemonAddress(flags.daemon), fn, clientSecurity(flags))

function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('expected a whole number > 0')
  return n
}

function nonNegative(value: string): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number >= 0')
  return n
}


/**
 * The info-hash a command argument names: a full hash as is; otherwise a
 * unique hash prefix or torrent name among the daemon's torrents.
 */
async function resolveHash(c: ControlClient, arg: string): Promise<TorrentInfo | string> {
  if (isInfoHash(arg.toLowerCase())) return arg.toLowerCase()
  const { torrents } = await c.blockswarm.ListTorrents({})
  const byName = torrents.filter((t) => t.name === arg)
  const byPrefix = /^[0-9a-f]+$/i.test(arg) ? torrents.filter((t) => t.infoHash.startsWith(arg.toLowerCase())) : []
  const found = byName.length ? byName : byPrefix
  if (found.length === 1) return found[0]
  if (found.length === 0) throw new Error(`no torrent named or hashed ${JSON.stringify(arg)} in the daemon at ${c.address} (it has ${torrents.length})`)
  throw new Error(`${JSON.stringify(arg)} matches ${found.length} torrents (${found.map((t) => t.infoHash).join(', ')}): give more of the hash`)
}

const hashOf = (t: TorrentInfo | string): string => (typeof t === 'string' ? t : t.infoHash)

async function watch(c: ControlClient, hashes: string[], json: boolean): Promise<void> {
  const stop = new AbortController()
  const onSignal = () => stop.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const multibar = json
    ? undefined
    : new cliProgress.MultiBar({ format: BAR_FORMAT, hideCursor: true, clearOnComplete: false, noTTYOutput: true, notTTYSchedule: 2000, barsize: 30, autopadding: true })
  const bars = new Map<string, SingleBar>()
  let nameWidth = 0
  try {
    for await (const update of c.blockswarm.WatchTorrents({ infoHashes: hashes }, { signal: stop.signal })) {
      if (json) {
        for (const t of update.torrents) process.stdout.write(JSON.stringify(torrentJson(t)) + '\n')
        for (const h of update.removed) process.stdout.write(JSON.stringify({ infoHash: h, removed: true }) + '\n')
        continue
      }
      for (const t of update.torrents) {
        nameWidth = Math.max(nameWidth, t.name.length)
        const bar = bars.get(t.infoHash)
        if (bar) bar.update(t.totalDone, barFields(t, nameWidth))
        else bars.set(t.infoHash, multibar!.create(Math.max(t.total, 1), t.totalDone, barFields(t, nameWidth)))
      }
      for (const h of update.removed) {
        const bar = bars.get(h)
        if (bar) multibar!.remove(bar)
        bars.delete(h)
      }
    }
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err
  } finally {
    multibar?.stop()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  if (!stop.signal.aborted) process.stderr.write(`the daemon at ${c.address} ended the watch (it is shutting down)\n`)
}

export function registerControlCommands(program: Command): void {
  const add = program
    .command('add')
    .description('add a torrent to a running daemon: deploy TORRENT onto TARGET (or seed TARGET with --seed)')
    .argument('<torrent>', '.torrent file')
    .argument('<target>', 'target block device, image file or directory')
    .option('--seed', 'TARGET already holds the data: seed it without hashing')
    .option('--max-uploads <n>', 'unchoke slots for this torrent (default: the daemon\'s)', positiveInt)
    .option('--max-connections <n>', 'peer connections for this torrent (default: the daemon\'s)', positiveInt)
    .option('--sequential', 'download pieces in order')
    .option('--skip-check', 'TARGET holds nothing of the image (a fresh disk): do not check it, download everything')
    .option('--force', 'write to TARGET even if it looks in use (mounted, holds a filesystem); never to one another blockswarm torrent holds')
    .option('--peer <host:port>', 'connect to this peer as well as the trackers (repeatable)', collect, [])
    .option('--seed-ratio <r>', 'done (and paused) after uploading R times the torrent\'s size', nonNegative)
    .option('--seed-idle <seconds>', 'done (and paused) after this long without uploading, once finished', nonNegative)
    .option('--json', 'print the added torrent as JSON')
  daemonOptions(addWebSeedOptions(add)).action(async (torrentFile: string, target: string, o) => {
    const bytes = await readTorrentFile(torrentFile, 'blockswarm add TORRENT TARGET')
    const t = await control(o, (c) =>
      c.blockswarm.AddTorrent({
        torrent: bytes,
        target: resolve(target),
        seedingMode: Boolean(o.seed),
        maxUploads: o.maxUploads ?? 0,
        maxConnections: o.maxConnections ?? 0,
        sequential: Boolean(o.sequential),
        force: Boolean(o.force),
        peers: o.peer,
        donePolicy:
          o.seedRatio !== undefined || o.seedIdle !== undefined ? { seedRatio: o.seedRatio ?? 0, seedIdleSeconds: o.seedIdle ?? 0 } : null,
        webSeeds: o.webSeed,
        webSeedImages: o.webSeedImage,
        skipCheck: Boolean(o.skipCheck),
      }),
    )
    if (o.json) process.stdout.write(JSON.stringify(torrentJson(t), null, 2) + '\n')
    else process.stdout.write(`added ${t.infoHash} ${t.name} -> ${t.target} (${stateText(t)})\n`)
  })

  const status = program
    .command('status')
    .description('show the torrents of a running daemon (all, or the given ones)')
    .argument('[hash...]', 'info-hashes, unique hash prefixes or torrent names')
    .option('--watch', 'follow progress live: one bar per torrent, until Ctrl-C or the daemon stops')
    .option('--json', 'print JSON (with --watch: one object per line per change)')
  daemonOptions(status).action(async (args: string[], o: DaemonFlags & { watch?: boolean; json?: boolean }) => {
    await control(o, async (c) => {
      const hashes = await Promise.all(args.map(async (a) => hashOf(await resolveHash(c, a))))
      if (o.watch) return watch(c, hashes, Boolean(o.json))
      const { torrents } = await c.blockswarm.ListTorrents({ infoHashes: hashes })
      if (o.json) process.stdout.write(JSON.stringify(torrents.map(torrentJson), null, 2) + '\n')
      else if (torrents.length === 0) process.stdout.write(`no torrents in the daemon at ${c.address}\n`)
      else process.stdout.write(torrentTable(torrents))
    })
  })

  const byHash = (name: string, description: string, act: (c: ControlClient, hash: string) => Promise<unknown>, said: string) =>
    daemonOptions(program.command(name).description(description).argument('<hash>', 'info-hash, unique hash prefix or torrent name'))
      .action(async (arg: string, o: DaemonFlags) => {
        await control(o, async (c) => {
          const hash = hashOf(await resolveHash(c, arg))
          await act(c, hash)
          process.stdout.write(`${said} ${hash}\n`)
        })
      })

  byHash('pause', 'pause a torrent (stop downloading and uploading; keeps its state)', (c, hash) => c.ezio.PauseTorrent({ hash }), 'paused')
  byHash('resume', 'resume a paused torrent', (c, hash) => c.ezio.ResumeTorrent({ hash }), 'resumed')
  byHash(
    'remove',
    'remove a torrent from the daemon; the data on its target is left as it is',
    (c, hash) => c.blockswarm.RemoveTorrent({ infoHash: hash }),
    'removed (target data untouched)',
  )

  daemonOptions(program.command('shutdown').description('stop a running daemon gracefully'))
    .action(async (o: DaemonFlags) => {
      await control(o, (c) => c.ezio.Shutdown({}))
      process.stdout.write(`the daemon at ${daemonAddress(o.daemon)} is shutting down\n`)
    })

  daemonOptions(program.command('version').description('show the version of this client and of the running daemon'))
    .action(async (o: DaemonFlags) => {
      process.stdout.write(`client: blockswarm ${VERSION}\n`)
      const { version } = await control(o, (c) => c.ezio.GetVersion({}))
      process.stdout.write(`daemon at ${daemonAddress(o.daemon)}: ${version}\n`)
    })
}

