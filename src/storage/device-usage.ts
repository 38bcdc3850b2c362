/**
 * Who is using a block device: mounts (from /proc/self/mountinfo) and swap
 * (from /proc/swaps) of the device itself, of its partitions and of the
 * devices stacked on it (holders: device-mapper, RAID…), found through sysfs.
 * Only this process's mount namespace is visible here; the exclusive open of
 * the device (O_EXCL) is the kernel-wide check that backs this one up.
 */
import { readdir, readFile, realpath } from 'node:fs/promises'
import { basename, join } from 'node:path'

export interface MountEntry {
  /** "major:minor" of the mounted filesystem's device (0:N for btrfs and virtual filesystems). */
  readonly devno: string
  readonly mountPoint: string
  readonly fstype: string
  /** The mount source, e.g. /dev/sdb1. */
  readonly source: string
  /** Mounted read-only (per-mount or superblock option). */
  readonly readOnly: boolean
}

/** Undo the octal escapes (\040 for a space…) the kernel puts in mountinfo and /proc/swaps fields. */
function unescapeField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))
}

/** Parse /proc/<pid>/mountinfo (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS…] - FSTYPE SOURCE SUPEROPTS`. */
export function parseMountInfo(text: string): MountEntry[] {
  const mounts: MountEntry[] = []
  for (const line of text.split('\n')) {
    const fields = line.split(' ')
    const dash = fields.indexOf('-', 6)
    if (fields.length < 10 || dash < 0) continue
    const options = fields[5].split(',')
    const superOptions = (fields[dash + 3] ?? '').split(',')
    mounts.push({
      devno: fields[2],
      mountPoint: unescapeField(fields[4]),
      fstype: fields[dash + 1],
      source: unescapeField(fields[dash + 2]),
      readOnly: options.includes('ro') || superOptions.includes('ro'),
    })
  }
  return mounts
}

export interface RelatedDevice {
  /** Kernel name, e.g. sdb1, dm-0. */
  readonly name: string
  readonly devno: string
  readonly relation: 'itself' | 'partition' | 'holder'
}

async function readTrimmed(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim()
  } catch {
    return undefined
  }
}

async function listDir(path: string): Promise<string[]> {
  try {
    return await readdir(path)
  } catch {
    return []
  }
}

/**
 * The device with major:minor `devno`, its partitions, and its holders (and
 * theirs, recursively), from /sys/dev/block/<devno>.
 */
export async function relatedDevices(devno: string): Promise<RelatedDevice[]> {
  const found = new Map<string, RelatedDevice>()
  const visit = async (sysDir: string, relation: RelatedDevice['relation']): Promise<void> => {
    const dev = await readTrimmed(join(sysDir, 'dev'))
    if (dev === undefined || found.has(dev)) return
    found.set(dev, { name: basename(sysDir), devno: dev, relation })
    for (const entry of await listDir(sysDir)) {
      if ((await readTrimmed(join(sysDir, entry, 'partition'))) !== undefined) {
        await visit(join(sysDir, entry), relation === 'itself' ? 'partition' : relation)
      }
    }
    for (const holder of await listDir(join(sysDir, 'holders'))) {
      await visit(join('/sys/class/block', holder), 'holder')
    }
  }
  let sysDir: string
  try {
    sysDir = await realpath(`/sys/dev/block/${devno}`)
  } catch {
    return []
  }
  await visit(sysDir, 'itself')
  return [...found.values()]
}

export interface DeviceUser {
  /** The device in use, as /dev/<name>: the target itself, a partition of it or a holder. */
  readonly device: string
  readonly relation: RelatedDevice['relation']
  readonly kind: 'mount' | 'swap'
  /** Mount point, or the swap device. */
  readonly where: string
  readonly readOnly: boolean
  /** This mount is the running system's root filesystem. */
  readonly root: boolean
}

/** Kernel name of a /dev path (following /dev/mapper/… and /dev/disk/… links), or undefined. */
async function kernelName(path: string): Promise<string | undefined> {
  if (!path.startsWith('/dev/')) return undefined
  try {
    return basename(await realpath(path))
  } catch {
    return basename(path)
  }
}

/** Mounts and swap areas that use the block device `devno`, its partitions or its holders. */
export async function deviceUsers(devno: string): Promise<DeviceUser[]> {
  const related = await relatedDevices(devno)
  const byDevno = new Map(related.map((d) => [d.devno, d]))
  const byName = new Map(related.map((d) => [d.name, d]))
  const users: DeviceUser[] = []
  const mountinfo = (await readTrimmed('/proc/self/mountinfo')) ?? ''
  for (const m of parseMountInfo(mountinfo)) {
    // btrfs (and a few others) report an anonymous 0:N device number: match the source path too.
    const dev = byDevno.get(m.devno) ?? byName.get((await kernelName(m.source)) ?? '')
    if (dev) {
      users.push({ device: `/dev/${dev.name}`, relation: dev.relation, kind: 'mount', where: m.mountPoint, readOnly: m.readOnly, root: m.mountPoint === '/' })
    }
  }
  const swaps = (await readTrimmed('/proc/swaps')) ?? ''
  for (const line of swaps.split('\n').slice(1)) {
    const file = unescapeField(line.split(/\s+/)[0] ?? '')
    const dev = byName.get((await kernelName(file)) ?? '')
    if (dev) users.push({ device: `/dev/${dev.name}`, relation: dev.relation, kind: 'swap', where: file, readOnly: false, root: false })
  }
  return users
}
