/**
 * `npm run bench:create`: how fast `blockswarm create` hashes an ext4 image,
 * against the limit (a plain sequential read + SHA-1 of the same used bytes,
 * measured here in the same run) and against partclone's `-c -T` / `-t`.
 *
 * Makes a 1.25 GiB ext4 image holding ~600 MiB of pseudo-random files
 * (mkfs.ext4 -d, no mount), warms the page cache, runs each contender a few
 * times and prints the best run of each as a table.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { createCipheriv, createHash } from 'node:crypto'
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { availableParallelism, tmpdir } from 'node:os'
import { parseTorrent } from '../../src/torrent/metainfo.js'
import { hashPieces, MAX_WORKERS } from '../../src/create/hasher.js'

const ROOT = resolve(import.meta.dirname, '../../..')
const CLI = join(ROOT, 'bin/blockswarm.js')
const IMAGE_SIZE = 1280 * 1024 * 1024
const FILE_COUNT = 24
const FILE_SIZE = 25 * 1024 * 1024
const RUNS = 3
const PIECE = 16 * 1024 * 1024

/** Fast pseudo-random bytes: AES-CTR over zeros, seeded per file. */
function pseudoRandomFile(path: string, size: number, seed: number): void {
  const key = createHash('sha256').update(`bench-${seed}`).digest()
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  writeFileSync(path, cipher.update(Buffer.alloc(size)))
}

function makeImage(dir: string): string {
  const data = join(dir, 'data')
  mkdirSync(data)
  for (let i = 0; i < FILE_COUNT; i++) pseudoRandomFile(join(data, `file${i}.bin`), FILE_SIZE, i)
  const image = join(dir, 'ext4.img')
  closeSync(openSync(image, 'w'))
  execFileSync('truncate', ['-s', String(IMAGE_SIZE), image])
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', data, image])
  rmSync(data, { recursive: true })
  return image
}

/** Read a file once so every contender reads from the page cache. */
function warm(path: string): void {
  const fd = openSync(path, 'r')
  const buf = Buffer.allocUnsafe(8 << 20)
  let pos = 0
  let n: number
  while ((n = readSync(fd, buf, 0, buf.length, pos)) > 0) pos += n
  closeSync(fd)
}

/** The limit: read the used bytes in order (8 MiB reads) and SHA-1 them per 16 MiB piece, nothing overlapped. */
function readAndHash(image: string, extents: readonly { offset: number; length: number }[]): Buffer {
  const fd = openSync(image, 'r')
  const buf = Buffer.allocUnsafe(8 << 20)
  const digests: Buffer[] = []
  let hash = createHash('sha1')
  let filled = 0
  for (const e of extents) {
    let done = 0
    while (done < e.length) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, e.length - done), e.offset + done)
      if (n === 0) throw new Error(`short read at ${e.offset + done}`)
      let at = 0
      while (at < n) {
        const k = Math.min(n - at, PIECE - filled)
        hash.update(buf.subarray(at, at + k))
        filled += k
        at += k
        if (filled === PIECE) {
          digests.push(hash.digest())
          hash = createHash('sha1')
          filled = 0
        }
      }
      done += n
    }
  }
  if (filled > 0) digests.push(hash.digest())
  closeSync(fd)
  return Buffer.concat(digests)
}

/** Wall and CPU seconds (user + system, all threads) of one run. */
interface Sample {
  readonly wall: number
  readonly cpu: number
}

async function inProcess(fn: () => void | Promise<void>): Promise<Sample> {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await fn()
  const cpu = process.cpuUsage(cpu0)
  return { wall: (performance.now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 }
}

/** Run a command to its end; its CPU time comes from bash's `times` (children's user and system). */
function child(cmd: string, args: string[]): Sample & { stdout: string } {
  const t0 = performance.now()
  const script = 'out=$("$@") || exit $?; printf "%s" "$out"; times >&2'
  const r = spawnSync('bash', ['-c', script, 'bash', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' })
  const wall = (performance.now() - t0) / 1000
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`)
  const seconds = (t: string) => {
    const m = /^(\d+)m([\d.]+)s$/.exec(t)
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN
  }
  const [user, system] = r.stderr.trim().split('\n').pop()!.split(/\s+/).map(seconds)
  return { wall, cpu: user + system, stdout: r.stdout }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bsw-bench-'))
  try {
    process.stderr.write(`making a ${IMAGE_SIZE >> 20} MiB ext4 image with ${(FILE_COUNT * FILE_SIZE) >> 20} MiB of files in ${dir} ...\n`)
    const image = makeImage(dir)
    warm(image)
    const torrentPath = join(dir, 'bench.torrent')
    const createArgs = [CLI, 'create', image, '-o', torrentPath, '--json']
    child(process.execPath, createArgs)
    const torrent = parseTorrent(readFileSync(torrentPath))
    const bytes = torrent.totalLength
    warm(image)
    // partclone's run time has a fixed part, whatever the size: the same command on a near-empty image shows it
    const empty = join(dir, 'empty.img')
    closeSync(openSync(empty, 'w'))
    execFileSync('truncate', ['-s', '32M', empty])
    execFileSync('mkfs.ext4', ['-q', '-F', empty])
    const partclone = (flag: string, source: string, i: number) => {
      const out = join(dir, `pc${flag}-${i}`)
      const sample = child('partclone.extfs', ['-c', flag, '-q', '-s', source, '-o', out, '-L', join(dir, 'pc.log')])
      rmSync(out, { recursive: true, force: true })
      return sample
    }

    const best: Record<string, Sample> = {}
    const keep = (key: string, s: Sample) => {
      if (!best[key] || s.wall < best[key].wall) best[key] = s
    }
    for (let i = 0; i < RUNS; i++) {
      keep('limit', await inProcess(() => {
        const pieces = readAndHash(image, torrent.extents)
        if (!pieces.equals(torrent.pieces)) throw new Error('the reference read+SHA-1 disagrees with blockswarm create: a hashing bug')
      }))
      for (const [key, workers] of [['hasher 0', 0], ['hasher N', undefined]] as const) {
        keep(key, await inProcess(async () => {
          const pieces = await hashPieces({ kind: 'source', path: image }, torrent.extents, { pieceLength: torrent.pieceLength, workers })
          if (!pieces.equals(torrent.pieces)) throw new Error(`hashPieces (workers ${workers}) disagrees with blockswarm create`)
        }))
      }
      const cmd = child(process.execPath, createArgs)
      keep('create', cmd)
      keep('create own', { wall: JSON.parse(cmd.stdout).seconds, cpu: NaN })
      keep('partclone -T', partclone('-T', image, i))
      keep('partclone -t', partclone('-t', image, i))
      keep('partclone empty', partclone('-t', empty, i))
    }

    const rows: [string, string][] = [
      ['read + SHA-1 (the limit, in-process)', 'limit'],
      ['hasher, in the main thread (read-ahead)', 'hasher 0'],
      [`hasher, ${Math.min(availableParallelism(), MAX_WORKERS)} worker threads (the default)`, 'hasher N'],
      ['blockswarm create (whole command)', 'create'],
      ['blockswarm create (its --json seconds)', 'create own'],
      ['partclone.extfs -c -T (writes files)', 'partclone -T'],
      ['partclone.extfs -c -t (torrent.info only)', 'partclone -t'],
    ]
    const out = (line: string) => process.stdout.write(line + '\n')
    out(`\nused bytes hashed: ${bytes} (${(bytes / 2 ** 20).toFixed(0)} MiB of a ${IMAGE_SIZE >> 20} MiB ext4 image), page cache warm, best of ${RUNS}\n`)
    out(`${'contender'.padEnd(44)} ${'seconds'.padStart(8)} ${'MB/s'.padStart(8)} ${'× limit'.padStart(8)} ${'CPU s'.padStart(7)}`)
    for (const [label, key] of rows) {
      const { wall, cpu } = best[key]
      const cpuText = Number.isNaN(cpu) ? '' : cpu.toFixed(2)
      out(`${label.padEnd(44)} ${wall.toFixed(3).padStart(8)} ${(bytes / 1e6 / wall).toFixed(0).padStart(8)} ${(best.limit.wall / wall).toFixed(2).padStart(8)} ${cpuText.padStart(7)}`)
    }
    out(`\npartclone.extfs -c -t on an empty 32 MiB ext4 takes ${best['partclone empty'].wall.toFixed(3)} s: that much of its time is fixed, not hashing`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
