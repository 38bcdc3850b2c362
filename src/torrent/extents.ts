/**
 * Extents: contiguous byte runs of a disk or partition, as the file entries of
 * an extent torrent name them (a hex byte offset as the file name).
 *
 * An `Extent` only ever comes out of `validateExtents`, so everything
 * downstream may trust it: offset parsed from 1–32 hex digits, length > 0,
 * sorted, non-overlapping, and every byte position a safe integer.
 */

export interface Extent {
  /** Byte offset on the target (relative to the partition or disk given at add time). */
  readonly offset: number
  /** Length in bytes, > 0. */
  readonly length: number
  /** Position of the extent's first byte in the torrent's concatenated data. */
  readonly start: number
  /** The file entry's name as it stands in the torrent (the hex offset). */
  readonly name: string
}

/** A file entry as found in a torrent, before validation. */
export interface RawFileEntry {
  readonly path: readonly string[]
  readonly length: number
}

export class ExtentError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ExtentError'
  }
}

const HEX_NAME = /^[0-9a-fA-F]{1,32}$/

/**
 * Quote a string from a torrent for an error message: JSON quoting, plus the
 * characters JSON leaves raw that still move a terminal's cursor or break a
 * line (DEL, C1 controls such as CSI and NEL, U+2028/U+2029). A message stays
 * one printable line whatever the torrent holds.
 */
export function quote(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** The canonical file name for an extent at `offset`: 32 lowercase hex digits. */
export function extentName(offset: number): string {
  return offset.toString(16).padStart(32, '0')
}

/** Parse an extent file name (1–32 hex digits) into a byte offset, or throw saying why not. */
export function parseExtentName(name: string, where: string): number {
  if (!HEX_NAME.test(name)) {
    throw new ExtentError(`${where}: name ${quote(name)} is not a hex offset (1-32 hex digits expected)`)
  }
  const value = BigInt('0x' + name)
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ExtentError(`${where}: offset 0x${name} is beyond 2^53 bytes`)
  }
  return Number(value)
}

/**
 * Validate a torrent's file list as extents: each entry's last path component
 * is a hex offset, lengths are positive, offsets strictly increasing and
 * non-overlapping. Every rejection names the entry and the reason.
 */
export function validateExtents(files: readonly RawFileEntry[]): Extent[] {
  if (files.length === 0) throw new ExtentError('torrent has no file entries (no extents)')
  const extents: Extent[] = []
  let start = 0
  for (let i = 0; i < files.length; i++) {
    const f = files[i]
    const where = `file entry ${i} (${f.path.map(quote).join('/')})`
    if (f.path.length === 0) throw new ExtentError(`file entry ${i}: empty path`)
    for (const part of f.path) {
      if (part === '' || part === '.' || part === '..' || part.includes('/') || part.includes('\\') || part.includes('\0')) {
        throw new ExtentError(`${where}: unsafe path component ${quote(part)}`)
      }
    }
    const name = f.path[f.path.length - 1]
    const offset = parseExtentName(name, where)
    if (!Number.isSafeInteger(f.length) || f.length <= 0) {
      throw new ExtentError(`${where}: length ${f.length} is not a positive integer`)
    }
    const end = offset + f.length
    if (!Number.isSafeInteger(end)) throw new ExtentError(`${where}: extent end is beyond 2^53 bytes`)
    const prev = extents[extents.length - 1]
    if (prev) {
      if (offset < prev.offset) {
        throw new ExtentError(`${where}: offset 0x${offset.toString(16)} comes after 0x${prev.offset.toString(16)} (extents must be sorted by offset)`)
      }
      if (offset < prev.offset + prev.length) {
        throw new ExtentError(
          `${where}: overlaps the previous extent 0x${prev.offset.toString(16)}+${prev.length} (ends at 0x${(prev.offset + prev.length).toString(16)})`,
        )
      }
    }
    extents.push({ offset, length: f.length, start, name })
    start += f.length
    if (!Number.isSafeInteger(start)) throw new ExtentError(`${where}: total length is beyond 2^53 bytes`)
  }
  return extents
}

/** Total bytes covered by the extents. */
export function extentsTotal(extents: readonly Extent[]): number {
  const last = extents[extents.length - 1]
  return last ? last.start + last.length : 0
}

/** The byte just past the last extent: the smallest target that can hold them. */
export function extentsEnd(extents: readonly Extent[]): number {
  const last = extents[extents.length - 1]
  return last ? last.offset + last.length : 0
}

/** A plain byte range on a disk. */
export interface ByteRange {
  offset: number
  length: number
}

/** Turn sorted, non-overlapping ranges into extents, splitting none and merging none. */
export function rangesToExtents(ranges: readonly ByteRange[]): Extent[] {
  return validateExtents(ranges.map((r) => ({ path: [extentName(r.offset)], length: r.length })))
}

/** The gaps between extents within [0, size): what a "must be zero" torrent requires zeroed. */
export function gapsOf(extents: readonly Extent[], size: number): ByteRange[] {
  const gaps: ByteRange[] = []
  let pos = 0
  for (const e of extents) {
    if (e.offset > pos) gaps.push({ offset: pos, length: e.offset - pos })
    pos = e.offset + e.length
  }
  if (size > pos) gaps.push({ offset: pos, length: size - pos })
  return gaps
}
