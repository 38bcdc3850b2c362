/**
 * The resume check: which pieces does the target already hold? Each piece is
 * read back through the store and hashed; pieces that match are kept and
 * never downloaded. Reads run one piece ahead of the hashing, and every
 * buffer is taken from the memory budget.
 */
import type { PieceStore } from '../storage/types.js'
import { type ExtentTorrent, pieceHash } from '../torrent/metainfo.js'
import { pieceSize } from '../torrent/piece-map.js'
import type { MemoryBudget } from '../services/memory-budget.js'
import { PieceSet } from './piece-set.js'
import type { PieceVerifier } from '../services/piece-verifier.js'

export interface CheckProgress {
  readonly checked: number
  readonly valid: number
  readonly bytesChecked: number
}

export interface CheckResult {
  readonly have: PieceSet
  readonly bytesChecked: number
  /** Bytes of pieces found valid (re-used, not downloaded). */
  readonly bytesValid: number
  readonly ms: number
}

/** Pieces read ahead of the hashing (the memory budget bounds this further). */
const READ_AHEAD = 4

export async function checkTarget(
  torrent: ExtentTorrent,
  store: PieceStore,
  verifier: PieceVerifier,
  budget: MemoryBudget,
  opts: { onProgress?: (p: CheckProgress) => void; cancelled?: () => boolean } = {},
): Promise<CheckResult> {
  const started = performance.now()
  const have = new PieceSet(torrent.pieceCount)
  let bytesChecked = 0
  let bytesValid = 0
  let next = 0
  const reads: Promise<{ index: number; data: Buffer; size: number }>[] = []
  const issue = () => {
    while (reads.length < READ_AHEAD && next < torrent.pieceCount) {
      const index = next++
      const size = pieceSize(torrent.layout, index)
      reads.push(
        budget.take(size).then(async () => {
          try {
            return { index, data: await store.read(index, 0, size), size }
          } catch (err) {
            budget.give(size)
            throw err
          }
        }),
      )
    }
  }
  issue()
  try {
    while (reads.length > 0) {
      if (opts.cancelled?.()) break
      const { index, data, size } = await reads.shift()!
      issue()
      try {
        const { digest } = await verifier.hash(data)
        if (digest.equals(pieceHash(torrent, index))) {
          have.add(index)
          bytesValid += size
        }
      } finally {
        budget.give(size)
      }
      bytesChecked += size
      opts.onProgress?.({ checked: index + 1, valid: have.count, bytesChecked })
    }
  } finally {
    for (const r of await Promise.allSettled(reads)) if (r.status === 'fulfilled') budget.give(r.value.size)
  }
  return { have, bytesChecked, bytesValid, ms: performance.now() - started }
}
