/**
 * The zero-block scan: the used ranges of a volume with no filesystem the
 * creator can read are its blocks that are not all zero. A torrent made this
 * way must zero its gaps on deploy (GapPolicy 'zero').
 */
import type { ByteRange } from '../torrent/extents.js'
import type { Volume } from './fs/types.js'
import { RangeBuilder } from './ranges.js'

/** Bytes per sequential read; two such buffers are in flight (read ahead while checking). */
const CHUNK = 8 * 1024 * 1024
/** Bytes compared at once against a zero buffer small enough to stay in the CPU cache. */
const SPAN = 64 * 1024

/**
 * Byte ranges (absolute in the source, sorted, merged) of the blocks of
 * `volume` that hold a non-zero byte. Blocks are counted from the volume's
 * start; a short last block is checked as far as the volume goes.
 */
export async function zeroScan(volume: Volume, blockSize = 4096): Promise<ByteRange[]> {
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0) throw new Error(`zero scan: block size ${blockSize} is not a positive integer`)
  const span = Math.max(blockSize, Math.floor(SPAN / blockSize) * blockSize)
  const chunk = Math.max(span, Math.floor(CHUNK / span) * span)
  const zero = Buffer.alloc(span)
  const buffers = [Buffer.allocUnsafe(chunk), Buffer.allocUnsafe(chunk)]
  const out = new RangeBuilder()
  const { source, base, length } = volume
  const readAt = (pos: number, i: number) => source.read(base + pos, Math.min(chunk, length - pos), buffers[i].subarray(0, Math.min(chunk, length - pos)))

  let pos = 0
  let which = 0
  let pending = length > 0 ? readAt(0, 0) : null
  while (pending) {
    const data = await pending
    const next = pos + data.length
    // Read the next chunk into the other buffer while this one is checked.
    pending = next < length ? readAt(next, 1 - which) : null
    for (let s = 0; s < data.length; s += span) {
      const spanEnd = Math.min(s + span, data.length)
      if (zero.compare(data, s, spanEnd, 0, spanEnd - s) === 0) continue
      for (let b = s; b < spanEnd; b += blockSize) {
        const end = Math.min(b + blockSize, spanEnd)
        if (zero.compare(data, b, end, 0, end - b) !== 0) out.add(base + pos + b, end - b)
      }
    }
    pos = next
    which = 1 - which
  }
  return out.ranges()
}
