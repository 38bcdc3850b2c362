/**
 * Deterministic pseudo-random numbers and bytes for tests, benchmarks and the
 * demo: the same seed, the same run (a failing run can be repeated).
 */

/** mulberry32: numbers in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

/** `length` bytes from xorshift32. */
export function xorshiftBytes(length: number, seed = 1): Buffer {
  const out = Buffer.alloc(length + 3)
  let x = seed >>> 0 || 1
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out.writeUInt32LE(x >>> 0, i)
  }
  return out.subarray(0, length)
}
