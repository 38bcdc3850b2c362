import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { rangesToExtents } from '../src/torrent/extents.js'
import { makeLayout, mapPieceRange, mapStreamRange, pieceSize } from '../src/torrent/piece-map.js'

const K = 1024

describe('mapPieceRange', () => {
  // Three extents: 10 KiB at 0, 20 KiB at 1 MiB, 30 KiB at 5 MiB; pieces of 16 KiB.
  const extents = rangesToExtents([
    { offset: 0, length: 10 * K },
    { offset: 1024 * K, length: 20 * K },
    { offset: 5 * 1024 * K, length: 30 * K },
  ])
  const layout = makeLayout(extents, 16 * K)

  it('counts pieces and sizes the last one short', () => {
    expect(layout.totalLength).toBe(60 * K)
    expect(layout.pieceCount).toBe(4)
    expect(pieceSize(layout, 3)).toBe(12 * K)
  })

  it('splits a piece that spans two extents into two disk slices', () => {
    expect(mapPieceRange(layout, 0, 0, 16 * K)).toEqual([
      { diskOffset: 0, length: 10 * K, bufferOffset: 0, extent: 0 },
      { diskOffset: 1024 * K, length: 6 * K, bufferOffset: 10 * K, extent: 1 },
    ])
  })

  it('maps a block in the middle of a piece to the right extent offset', () => {
    // piece 1 covers stream [16K, 32K): extent 1 from 6K to 20K, then extent 2 from 0 to 2K.
    expect(mapPieceRange(layout, 1, 4 * K, 12 * K)).toEqual([
      { diskOffset: 1024 * K + 10 * K, length: 10 * K, bufferOffset: 0, extent: 1 },
      { diskOffset: 5 * 1024 * K, length: 2 * K, bufferOffset: 10 * K, extent: 2 },
    ])
  })

  it('rejects ranges outside the piece and pieces outside the torrent', () => {
    expect(() => mapPieceRange(layout, 3, 0, 16 * K)).toThrow(/outside piece 3/)
    expect(() => mapPieceRange(layout, 4, 0, 1)).toThrow(/piece 4 out of range/)
    expect(() => mapPieceRange(layout, 0, -1, 1)).toThrow(RangeError)
    expect(() => mapPieceRange(layout, 0, 0, 0)).toThrow(RangeError)
  })

  it('covers every byte exactly once, inside the extents, for arbitrary layouts (property)', () => {
    const arbLayout = fc
      .array(fc.record({ gap: fc.integer({ min: 0, max: 5000 }), length: fc.integer({ min: 1, max: 5000 }) }), { minLength: 1, maxLength: 20 })
      .map((parts) => {
        let pos = 0
        return parts.map(({ gap, length }) => {
          const offset = pos + gap
          pos = offset + length
          return { offset, length }
        })
      })
    fc.assert(
      fc.property(arbLayout, fc.constantFrom(16 * K, 32 * K), (ranges, pieceLength) => {
        const ex = rangesToExtents(ranges)
        const l = makeLayout(ex, pieceLength)
        const seen: number[] = []
        for (let p = 0; p < l.pieceCount; p++) {
          const size = pieceSize(l, p)
          let expectBuf = 0
          for (const s of mapPieceRange(l, p, 0, size)) {
            expect(s.bufferOffset).toBe(expectBuf)
            expectBuf += s.length
            const e = ex[s.extent]
            expect(s.diskOffset).toBeGreaterThanOrEqual(e.offset)
            expect(s.diskOffset + s.length).toBeLessThanOrEqual(e.offset + e.length)
            seen.push(s.diskOffset, s.length)
          }
          expect(expectBuf).toBe(size)
        }
        // The slices, in order, are exactly the extents.
        const whole = mapStreamRange(ex, 0, l.totalLength)
        expect(whole.map((s) => [s.diskOffset, s.length])).toEqual(ranges.map((r) => [r.offset, r.length]))
      }),
      { numRuns: 200 },
    )
  })
})
