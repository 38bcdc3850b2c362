/**
 * `npm run demo`: the whole job on this machine, no arguments needed.
 *
 *   npm run demo -- [--nodes 3] [--size 96M] [--targets auto|loop|file] [--seeder-rate 50M] [--timeout 300] [--keep]
 *
 * 1. an ext4 image holding --size of files (mkfs.ext4 -d, nothing mounted);
 * 2. `blockswarm create` makes its torrent, announcing to the seeder's embedded tracker;
 * 3. `blockswarm seed --tracker-embedded PORT` seeds the image;
 * 4. N `blockswarm daemon`s on 127.0.0.1, each given its target with `blockswarm add`:
 *    loop devices over stale (non-zero) data as root, else stale image files;
 * 5. one progress bar per node, fed by each daemon's gRPC WatchTorrents stream;
 * 6. the daemons are shut down over gRPC, the seeder with SIGTERM;
 * 7. verify: every piece on every target hashes to the torrent's SHA-1 and e2fsck -fn is clean;
 * 8. a summary: time, MB/s, and what each node uploaded to the others.
 * Everything it made (processes, loop devices, the work directory) is removed
 * at the end, also on failure, on timeout and on Ctrl-C. Exit 0 only if every
 * target verified.
 */
import { mkdtempSync, readFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Command, InvalidArgumentError, Option } from 'commander'
import { ClientError } from 'nice-grpc'
import type { TorrentInfo } from '../src/control/blockswarm-wire.js'
import { type ControlClient, connectControl, describeControlError } from '../src/control/client.js'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { formatBytes, parseSize } from '../src/util/size.js'
import { makeExt4Image } from './bench/ext4-image.js'
import { type Child, runCli, startCli } from './demo/children.js'
import { Cleanup } from './demo/cleanup.js'
import { nodeProgress } from './demo/node-progress.js'
import { freePorts } from './demo/ports.js'
import { attachLoop, loopUnavailable, writeStaleFile } from './demo/targets.js'
import { badPieces, fsckProblems } from './demo/verify.js'

type TargetKind = 'auto' | 'loop' | 'file'

interface DemoOptions {
  nodes: number
  size: number
  targets: TargetKind
  seederRate: string
  timeout: number
  keep: boolean
}

interface Node {
  name: string
  address: string
  btPort: number
  target: string
  daemon: Child
  client: ControlClient
}

const MB = 1e6
const say = (line: string) => process.stdout.write(line + '\n')
const secondsSince = (t0: number) => (Date.now() - t0) / 1000
const mbps = (bytes: number, seconds: number) => (seconds > 0 ? bytes / MB / seconds : 0)

function parseOptions(argv: string[]): DemoOptions {
  const whole = (min: number, max: number) => (v: string) => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`)
    return n
  }
  const size = (v: string) => {
    try {
      return parseSize(v)
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message)
    }
  }
  const o = new Command('npm run demo --')
    .description('deploy a generated ext4 image to N local nodes over BitTorrent, controlled over gRPC, and verify it')
    .option('--nodes <n>', 'node daemons to deploy to', whole(1, 16), 3)
    .addOption(new Option('--size <size>', 'file data in the ext4 image (the image is 1.5x that + 32M)').argParser(size).default(96 * 1024 * 1024, '96M'))
    .addOption(new Option('--targets <kind>', 'loop devices (root), image files, or loop devices when possible').choices(['auto', 'loop', 'file']).default('auto'))
    .option('--seeder-rate <size>', 'upload limit of the seeder per second (the nodes have none), so that they serve each other; 0: none', (v: string) => (size(v), v), '50M')
    .option('--timeout <seconds>', 'give up (and clean up) after this long', whole(10, 86_400), 300)
    .option('--keep', 'keep the work directory (image, torrent, target files) instead of removing it')
    .parse(argv)
    .opts()
  return o as DemoOptions
}

/** Wait until the daemon's control API answers. */
async function waitReady(node: Node, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs
  for (;;) {
    if (!node.daemon.running) throw new Error(`${node.name}'s daemon (pid ${node.daemon.pid}) exited with ${node.daemon.process.exitCode}:\n${node.daemon.output()}`)
    try {
      await node.client.ezio.GetVersion({})
      return
    } catch (err) {
      if (Date.now() > until) throw new Error(`${node.name}'s daemon did not answer on ${node.address} within ${timeoutMs / 1000} s (${(err as Error).message}):\n${node.daemon.output()}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
}

/** Follow every node's WatchTorrents stream until all have verified and flushed every piece; their last reports. */
async function watchUntilFinished(nodes: readonly Node[], infoHash: string, tty: boolean, cleanup: Cleanup): Promise<TorrentInfo[]> {
  const progress = nodeProgress(
    nodes.map((n) => n.name),
    tty,
  )
  let stopped = false
  const stopProgress = () => {
    if (!stopped) progress.stop()
    stopped = true
  }
  cleanup.add('stop the progress bars', stopProgress)
  const latest: (TorrentInfo | undefined)[] = nodes.map(() => undefined)
  const stop = new AbortController()
  const allFinished = () => latest.every((t) => t !== undefined && t.finishedAt > 0)
  try {
    await Promise.all(
      nodes.map(async (node, i) => {
        try {
          // all torrents (none yet): the watch starts before the torrent is added
          for await (const update of node.client.blockswarm.WatchTorrents({ infoHashes: [], intervalMs: 250 }, { signal: stop.signal })) {
            for (const t of update.torrents.filter((x) => x.infoHash === infoHash)) {
              if (t.state === 'TORRENT_STATE_ERROR') throw new Error(`${node.name} (${node.target}) failed: ${t.error}`)
              latest[i] = t
              progress.update(i, t)
            }
            if (update.removed.includes(infoHash)) throw new Error(`the torrent was removed from ${node.name} while deploying`)
            if (allFinished()) stop.abort()
          }
        } catch (err) {
          if (stop.signal.aborted && (err as Error).name === 'AbortError') return
          stop.abort()
          if (!(err instanceof ClientError)) throw err
          throw new Error(`${node.name}'s progress stream failed: ${describeControlError(err, node.address).message}\n${node.daemon.output()}`)
        }
        if (!stop.signal.aborted) {
          stop.abort()
          throw new Error(`${node.name}'s daemon ended its progress stream before all nodes finished:\n${node.daemon.output()}`)
        }
      }),
    )
  } finally {
    stopProgress()
  }
  return latest as TorrentInfo[]
}

/** Shut a daemon down over gRPC and wait for it to exit 0. */
async function shutDown(node: Node): Promise<void> {
  await node.client.ezio.Shutdown({})
  const code = await Promise.race([node.daemon.exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 30_000).unref())])
  if (code === 'late') throw new Error(`${node.name}'s daemon (pid ${node.daemon.pid}) did not exit within 30 s of Shutdown`)
  if (code !== 0) throw new Error(`${node.name}'s daemon exited with ${code} after Shutdown:\n${node.daemon.output()}`)
}

function printSummary(torrent: ExtentTorrent, nodes: readonly Node[], infos: readonly TorrentInfo[], t0: number, problems: readonly (string | undefined)[]): void {
  const S = torrent.totalLength
  const finish = infos.map((t) => (t.finishedAt - t0) / 1000)
  const last = Math.max(...finish)
  const rows = nodes.map((n, i) => [
    n.name,
    `${finish[i].toFixed(1)} s`,
    `${mbps(S, finish[i]).toFixed(0)} MB/s`,
    formatBytes(infos[i].totalDownloaded),
    formatBytes(infos[i].totalUploaded),
    n.target,
    problems[i] ? 'FAILED' : 'ok',
  ])
  const head = ['node', 'finished', 'rate', 'downloaded', 'uploaded to nodes', 'target', 'verified']
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)))
  const line = (cells: string[]) => '  ' + cells.map((c, k) => c.padEnd(widths[k])).join('  ').trimEnd()
  const amongNodes = infos.reduce((n, t) => n + t.totalUploaded, 0)
  const fromSeeder = Math.max(0, infos.reduce((n, t) => n + t.totalDownloaded, 0) - amongNodes)
  say('')
  say(`summary: ${nodes.length} node${nodes.length > 1 ? 's' : ''} got ${formatBytes(S)} each (${torrent.pieceCount} pieces) in ${last.toFixed(1)} s: ` +
    `${mbps(S, last).toFixed(0)} MB/s per node, ${mbps(S * nodes.length, last).toFixed(0)} MB/s in all`)
  say(line(head))
  for (const r of rows) say(line(r))
  say(`  the seeder sent about ${formatBytes(fromSeeder)} (${(fromSeeder / S).toFixed(2)}x the torrent); the nodes sent each other ${formatBytes(amongNodes)}` +
    (amongNodes > 0 ? ': they served each other' : ''))
}

async function run(opts: DemoOptions, cleanup: Cleanup): Promise<boolean> {
  const tty = process.stdout.isTTY === true
  const loopWhyNot = opts.targets === 'file' ? '--targets file' : await loopUnavailable()
  if (opts.targets === 'loop' && loopWhyNot) throw new Error(`--targets loop: cannot use loop devices here (${loopWhyNot})`)
  const work = mkdtempSync(join(tmpdir(), 'bsw-demo-'))
  cleanup.add(`remove ${work}`, async () => {
    if (opts.keep) say(`kept ${work}`)
    else await rm(work, { recursive: true, force: true })
  })
  const targetText = loopWhyNot ? `image files with stale data (no loop devices: ${loopWhyNot})` : 'loop devices with stale data'
  say(`blockswarm demo: ${opts.nodes} nodes on 127.0.0.1, targets: ${targetText}`)
  say(`work directory ${work}`)

  let t = Date.now()
  const image = makeExt4Image(work, opts.size)
  say(`[1/7] ext4 image ${image.path}: ${formatBytes(image.size)} with ${formatBytes(image.dataBytes)} of files (${secondsSince(t).toFixed(1)} s)`)

  const [trackerPort, seedPort, ...nodePorts] = await freePorts(2 + 2 * opts.nodes)
  const tracker = `http://127.0.0.1:${trackerPort}/announce`
  const torrentFile = join(work, 'golden.torrent')
  t = Date.now()
  await runCli(['create', image.path, '-o', torrentFile, '--piece-size', '1M', '--tracker', tracker, '--json'], 300_000, cleanup)
  const torrent = parseTorrent(readFileSync(torrentFile))
  say(
    `[2/7] blockswarm create: ${torrentFile}, info-hash ${torrent.infoHash}, ${torrent.pieceCount} pieces x ${formatBytes(torrent.pieceLength)} ` +
      `over ${torrent.extents.length} extents (${formatBytes(torrent.totalLength)} of ${formatBytes(image.size)}; free blocks left out) in ${secondsSince(t).toFixed(1)} s`,
  )

  const seedRate = parseSize(opts.seederRate) > 0 ? ['--upload-rate', opts.seederRate] : []
  const seeder = startCli('seeder', ['seed', torrentFile, image.path, '--tracker-embedded', String(trackerPort), '--port', String(seedPort), '--bind', '127.0.0.1', '--log-level', 'warn', ...seedRate], cleanup)
  await seeder.waitForOutput('opentracker whitelist line', 30_000)
  say(`[3/7] blockswarm seed --tracker-embedded ${trackerPort}: pid ${seeder.pid}, peer port ${seedPort}, tracker ${tracker}` + (seedRate.length ? `, upload limit ${opts.seederRate}/s` : ''))

  const nodes: Node[] = []
  for (let i = 0; i < opts.nodes; i++) {
    const name = `node${i + 1}`
    const file = join(work, `${name}.img`)
    await writeStaleFile(file, image.size, name)
    const target = loopWhyNot ? file : await attachLoop(file, cleanup)
    const [controlPort, btPort] = [nodePorts[2 * i], nodePorts[2 * i + 1]]
    const address = `127.0.0.1:${controlPort}`
    const daemon = startCli(name, ['daemon', '--listen', address, '--port', String(btPort), '--bind', '127.0.0.1', '--log-level', 'warn', '--status-interval', '0'], cleanup)
    const client = connectControl(address)
    cleanup.add(`close the control client of ${name}`, () => client.close())
    nodes.push({ name, address, btPort, target, daemon, client })
  }
  await Promise.all(nodes.map((n) => waitReady(n, 30_000)))
  say(`[4/7] ${opts.nodes} node daemons:`)
  for (const n of nodes) say(`  ${n.name}: blockswarm daemon --listen ${n.address} --port ${n.btPort} (pid ${n.daemon.pid}), target ${n.target}`)

  say(`[5/7] deploying: each node is given its target over gRPC, progress from each daemon's WatchTorrents stream`)
  for (const n of nodes) say(`  $ blockswarm add --daemon ${n.address} ${torrentFile} ${n.target}`)
  const t0 = Date.now()
  const watching = watchUntilFinished(nodes, torrent.infoHash, tty, cleanup)
  watching.catch(() => {}) // reported by the Promise.all below
  const [infos] = await Promise.all([watching, ...nodes.map((n) => runCli(['add', '--daemon', n.address, torrentFile, n.target], 60_000, cleanup))])
  say(`  all ${nodes.length} nodes verified and flushed every piece`)
  // the last word on what each node uploaded, after the watch's last update
  const final = await Promise.all(nodes.map(async (n, i) => (await n.client.blockswarm.ListTorrents({ infoHashes: [torrent.infoHash] })).torrents[0] ?? infos[i]))

  await Promise.all(nodes.map(shutDown))
  const seederCode = await seeder.stop('SIGTERM', 15_000)
  say(`[6/7] daemons shut down over gRPC (Shutdown), seeder stopped (exit ${seederCode})`)

  const problems = await Promise.all(
    nodes.map(async (n) => {
      const bad = await badPieces(torrent, n.target)
      if (bad.length) return `${bad.length} of ${torrent.pieceCount} pieces do not match the torrent (first: piece ${bad[0]})`
      const fsck = await fsckProblems(n.target, cleanup)
      return fsck ? `e2fsck -fn: ${fsck}` : undefined
    }),
  )
  say(`[7/7] verify:`)
  for (const [i, n] of nodes.entries()) {
    say(`  ${n.name} ${n.target}: ${problems[i] ?? `${torrent.pieceCount}/${torrent.pieceCount} pieces match the torrent's SHA-1, e2fsck -fn clean`}`)
  }
  printSummary(torrent, nodes, final, t0, problems)
  return problems.every((p) => p === undefined)
}

const opts = parseOptions(process.argv)
const cleanup = new Cleanup()
/** Set once a signal or the timeout has started the cleanup: errors of the cut-off work are then not news. */
let aborted = false

async function finish(code: number): Promise<never> {
  const problems = await cleanup.run()
  for (const p of problems) process.stderr.write(`demo: cleanup: ${p}\n`)
  process.exit(problems.length && code === 0 ? 1 : code)
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (aborted) return
    aborted = true
    process.stderr.write(`\ndemo: ${signal}: stopping the processes, detaching the loop devices, removing the work directory\n`)
    void finish(signal === 'SIGINT' ? 130 : 143)
  })
}

const deadline = setTimeout(() => {
  aborted = true
  process.stderr.write(`demo: not done after ${opts.timeout} s (--timeout): giving up\n`)
  void finish(1)
}, opts.timeout * 1000)

run(opts, cleanup)
  .then((ok) => {
    clearTimeout(deadline)
    if (!ok) process.stderr.write('demo: FAILED: a target does not hold the image (see verify above)\n')
    return finish(ok ? 0 : 1)
  })
  .catch(async (err: unknown) => {
    // a Ctrl-C also kills the tools running in the foreground: let the signal handler report it
    await new Promise((r) => setImmediate(r))
    if (aborted) return
    clearTimeout(deadline)
    process.stderr.write(`demo: FAILED: ${(err as Error).message}\n`)
    return finish(1)
  })
