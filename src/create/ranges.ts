/**
 * Used-byte ranges as the filesystem readers report them: sorted, merged.
 * Shared by every reader so none of them re-implements run finding.
 */
import type { ByteRange } from '../torrent/extents.js'

/** Collects byte ranges in increasing order and merges touching or overlapping ones. */
export class RangeBuilder {
  private readonly out: ByteRange[] = []

  /** Add [offset, offset+length). Ranges must come in non-decreasing offset order. */
  add(offset: number, length: number): this {
    if (length <= 0) return this
    const last = this.out[this.out.length - 1]
    if (last && offset < last.offset) throw new Error(`RangeBuilder: range at ${offset} added after ${last.offset}`)
    if (last && offset <= last.offset + last.length) {
      last.length = Math.max(last.length, offset + length - last.offset)
    } else {
      this.out.push({ offset, length })
    }
    return this
  }

  ranges(): ByteRange[] {
    return this.out
  }
}

/**
 * Runs of set bits in an LSB-first bitmap (ext bitmaps, NTFS $Bitmap):
 * calls `emit(firstBit, count)` for each run among bits [0, bitCount).
 */
export function setBitRuns(bitmap: Uint8Array, bitCount: number, emit: (first: number, count: number) => void): void {
  let runStart = -1
  const bytes = Math.ceil(bitCount / 8)
  for (let byte = 0; byte < bytes; byte++) {
    const v = bitmap[byte]
    if (v === 0x00 && runStart < 0) continue
    if (v === 0xff && runStart >= 0 && byte * 8 + 8 <= bitCount) continue
    for (let bit = 0; bit < 8; bit++) {
      const i = byte * 8 + bit
      if (i >= bitCount) break
      const set = (v >> bit) & 1
      if (set && runStart < 0) runStart = i
      else if (!set && runStart >= 0) {
        emit(runStart, i - runStart)
        runStart = -1
      }
    }
  }
  if (runStart >= 0) emit(runStart, bitCount - runStart)
}

/** Merge sorted range lists (e.g. the table areas and each partition's ranges of a whole disk). */
export function mergeRanges(lists: readonly (readonly ByteRange[])[]): ByteRange[] {
  const all = lists.flat().slice().sort((a, b) => a.offset - b.offset)
  const b = new RangeBuilder()
  for (const r of all) b.add(r.offset, r.length)
  return b.ranges()
}

/** Total bytes in a range list. */
export function rangesBytes(ranges: readonly ByteRange[]): number {
  return ranges.reduce((n, r) => n + r.length, 0)
}
