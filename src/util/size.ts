/** Human sizes for options and output: "16M", "1GiB", "512k", "4096". Binary units (K = 1024). */
const UNITS: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text)
  if (!m) throw new Error(`not a size: ${JSON.stringify(text)} (examples: 4096, 512K, 16M, 1G)`)
  const n = Number(m[1]) * UNITS[m[2].toLowerCase()]
  if (!Number.isSafeInteger(n)) throw new Error(`size ${JSON.stringify(text)} is not a whole number of bytes`)
  return n
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`
}
