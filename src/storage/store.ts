/**
 * Opening a torrent's target as a PieceStore: a block device, an image file,
 * or a directory of extent files. Every refusal (missing, too small,
 * read-only, mounted, locked by another blockswarm store) happens here,
 * before a byte is written. The target lock (target-lock.ts) is taken first
 * and held until the store is closed.
 */
import { stat } from 'node:fs/promises'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { targetInfo } from './device-size.js'
import { openDeviceStore } from './device-store.js'
import { openDirStore } from './dir-store.js'
import { describeErrno } from './positioned-io.js'
import { lockTarget, type TargetLock } from './target-lock.js'
import { type PieceStore, TargetRefused } from './types.js'

export { createImageFile } from './image-file.js'

export interface OpenStoreOptions {
  /** 'read' to seed from the target, 'write' to deploy onto it. */
  readonly mode: 'read' | 'write'
  /** Open a mounted device, or the one holding the running root filesystem, anyway (never one another blockswarm store holds). */
  readonly force?: boolean
}

export async function openStore(torrent: ExtentTorrent, target: string, opts: OpenStoreOptions): Promise<PieceStore> {
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
    const store = info.kind === 'directory' ? await openDirStore(torrent, target, opts.mode) : await openDeviceStore(torrent, info, opts)
    return new LockedStore(store, lock)
  } catch (err) {
    await lock.release()
    throw err
  }
}

/** A store and its target lock: the lock is released once the store is closed. */
class LockedStore implements PieceStore {
  readonly target: string
  readonly layout: PieceStore['layout']
  private closing: Promise<void> | undefined

  constructor(
    private readonly store: PieceStore,
    private readonly lock: TargetLock,
  ) {
    this.target = store.target
    this.layout = store.layout
  }

  read(index: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.store.read(index, offset, length, into)
  }

  writePiece(index: number, data: Buffer): Promise<void> {
    return this.store.writePiece(index, data)
  }

  finish(): Promise<void> {
    return this.store.finish()
  }

  flush(): Promise<void> {
    return this.store.flush()
  }

  close(): Promise<void> {
    this.closing ??= this.store.close().finally(() => this.lock.release())
    return this.closing
  }
}
