/**
 * Size of a target: sysfs for block devices (fstat says 0 for them), stat for files.
 */
import { constants, type Stats } from 'node:fs'
import { readFile, realpath, stat } from 'node:fs/promises'
import { basename } from 'node:path'

export interface TargetInfo {
  readonly path: string
  readonly kind: 'block' | 'file' | 'directory'
  readonly size: number
  /** For block devices: "major:minor". */
  readonly devno?: string
}

/** Size in bytes of a block device, from /sys/dev/block/<major:minor>/size (512-byte sectors). */
async function blockDeviceSize(path: string, st: Stats): Promise<number> {
  const candidates = [`/sys/dev/block/${devnoOf(st)}/size`, `/sys/class/block/${basename(await realpath(path))}/size`]
  for (const file of candidates) {
    try {
      const sectors = Number((await readFile(file, 'utf8')).trim())
      if (Number.isSafeInteger(sectors)) return sectors * 512
    } catch {
      // try the next source
    }
  }
  throw new Error(`cannot find the size of block device ${path} in sysfs`)
}

export function devnoOf(st: Stats): string {
  return `${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`
}

/** What a target path is and how big it is; throws a clear error if missing or of another kind. */
export async function targetInfo(path: string): Promise<TargetInfo> {
  let st: Stats
  try {
    st = await stat(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new Error(code === 'ENOENT' ? `${path} does not exist` : `cannot stat ${path}: ${code}`)
  }
  if (st.isBlockDevice()) return { path, kind: 'block', size: await blockDeviceSize(path, st), devno: devnoOf(st) }
  if (st.isFile()) return { path, kind: 'file', size: st.size }
  if (st.isDirectory()) return { path, kind: 'directory', size: 0 }
  throw new Error(`${path} is neither a block device, a regular file nor a directory (mode 0${(st.mode & constants.S_IFMT).toString(8)})`)
}
