/**
 * The demo's independent check of a deployed target: every piece read back
 * from the target's extents hashes to the torrent's SHA-1, and the
 * filesystem on it passes `e2fsck -fn` (read-only).
 */
import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'
import { type ExtentTorrent, pieceHash } from '../../src/torrent/metainfo.js'
import { mapPieceRange, pieceSize } from '../../src/torrent/piece-map.js'
import { runTool } from './children.js'
import type { Cleanup } from './cleanup.js'

/** Indexes of the pieces whose bytes on `target` do not hash to the torrent's value (short reads included). */
export async function badPieces(torrent: ExtentTorrent, target: string): Promise<number[]> {
  const bad: number[] = []
  const fh = await open(target, 'r')
  try {
    for (let p = 0; p < torrent.pieceCount; p++) {
      const h = createHash('sha1')
      let short = false
      for (const s of mapPieceRange(torrent.layout, p, 0, pieceSize(torrent.layout, p))) {
        const buf = Buffer.allocUnsafe(s.length)
        const { bytesRead } = await fh.read(buf, 0, s.length, s.diskOffset)
        short ||= bytesRead !== s.length
        h.update(buf.subarray(0, bytesRead))
      }
      if (short || !h.digest().equals(pieceHash(torrent, p))) bad.push(p)
    }
  } finally {
    await fh.close()
  }
  return bad
}

/** Run `e2fsck -fn` on `target`; resolves to undefined when clean, else to what it reported. */
export async function fsckProblems(target: string, cleanup: Cleanup): Promise<string | undefined> {
  try {
    await runTool('e2fsck', ['-fn', target], 120_000, { cleanup })
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}
