/**
 * Opening a torrent's target as a PieceStore: a block device, an image file,
 * or a directory of extent files. Every refusal (missing, too small,
 * read-only, mounted, locked by another blockswarm store) happens here,
 * before a byte is written. The target lock (target-lock.ts) is taken first
 * and held until the store is closed. Every store returned is the backend
 * for its kind of target inside the one guard (guarded-store.ts); a store
 * opened for writing also checks, on verifyTarget(), that the path still
 * names what was opened (target-identity.ts).
 */
import { mkdir, stat } from 'node:fs/promises'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { targetInfo } from './device-size.js'
import { openDeviceStore } from './device-store.js'
import { openDirStore } from './dir-store.js'
import { GuardedStore } from './guarded-store.js'
import { describeErrno } from './positioned-io.js'
import { TargetIdentity } from './target-identity.js'
import { lockTarget, type TargetLock } from './target-lock.js'
import { type PieceStore, TargetRefused } from './types.js'

export { createImageFile } from './image-file.js'

export interface OpenStoreOptions {
  /** 'read' to seed from the target, 'write' to deploy onto it. */
  readonly mode: 'read' | 'write'
  /** Open a mounted device, or the one holding the running root filesystem, anyway (never one another blockswarm store holds). */
  readonly force?: boolean
  /**
   * For writing: a target that does not exist is created as an extents
   * directory (DIR/NAME/<offset> files), as EZIO's file mode (-F) lets
   * libtorrent create its save_path.
   */
  readonly createMissing?: boolean
}

/** Create a missing write target as a directory (and its parents); an existing one is left as it is. */
async function createMissingTarget(target: string): Promise<void> {
  try {
    await stat(target)
    return
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return // the check below says why it is unusable
  }
  try {
    await mkdir(target, { recursive: true })
  } catch (err) {
    const { code, text } = describeErrno(err)
    throw new TargetRefused(`${target} does not exist and cannot be created as a directory: ${text}`, target, 'unusable', code)
  }
}

export async function openStore(torrent: ExtentTorrent, target: string, opts: OpenStoreOptions): Promise<PieceStore> {
  if (opts.createMissing && opts.mode === 'write') await createMissingTarget(target)
  try {
    await stat(target)
  } catch (err) {
    const { code, text } = describeErrno(err)
    if (code === 'ENOENT') throw new TargetRefused(`${target} does not exist`, target, 'missing', code)
    throw new TargetRefused(`cannot use ${target}: ${text}`, target, 'unusable', code)
  }
  let info
  try {
    info = await targetInfo(target)
  } catch (err) {
    throw new TargetRefused((err as Error).message, target, 'unusable')
  }
  // Before every other check: a second writer learns who holds the target, not that it is "busy" (O_EXCL).
  let lock: TargetLock
  try {
    lock = await lockTarget(info, opts.mode, { infoHash: torrent.infoHash, name: torrent.name })
  } catch (err) {
    if (!(err instanceof TargetRefused) || err.problem !== 'unusable') throw err
    // the lock could not even open the target: the checks that say why (read-only, the running root filesystem…) speak first
    const store = info.kind === 'directory' ? await openDirStore(torrent, target, opts.mode) : await openDeviceStore(torrent, info, opts)
    await store.close()
    throw err
  }
  try {
    const backend = info.kind === 'directory' ? await openDirStore(torrent, target, opts.mode) : await openDeviceStore(torrent, info, opts)
    // what the target is now, to notice it deleted, replaced or shrunk while it is written
    const identity =
      opts.mode === 'write'
        ? await TargetIdentity.of(target).catch(async (err: unknown) => {
            await backend.close()
            throw err
          })
        : undefined
    // one guard for every backend; the lock is released once the store is closed
    return new GuardedStore(backend, { mode: opts.mode, onClose: () => lock.release(), verifyTarget: identity && (() => identity.check()) })
  } catch (err) {
    await lock.release()
    throw err
  }
}
