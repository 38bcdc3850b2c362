/**
 * The nodes' targets: image files full of stale, non-zero bytes (a used disk,
 * not a blank one), attached to loop devices when this process may do so.
 */
import { open } from 'node:fs/promises'
import { pseudoRandomBytes } from '../bench/ext4-image.js'
import type { Cleanup } from './cleanup.js'
import { runTool } from './children.js'

const CHUNK = 4 * 1024 * 1024

/** Write `size` bytes of stale data to `path`: a 4 MiB pseudo-random block keyed by `seed`, repeated. */
export async function writeStaleFile(path: string, size: number, seed: string): Promise<void> {
  const block = pseudoRandomBytes(CHUNK, `stale-${seed}`)
  const fh = await open(path, 'w')
  try {
    for (let at = 0; at < size; at += CHUNK) await fh.write(block, 0, Math.min(CHUNK, size - at), at)
  } finally {
    await fh.close()
  }
}

/** Attach `file` to a free loop device; `cleanup` detaches it. */
export async function attachLoop(file: string, cleanup: Cleanup): Promise<string> {
  const dev = (await runTool('losetup', ['--find', '--show', file], 30_000)).trim()
  cleanup.add(`detach ${dev}`, async () => {
    await runTool('losetup', ['-d', dev], 30_000)
  })
  return dev
}

/** Why loop devices cannot be used here, or undefined if they can (root, and losetup finds a free device). */
export async function loopUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not running as root'
  try {
    await runTool('losetup', ['--find'], 10_000)
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}
