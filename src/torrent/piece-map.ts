/**
 * Piece ↔ disk arithmetic: where the bytes of a piece live on the target.
 * Pure functions, no I/O. A piece that spans several extents is the normal
 * case; it maps to several slices at unrelated disk offsets.
 */
import type { Extent } from './extents.js'
import { extentsTotal } from './extents.js'

export interface Slice {
  /** Byte offset on the target. */
  readonly diskOffset: number
  /** Bytes in this slice, > 0. */
  readonly length: number
  /** Offset of this slice within the requested range (where its bytes go in a piece buffer). */
  readonly bufferOffset: number
  /** Index of the extent the slice belongs to. */
  readonly extent: number
}

export interface PieceLayout {
  readonly extents: readonly Extent[]
  readonly pieceLength: number
  readonly totalLength: number
  readonly pieceCount: number
}

export function makeLayout(extents: readonly Extent[], pieceLength: number): PieceLayout {
  const totalLength = extentsTotal(extents)
  return { extents, pieceLength, totalLength, pieceCount: Math.ceil(totalLength / pieceLength) }
}

/** Length of piece `index` (the last one may be short). */
export function pieceSize(layout: PieceLayout, index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= layout.pieceCount) {
    throw new RangeError(`piece ${index} out of range (0..${layout.pieceCount - 1})`)
  }
  return Math.min(layout.pieceLength, layout.totalLength - index * layout.pieceLength)
}

/** Index of the extent holding stream position `pos` (binary search on `start`). */
export function extentAt(extents: readonly Extent[], pos: number): number {
  let lo = 0
  let hi = extents.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1
    if (extents[mid].start <= pos) lo = mid
    else hi = mid - 1
  }
  return lo
}

/**
 * Map bytes [offset, offset+length) of piece `index` to disk slices, in order.
 * Throws RangeError when the range is not inside the piece.
 */
export function mapPieceRange(layout: PieceLayout, index: number, offset: number, length: number): Slice[] {
  const size = pieceSize(layout, index)
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length <= 0 || offset + length > size) {
    throw new RangeError(`range ${offset}+${length} is outside piece ${index} (size ${size})`)
  }
  return mapStreamRange(layout.extents, index * layout.pieceLength + offset, length)
}

/** Map bytes [pos, pos+length) of the concatenated extent stream to disk slices. */
export function mapStreamRange(extents: readonly Extent[], pos: number, length: number): Slice[] {
  const slices: Slice[] = []
  let i = extentAt(extents, pos)
  let done = 0
  while (done < length) {
    const e = extents[i]
    if (!e) throw new RangeError(`stream position ${pos + done} is past the last extent`)
    const within = pos + done - e.start
    const n = Math.min(e.length - within, length - done)
    slices.push({ diskOffset: e.offset + within, length: n, bufferOffset: done, extent: i })
    done += n
    i++
  }
  return slices
}
