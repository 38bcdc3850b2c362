/**
 * `blockswarm create`: make an extent torrent from a disk, partition or image
 * (or from partclone's torrent.info). A progress bar on a terminal; one JSON
 * object with --json.
 */
import { constants } from 'node:fs'
import { access, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import cliProgress from 'cli-progress'
import { type Command, Option } from 'commander'
import { createTorrent, type CreateResult } from '../create/create.js'
import { USED_MODES, type UsedMode } from '../create/used-blocks.js'
import { formatBytes, parseSize } from '../util/size.js'
import { summarize } from './inspect.js'
import { collect } from './web-seed-options.js'

interface CreateFlags {
  output: string
  name?: string
  pieceSize: string
  tracker: string[]
  webSeed: string[]
  webSeedImage: string[]
  mode: UsedMode
  fromPartclone?: string
  extentsDir?: string
  json?: boolean
  force?: boolean
}

const rate = (bytes: number, seconds: number) => (seconds > 0 ? bytes / 1e6 / seconds : 0)

/** A byte progress bar on stderr, or nothing when not both stdout and stderr are terminals. */
function progressBar(enabled: boolean) {
  if (!enabled) return { start: (_total: number) => {}, update: (_done: number) => {}, stop: () => {} }
  const bar = new cliProgress.SingleBar({
    format: 'hashing {bar} {percentage}% | {done} / {size} | {rate} | ETA {eta_formatted}',
    barCompleteChar: '\u2588',
    barIncompleteChar: '\u2591',
    hideCursor: true,
    clearOnComplete: true,
    etaBuffer: 50,
    stream: process.stderr,
  })
  let t0 = 0
  let total = 0
  return {
    start(n: number) {
      if (n === 0) return
      total = n
      t0 = performance.now()
      bar.start(n, 0, { done: formatBytes(0), size: formatBytes(n), rate: '-' })
    },
    update(done: number) {
      if (total === 0) return
      bar.update(done, { done: formatBytes(done), rate: `${rate(done, (performance.now() - t0) / 1000).toFixed(0)} MB/s` })
    },
    stop() {
      if (total > 0) bar.stop()
    },
  }
}

function printHuman(out: string, r: CreateResult): void {
  const s = summarize(r.torrent)
  const rows: [string, string][] = [
    ['torrent', out],
    ['info-hash', s.infoHash],
    ['name', s.name],
    ['pieces', `${s.pieceCount} × ${formatBytes(s.pieceLength)}`],
    ['extents', `${s.extentCount}, ${formatBytes(s.bytesCovered)} of ${s.targetSize === null ? '?' : formatBytes(s.targetSize)}`],
    ['found by', r.fs],
    ['gaps', r.gaps === 'zero' ? 'must be zero (zero-scan)' : "don't care (filesystem-aware)"],
    [
      'hashes',
      r.hashesFrom === 'partclone'
        ? `partclone's sha1 lines (no data read) in ${r.seconds.toFixed(2)} s`
        : `${formatBytes(r.bytes)} read in ${r.seconds.toFixed(2)} s (${rate(r.bytes, r.seconds).toFixed(0)} MB/s)`,
    ],
  ]
  if (r.extentsDir) rows.push(['extents dir', r.extentsDir])
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(12)} ${v}\n`)
}

export function registerCreate(program: Command): void {
  program
    .command('create')
    .description('make an extent torrent from a disk, partition or image (read-only), or from partclone\'s torrent.info')
    .argument('[source]', 'block device, partition or image file; with --from-partclone: optional, the device/image or partclone\'s output directory')
    .requiredOption('-o, --output <file>', 'the .torrent to write')
    .option('--name <name>', "torrent name (default: the source's basename)")
    .option('--piece-size <size>', 'piece size, a power of two >= 16K', '16M')
    .option('--tracker <url>', 'tracker URL (repeatable)', collect, [])
    .option('--web-seed <url>', 'web seed (BEP 19 url-list): an HTTP server over an extents directory, URL/NAME/<offset> (repeatable)', collect, [])
    .option('--web-seed-image <url>', "a raw disk image of the source over HTTP, recorded in blockswarm's own dictionary (repeatable)", collect, [])
    .addOption(new Option('--mode <mode>', 'how to find the used blocks').choices(USED_MODES).default('auto'))
    .option('--from-partclone <torrent.info>', "take the extents (and 16 MiB piece hashes) from partclone's torrent.info")
    .option('--extents-dir <dir>', 'also write DIR/NAME/<hex offset>, one file per extent, for standard clients to seed')
    .option('--json', 'print one JSON object')
    .option('--force', 'image a device even while it is mounted read-write (its content may change while it is read)')
    .action(async (source: string | undefined, flags: CreateFlags) => {
      if (!source && !flags.fromPartclone) throw new Error('create: give a SOURCE (block device, partition or image file), or --from-partclone')
      const pieceLength = parseSize(flags.pieceSize)
      // fail now, not after hashing, when the torrent cannot be written
      await access(dirname(flags.output), constants.W_OK).catch(() => {
        throw new Error(`cannot write ${flags.output}: ${dirname(flags.output)} is not a writable directory`)
      })
      const bar = progressBar(!flags.json && process.stdout.isTTY === true && process.stderr.isTTY === true)
      let result: CreateResult
      try {
        result = await createTorrent(
          {
            source,
            name: flags.name,
            pieceLength,
            trackers: flags.tracker,
            webSeeds: flags.webSeed,
            webSeedImages: flags.webSeedImage,
            mode: flags.mode,
            fromPartclone: flags.fromPartclone,
            extentsDir: flags.extentsDir,
            force: flags.force,
            onStart: (n) => bar.start(n),
            onProgress: (n) => bar.update(n),
          },
          flags.output,
        )
      } finally {
        bar.stop()
      }
      await writeFile(flags.output, result.buffer)
      for (const note of result.notes) process.stderr.write(`note: ${note}\n`)
      if (flags.json) {
        const out = {
          ...summarize(result.torrent),
          torrent: flags.output,
          source: result.source,
          fs: result.fs,
          gaps: result.gaps,
          hashesFrom: result.hashesFrom,
          extentsDir: result.extentsDir,
          bytes: result.bytes,
          seconds: result.seconds,
          mbPerSecond: rate(result.bytes, result.seconds),
        }
        process.stdout.write(JSON.stringify(out, null, 2) + '\n')
        return
      }
      printHuman(flags.output, result)
    })
}
