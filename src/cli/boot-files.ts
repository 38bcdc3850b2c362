/**
 * The kernel and initrd of a deployed ext2/3/4 filesystem, copied out for
 * kexec with debugfs: read-only, without mounting. By default /boot/vmlinuz
 * or /vmlinuz and /boot/initrd.img or /initrd.img (the symlinks Debian and
 * Ubuntu keep pointing at the newest kernel), with symlinks followed inside
 * the filesystem; and the filesystem's UUID, for a default `root=`.
 *
 * debugfs exits 0 even when a path is missing, so every answer is checked
 * from its output: the inode's type and size, then the copied file's size.
 */
import { execFile } from 'node:child_process'
import { stat } from 'node:fs/promises'
import { join, posix } from 'node:path'

export const DEFAULT_KERNEL_PATHS = ['/boot/vmlinuz', '/vmlinuz'] as const
export const DEFAULT_INITRD_PATHS = ['/boot/initrd.img', '/initrd.img'] as const
/** Symlink hops followed before giving up (a loop). */
const MAX_LINKS = 8

export interface BootFiles {
  /** Local copies, ready for `kexec -l`. */
  readonly kernel: string
  readonly initrd?: string
  /** Where they were found in the filesystem (symlinks resolved). */
  readonly kernelPath: string
  readonly initrdPath?: string
  /** The filesystem's UUID. */
  readonly uuid: string
}

interface Inode {
  readonly type: string
  readonly size: number
  /** Target of a symlink. */
  readonly link?: string
}

function debugfs(device: string, request: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile('debugfs', ['-R', request, device], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') reject(new Error('debugfs not found: install e2fsprogs'))
      else if (err) reject(new Error(`debugfs -R '${request}' ${device} failed: ${stderr.trim() || err.message}`))
      else resolve({ stdout, stderr })
    })
  })
}

/** A path as one debugfs argument (its request line is split at blanks unless quoted). */
function quoted(path: string): string {
  if (/["\n\r]/.test(path)) throw new Error(`path ${JSON.stringify(path)} cannot be passed to debugfs (it holds a quote or a line break)`)
  return `"${path}"`
}

/** The UUID of the ext2/3/4 filesystem on `device`; throws if there is none debugfs can read. */
export async function filesystemUuid(device: string): Promise<string> {
  const { stdout, stderr } = await debugfs(device, 'stats')
  const m = /^Filesystem UUID:\s+([0-9a-f-]{36})\s*$/m.exec(stdout)
  if (!m) throw new Error(`${device} holds no ext2/3/4 filesystem that debugfs can read: ${stderr.replace(/^debugfs [^\n]*\n/, '').trim() || 'no superblock'}`)
  return m[1]
}

async function inode(device: string, path: string): Promise<Inode | undefined> {
  const { stdout } = await debugfs(device, `stat ${quoted(path)}`)
  const type = /\bType:\s+(\S+)/.exec(stdout)?.[1]
  if (type === undefined) return undefined
  const size = Number(/\bSize:\s+(\d+)/.exec(stdout)?.[1] ?? NaN)
  if (type !== 'symlink') return { type, size }
  const fast = /^Fast link dest:\s+"(.*)"\s*$/m.exec(stdout)
  // a long symlink keeps its target in a data block: cat prints it
  const link = fast ? fast[1] : (await debugfs(device, `cat ${quoted(path)}`)).stdout.slice(0, size)
  return { type, size, link }
}

/** Follow symlinks from `path` to a regular file; undefined if there is none. */
async function regularFile(device: string, path: string): Promise<{ path: string; size: number } | undefined> {
  let at = path
  for (let hop = 0; hop <= MAX_LINKS; hop++) {
    const node = await inode(device, at)
    if (!node) return undefined
    if (node.type === 'regular') return { path: at, size: node.size }
    if (node.type !== 'symlink' || !node.link) return undefined
    at = posix.resolve(posix.dirname(at), node.link)
  }
  throw new Error(`${path} on ${device}: more than ${MAX_LINKS} symlinks (a loop?)`)
}

async function copyOut(device: string, file: { path: string; size: number }, local: string): Promise<void> {
  const { stderr } = await debugfs(device, `dump ${quoted(file.path)} ${quoted(local)}`)
  const got = await stat(local).then(
    (s) => s.size,
    () => -1,
  )
  if (got !== file.size) {
    throw new Error(`copying ${file.path} out of ${device} gave ${got < 0 ? 'no file' : `${got} of ${file.size} bytes`}: ${stderr.replace(/^debugfs [^\n]*\n/, '').trim()}`)
  }
}

async function firstFile(device: string, paths: readonly string[]): Promise<{ path: string; size: number } | undefined> {
  for (const p of paths) {
    const f = await regularFile(device, p)
    if (f) return f
  }
  return undefined
}

/**
 * Copy the kernel (and the initrd, when there is one) out of the filesystem
 * on `device` into `dir`. `kernel` / `initrd` name them in the filesystem
 * instead of the defaults; a named initrd must exist, a default one may not.
 */
export async function extractBootFiles(device: string, dir: string, named: { kernel?: string; initrd?: string } = {}): Promise<BootFiles> {
  const uuid = await filesystemUuid(device)
  const kernelPaths = named.kernel ? [named.kernel] : DEFAULT_KERNEL_PATHS
  const kernel = await firstFile(device, kernelPaths)
  if (!kernel) throw new Error(`no kernel in the filesystem on ${device}: looked for ${kernelPaths.join(', ')} (give --kexec-kernel PATH)`)
  const initrdPaths = named.initrd ? [named.initrd] : DEFAULT_INITRD_PATHS
  const initrd = await firstFile(device, initrdPaths)
  if (!initrd && named.initrd) throw new Error(`no initrd ${named.initrd} in the filesystem on ${device}`)
  const files: BootFiles = { kernel: join(dir, 'kernel'), kernelPath: kernel.path, uuid }
  await copyOut(device, kernel, files.kernel)
  if (!initrd) return files
  const local = join(dir, 'initrd')
  await copyOut(device, initrd, local)
  return { ...files, initrd: local, initrdPath: initrd.path }
}
