/** Reading a Prometheus /metrics endpoint in tests: every sample by its series key. */
import { expect } from 'vitest'

export function samples(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    out.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return out
}

/** A series key as the exposition writes it (labels in the order given). */
export function series(name: string, labels: Record<string, string> = {}): string {
  const l = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  return l.length ? `${name}{${l.join(',')}}` : name
}

export async function scrape(address: string): Promise<Map<string, number>> {
  const res = await fetch(`http://${address}/metrics`)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
  return samples(await res.text())
}
