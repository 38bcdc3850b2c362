/**
 * A disk with bad sectors, for real I/O errors: a FUSE file (faulty-fuse.py)
 * whose bytes live in an image file and whose writes (or reads) fail in chosen
 * byte ranges, and a loop device over that file. cleanupAll() undoes all of it:
 * the loop device's queue limit, the loop device, the mount, the daemon, the
 * files.
 *
 * How an error in the backing file reaches a writer of the loop device:
 * - Writes to /dev/loopN are buffered: write() succeeds, the loop driver meets
 *   the error at writeback, and fsync/fdatasync on the writer's descriptor
 *   reports EIO, once (a second fdatasync succeeds). Loop direct I/O
 *   (`losetup --direct-io=on`) changes only how the loop driver reaches its
 *   backing file, not that.
 * - The loop driver takes a short write from its backing file for a complete
 *   one (only short reads are retried) and the rest is lost without an error.
 *   FUSE turns an error after partial progress into a short write: it splits
 *   each loop request into requests of up to 128 KiB (max_write), and if a
 *   later one fails, the loop request "succeeds". So the loop device's
 *   requests are capped at 64 KiB (queue/max_sectors_kb): each is then one
 *   FUSE request, and its failure is the loop request's failure.
 * - Until the last descriptor of the device is closed, reads through its page
 *   cache return the data that never reached the backing file.
 */
import { mkdir, readFile, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type ChildProcess } from 'node:child_process'
import { loopAttach, onCleanup, ROOT, run, startProcess, tempDir } from './sys.js'

const DAEMON = join(ROOT, 'test/helpers/faulty-fuse.py')
/** Largest loop request, in KiB: under FUSE's 128 KiB max_write, so that no loop request is split. */
const LOOP_MAX_SECTORS_KB = 64

export type ByteSpan = readonly [start: number, end: number]

export interface FaultyDeviceOptions {
  /** Bytes in the device. */
  readonly size: number
  /** Write requests that touch [start, end) fail with EIO. */
  readonly failWrites?: ByteSpan
  /** Read requests that touch [start, end) fail with EIO. */
  readonly failReads?: ByteSpan
  /** Write requests at or past this offset fail with ENOSPC. */
  readonly noSpaceFrom?: number
  /** Initial content (default: zeros). */
  readonly content?: Buffer
  /**
   * A request that reaches into a failing range transfers what lies before it
   * and returns short, so that a user of the FUSE file learns the exact
   * offset. Not with a loop device, which would lose the rest of a write silently.
   */
  readonly partial?: boolean
  /** Attach a loop device over the FUSE file (default true). */
  readonly loop?: boolean
  /** Every fsync/fdatasync waits while this file exists: a flush held open. */
  readonly holdFsync?: string
}

/** One error the daemon injected. */
export interface Fault {
  readonly op: 'read' | 'write'
  readonly errno: string
  readonly offset: number
  readonly size: number
}

export interface FaultyDevice {
  /** The file on the FUSE mount: a target that fails as configured. */
  readonly file: string
  /** The backing image file: what actually reached "the disk". */
  readonly image: string
  /** A loop device over `file`, when asked for. */
  readonly loop?: string
  /** The errors injected so far. */
  faults(): Fault[]
  /** Whether an fsync is being held now (holdFsync). */
  holding(): boolean
}

export async function faultyDevice(opts: FaultyDeviceOptions): Promise<FaultyDevice> {
  if (opts.partial && opts.loop !== false) throw new Error('faultyDevice: partial transfers under a loop device lose writes silently; pass loop: false')
  const dir = await tempDir('bsw-faulty-')
  const image = join(dir, 'backing.img')
  const mnt = join(dir, 'mnt')
  await mkdir(mnt)
  await writeFile(image, opts.content ?? Buffer.alloc(0))
  await truncate(image, opts.size)

  const args = [DAEMON, image, mnt, '--name', 'disk.img']
  if (opts.failWrites) args.push('--fail-writes', `${opts.failWrites[0]}:${opts.failWrites[1]}`)
  if (opts.failReads) args.push('--fail-reads', `${opts.failReads[0]}:${opts.failReads[1]}`)
  if (opts.noSpaceFrom !== undefined) args.push('--no-space-from', String(opts.noSpaceFrom))
  if (opts.partial) args.push('--partial')
  if (opts.holdFsync) args.push('--hold-fsync', opts.holdFsync)
  const daemon = startProcess('/usr/bin/python3', args)
  const out = collectOutput(daemon)
  onCleanup(async () => {
    // a device still held open (a test that failed midway) keeps the mount busy: detach it lazily then
    if ((await run('umount', [mnt])).code !== 0) await run('umount', ['-l', mnt])
  })
  await ready(daemon, out)

  const file = join(mnt, 'disk.img')
  let loop: string | undefined
  if (opts.loop !== false) {
    loop = await loopAttach(file)
    const limit = `/sys/block/${loop.slice('/dev/'.length)}/queue/max_sectors_kb`
    const before = (await readFile(limit, 'utf8')).trim()
    await writeFile(limit, String(LOOP_MAX_SECTORS_KB))
    // the setting outlives the attachment: give the next user of this loop device its usual limit back
    onCleanup(() => writeFile(limit, before))
  }

  return {
    file,
    image,
    loop,
    holding: () => {
      const events = out.text.match(/^(holding|released) fsync$/gm) ?? []
      return events.at(-1) === 'holding fsync'
    },
    faults: () =>
      out.text
        .split('\n')
        .map((l) => /^fault (read|write) (\w+) offset=(\d+) size=(\d+)$/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => ({ op: m[1] as 'read' | 'write', errno: m[2], offset: Number(m[3]), size: Number(m[4]) })),
  }
}

function collectOutput(child: ChildProcess): { text: string; err: string } {
  const out = { text: '', err: '' }
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out.text += d))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out.err += d))
  return out
}

/** Wait for the daemon's "ready" (printed once the kernel has mounted it), or its early exit. */
function ready(child: ChildProcess, out: { text: string; err: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (/^ready$/m.test(out.text)) done(undefined)
    }
    const exited = (code: number | null) => done(new Error(`faulty-fuse.py exited (${code}) before mounting: ${out.err.trim()}`))
    const timer = setTimeout(() => done(new Error(`faulty-fuse.py did not mount within 20 s: ${out.err.trim()}`)), 20_000)
    const done = (err: Error | undefined) => {
      clearTimeout(timer)
      child.stdout!.off('data', check)
      child.off('exit', exited)
      if (err) reject(err)
      else resolve()
    }
    child.stdout!.on('data', check)
    child.once('exit', exited)
    check()
  })
}
