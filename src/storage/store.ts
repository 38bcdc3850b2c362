/**
 * Opening a torrent's target as a PieceStore: a block device, an image file,
 * or a directory of extent files. Every refusal (missing, too small,
 * read-only, mounted) happens here, before a byte is written.
 */
import { stat } from 'node:fs/promises'
import type { ExtentTorrent } from '../torrent/metainfo.js'
import { targetInfo } from './device-size.js'
import { openDeviceStore } from './device-store.js'
import { openDirStore } from './dir-store.js'
import { describeErrno } from './positioned-io.js'
import { type PieceStore, TargetRefused } from './types.js'

export { createImageFile } from './image-file.js'

export interface OpenStoreOptions {
  /** 'read' to seed from the target, 'write' to deploy onto it. */
  readonly mode: 'read' | 'write'
  /** Open a mounted device, or the one holding the running root filesystem, anyway. */
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
  if (info.kind === 'directory') return openDirStore(torrent, target, opts.mode)
  return openDeviceStore(torrent, info, opts)
}
