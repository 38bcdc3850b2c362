/**
 * One writer per target, across processes: a BSD flock(2) on the target (a
 * block device node, an image file, a directory) for as long as a store is
 * open on it. Writers take it exclusive, seeders shared, so several seeds may
 * share one source while a writer excludes everyone else. `--force` does not
 * reach this module: it overrides mount/in-use checks, never another writer.
 *
 * Why flock via an inherited descriptor: Node has no flock() and native
 * addons cannot be installed here, so the target is opened here and util-linux
 * `flock` is run with that descriptor as its fd 3. The child locks the SAME
 * open file description and exits; a flock belongs to the open file
 * description, not to the process, so the lock is ours until we close the
 * descriptor, and the kernel drops it when this process dies (kill -9 too).
 * The lock descriptors are our own O_RDONLY ones, separate from the store's
 * data descriptor: on a block device that one is opened O_EXCL, which would
 * fail with EBUSY (blaming mounts) while another writer has it open, before
 * any lock could be looked at. This also follows systemd's block device
 * locking convention (udev skips a disk someone holds LOCK_EX on).
 *
 * Partitions (sysfs tells which device is a partition of which disk):
 * - a writer of X: EX on X, plus SH on X's disk when X is a partition;
 * - a reader of X: SH on X, SH on X's disk when X is a partition, and SH on
 *   every partition of X when X is a whole disk.
 * So a disk's writer excludes its partitions' writers and readers and vice
 * versa, while two partitions of one disk can be written at once.
 *
 * Who holds it: /proc/locks names the short-lived flock child, so each lock
 * also leaves a record, /run/blockswarm/locks/<maj>-<min>-<ino>.<pid>.<n>.json
 * (os.tmpdir() when /run is not writable), removed on release. A refusal names
 * the holders from live records (its pid still has the inode open), else the
 * processes /proc/<pid>/fd shows with the inode open.
 */
import { spawn } from 'node:child_process'
import { type BigIntStats, constants } from 'node:fs'
import { type FileHandle, mkdir, open, readdir, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { devnoOf, type TargetInfo } from './device-size.js'
import { relatedDevices } from './device-usage.js'
import { describeErrno } from './positioned-io.js'
import { TargetRefused } from './types.js'

/** Whose lock it is, for the record a refused caller reads. */
export interface LockOwner {
  readonly infoHash: string
  readonly name: string
}

export interface TargetLock {
  /** Remove the records and close the lock descriptors (which drops the locks). Idempotent. */
  release(): Promise<void>
}

/** What the record file holds. */
interface LockRecord {
  readonly pid: number
  readonly command: string
  readonly infoHash: string
  readonly name: string
  /** The store's target (e.g. /dev/loop0p1). */
  readonly target: string
  /** The path locked for it (the target, its disk or one of its partitions). */
  readonly locked: string
  readonly mode: 'read' | 'write'
  readonly since: string
}

/** Exit code util-linux flock gives when the lock is taken (asked for with --conflict-exit-code). */
const CONFLICT = 75
/**
 * A conflict with no blockswarm record behind it may be a holder between its
 * flock and its record, or a short-lived one (udev takes LOCK_SH on a disk
 * while it probes): retry a few times before refusing.
 */
const RETRIES = 10
const RETRY_MS = 100
const ADVICE = 'A target takes one writer at a time (several seeders may share a source): wait for it to finish, or stop it; --force does not override this lock'

type Relation = 'itself' | 'disk' | 'partition'

interface Wanted {
  readonly path: string
  readonly exclusive: boolean
  readonly relation: Relation
}

interface Held {
  readonly want: Wanted
  readonly fh: FileHandle
  readonly key: string
  record?: string
}

let recordSeq = 0
let recordDirs: Promise<string[]> | undefined

/** The record directories: [where ours go, …others a holder may have used]. */
function lockDirs(): Promise<string[]> {
  recordDirs ??= (async () => {
    const run = '/run/blockswarm/locks'
    const tmp = join(tmpdir(), 'blockswarm-locks')
    for (const dir of [run, tmp]) {
      try {
        await mkdir(dir, { recursive: true, mode: 0o755 })
        return dir === run ? [run, tmp] : [tmp, run]
      } catch {
        // not writable: the next one
      }
    }
    return [tmp, run]
  })()
  return recordDirs
}

function major(dev: bigint): bigint {
  return ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)
}

function minor(dev: bigint): bigint {
  return (dev & 0xffn) | ((dev >> 12n) & ~0xffn)
}

/** "<maj>-<min>-<ino>" of the filesystem object a descriptor (or path) refers to: what flock locks. */
function keyOf(st: BigIntStats): string {
  return `${major(st.dev)}-${minor(st.dev)}-${st.ino}`
}

/** The /dev node of block device `devno` (from its uevent DEVNAME), if it exists and is that device. */
async function devNode(devno: string): Promise<string | undefined> {
  try {
    const uevent = await readFile(`/sys/dev/block/${devno}/uevent`, 'utf8')
    const name = /^DEVNAME=(.+)$/m.exec(uevent)?.[1]
    if (!name) return undefined
    const path = `/dev/${name}`
    const st = await stat(path)
    return st.isBlockDevice() && devnoOf(st) === devno ? path : undefined
  } catch {
    return undefined
  }
}

/** "major:minor" of the disk a partition belongs to, or undefined when `devno` is not a partition. */
async function parentDisk(devno: string): Promise<string | undefined> {
  try {
    const sys = await realpath(`/sys/dev/block/${devno}`)
    await stat(join(sys, 'partition'))
    return (await readFile(join(dirname(sys), 'dev'), 'utf8')).trim()
  } catch {
    return undefined
  }
}

/** The locks a store on `info` in `mode` needs (see the header). */
async function wantedLocks(info: TargetInfo, mode: 'read' | 'write'): Promise<Wanted[]> {
  if (info.kind !== 'block' || info.devno === undefined) return [{ path: info.path, exclusive: mode === 'write', relation: 'itself' }]
  // The canonical node, so that another node or a symlink for the same device locks the same inode.
  const self = (await devNode(info.devno)) ?? info.path
  const wanted: Wanted[] = [{ path: self, exclusive: mode === 'write', relation: 'itself' }]
  const disk = await parentDisk(info.devno)
  if (disk !== undefined) {
    const node = await devNode(disk)
    if (node) wanted.push({ path: node, exclusive: false, relation: 'disk' })
  } else if (mode === 'read') {
    for (const p of (await relatedDevices(info.devno)).filter((d) => d.relation === 'partition')) {
      const node = await devNode(p.devno)
      if (node) wanted.push({ path: node, exclusive: false, relation: 'partition' })
    }
  }
  // A partition without a /dev node cannot be opened by another writer either: nothing to lock.
  return wanted
}

/** Run util-linux flock on `fh` (inherited as fd 3): true when locked, false on a conflict. */
function flockFd(fh: FileHandle, exclusive: boolean, path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const args = ['--nonblock', exclusive ? '--exclusive' : '--shared', '--conflict-exit-code', String(CONFLICT), '3']
    const child = spawn('flock', args, { stdio: ['ignore', 'ignore', 'pipe', fh.fd] })
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    child.once('error', (err) => {
      const { code, text } = describeErrno(err)
      const why = code === 'ENOENT' ? "util-linux's flock is not installed" : `running flock failed: ${text}`
      reject(new TargetRefused(`cannot lock ${path}: ${why}`, path, 'unusable', code))
    })
    child.once('close', (code, signal) => {
      if (code === 0) resolve(true)
      else if (code === CONFLICT) resolve(false)
      else reject(new TargetRefused(`cannot lock ${path}: flock exited ${code ?? signal}: ${stderr.trim()}`, path, 'unusable'))
    })
  })
}

/** Does process `pid` have the object `key` open (any /proc/<pid>/fd entry)? */
async function holds(pid: number, key: string): Promise<boolean> {
  let fds: string[]
  try {
    fds = await readdir(`/proc/${pid}/fd`)
  } catch {
    return false
  }
  for (const fd of fds) {
    try {
      if (keyOf(await stat(`/proc/${pid}/fd/${fd}`, { bigint: true })) === key) return true
    } catch {
      // closed meanwhile
    }
  }
  return false
}

async function commandLine(pid: number): Promise<string> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean).join(' ')
  } catch {
    return '?'
  }
}

/** The record files for `key` in every record directory. */
async function recordFiles(key: string): Promise<string[]> {
  const out: string[] = []
  for (const dir of await lockDirs()) {
    try {
      for (const f of await readdir(dir)) if (f.startsWith(`${key}.`) && f.endsWith('.json')) out.push(join(dir, f))
    } catch {
      // no such directory
    }
  }
  return out
}

async function readRecord(file: string): Promise<LockRecord | undefined> {
  try {
    const r = JSON.parse(await readFile(file, 'utf8')) as LockRecord
    return Number.isSafeInteger(r.pid) && r.pid > 0 ? r : undefined
  } catch {
    return undefined
  }
}

/** Records of `key` whose process is alive and still has the object open. */
async function liveRecords(key: string): Promise<LockRecord[]> {
  const live: LockRecord[] = []
  for (const file of await recordFiles(key)) {
    const r = await readRecord(file)
    if (r && (await holds(r.pid, key))) live.push(r)
  }
  return live
}

/** Every process that has `key` open, from /proc/<pid>/fd. */
async function openers(key: string): Promise<number[]> {
  const pids = (await readdir('/proc').catch(() => [] as string[])).filter((p) => /^\d+$/.test(p)).map(Number)
  const found: number[] = []
  for (const pid of pids) if (await holds(pid, key)) found.push(pid)
  return found
}

function describeRecord(r: LockRecord): string {
  const self = r.pid === process.pid ? ', this very process' : ''
  const doing = r.mode === 'write' ? `writing torrent ${r.infoHash} (${r.name}) to` : `seeding torrent ${r.infoHash} (${r.name}) from`
  return `blockswarm pid ${r.pid} (${r.command}${self}), ${doing} ${r.target} since ${r.since}`
}

/** Who holds `key`, as text: live blockswarm records, else the processes that have it open. */
export async function describeHolders(key: string, path: string): Promise<string> {
  const live = await liveRecords(key)
  if (live.length > 0) return live.map(describeRecord).join('; ')
  const pids = await openers(key)
  if (pids.length === 0) return 'a process not visible here (another PID namespace or container?)'
  const list = await Promise.all(pids.map(async (p) => `pid ${p} (${await commandLine(p)}${p === process.pid ? ', this very process' : ''})`))
  return `a program that left no blockswarm record; these have ${path} open: ${list.join('; ')}`
}

/** "pid 12 (cmd); pid 34 (cmd)": the other processes that have `path` open ('' when none is seen), for a message. */
export async function otherOpeners(path: string): Promise<string> {
  let key: string
  try {
    key = keyOf(await stat(path, { bigint: true }))
  } catch {
    return ''
  }
  const pids = (await openers(key)).filter((p) => p !== process.pid)
  return (await Promise.all(pids.map(async (p) => `pid ${p} (${await commandLine(p)})`))).join('; ')
}

async function refusal(target: string, want: Wanted, key: string): Promise<TargetRefused> {
  const via = want.relation === 'itself' ? '' : `: ${want.relation === 'disk' ? 'its disk' : 'its partition'} ${want.path} is held`
  const message = `${target} is locked${via} by ${await describeHolders(key, want.path)}. ${ADVICE}`
  return new TargetRefused(message, target, 'locked')
}

/** Open `want.path` and try its lock: the descriptor when locked, else (closed) none; the object's key either way. */
async function tryLock(want: Wanted): Promise<{ fh?: FileHandle; key: string }> {
  let fh: FileHandle
  try {
    // O_RDONLY: enough for flock, and no write-close event (udev re-probes a device closed after writing).
    fh = await open(want.path, constants.O_RDONLY | constants.O_NOCTTY)
  } catch (err) {
    const { code, text } = describeErrno(err)
    throw new TargetRefused(`cannot open ${want.path} to lock it: ${text}`, want.path, code === 'ENOENT' ? 'missing' : 'unusable', code)
  }
  try {
    const key = keyOf(await fh.stat({ bigint: true }))
    if (await flockFd(fh, want.exclusive, want.path)) return { fh, key }
    await fh.close()
    return { key }
  } catch (err) {
    await fh.close().catch(() => undefined)
    throw err
  }
}

/**
 * Take the locks a store on `info` needs, or throw TargetRefused ('locked')
 * naming the holder. At once when the holder is a live blockswarm process;
 * after about a second of retries otherwise.
 */
export async function lockTarget(info: TargetInfo, mode: 'read' | 'write', owner: LockOwner): Promise<TargetLock> {
  const held: Held[] = []
  const releaseAll = async (): Promise<void> => {
    for (const h of held.splice(0)) {
      if (h.record) await unlink(h.record).catch(() => undefined)
      await h.fh.close().catch(() => undefined)
    }
  }
  try {
    for (const want of await wantedLocks(info, mode)) {
      for (let attempt = 0; ; attempt++) {
        const { fh, key } = await tryLock(want)
        if (fh) {
          held.push({ want, fh, key })
          break
        }
        if (attempt >= RETRIES || (await liveRecords(key)).length > 0) throw await refusal(info.path, want, key)
        await sleep(RETRY_MS)
      }
    }
  } catch (err) {
    await releaseAll()
    throw err
  }
  await writeRecords(held, info.path, mode, owner)
  let released: Promise<void> | undefined
  return { release: () => (released ??= releaseAll()) }
}

/** Remove the records of processes that are gone (killed before they could remove them), whatever they locked. */
async function sweepDead(dir: string): Promise<void> {
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    const pid = /^[\d-]+\.(\d+)\.\d+\.json(\.tmp)?$/.exec(f)?.[1]
    if (pid && !(await stat(`/proc/${pid}`).then(() => true, () => false))) await unlink(join(dir, f)).catch(() => undefined)
  }
}

/** Leave a record per lock; clear records the lock proves stale. A record that cannot be written only costs the holder's name in a refusal. */
async function writeRecords(held: Held[], target: string, mode: 'read' | 'write', owner: LockOwner): Promise<void> {
  const [dir] = await lockDirs()
  await sweepDead(dir)
  for (const h of held) {
    for (const file of await recordFiles(h.key)) {
      // Under an exclusive lock nobody else holds it; under a shared one, drop records of processes no longer holding it.
      const r = await readRecord(file)
      if (h.want.exclusive || !r || !(await holds(r.pid, h.key))) await unlink(file).catch(() => undefined)
    }
    const record: LockRecord = {
      pid: process.pid,
      command: process.argv.join(' '),
      infoHash: owner.infoHash,
      name: owner.name,
      target,
      locked: h.want.path,
      mode,
      since: new Date().toISOString(),
    }
    const file = join(dir, `${h.key}.${process.pid}.${++recordSeq}.json`)
    try {
      // written whole, then renamed: a reader never sees half a record (and takes it for a stale one)
      await writeFile(`${file}.tmp`, JSON.stringify(record) + '\n', { mode: 0o644 })
      await rename(`${file}.tmp`, file)
      h.record = file
    } catch {
      await unlink(`${file}.tmp`).catch(() => undefined)
    }
  }
}
