/**
 * Sum the self time of every .cpuprofile in a directory (node --cpu-prof,
 * e.g. from `npm run bench:swarm -- --cpu-prof DIR`) by function and file,
 * and print the top frames with their share of the sampled non-idle time.
 * With --inclusive, a frame's time is every sample with it anywhere on the
 * stack (each frame counted once a sample): which operation costs, not
 * which leaf.
 *
 *   node dist/tools/bench/profile-top.js DIR [--top 15] [--inclusive]
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { textTable } from '../lib/process-stats.js'

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: readonly number[]
}
interface Profile {
  readonly nodes: readonly ProfileNode[]
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

/** A frame's name: function and file (node_modules and dist shortened). */
function frameName(n: ProfileNode): string {
  const { functionName, url } = n.callFrame
  const file = url.replace(/^file:\/\//, '').replace(/.*\/node_modules\//, '').replace(/.*\/dist\//, '')
  return file ? `${functionName || '(anonymous)'} ${file}` : functionName
}

function main(argv: string[]): void {
  const dir = argv[0]
  if (!dir) throw new Error('usage: profile-top DIR [--top N] [--inclusive]')
  const topAt = argv.indexOf('--top')
  const top = topAt > 0 ? Number(argv[topAt + 1]) : 15
  const inclusive = argv.includes('--inclusive')
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))
  if (files.length === 0) throw new Error(`no .cpuprofile files in ${dir}`)
  const self = new Map<string, number>()
  let sampled = 0
  for (const f of files) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as Profile
    const names = new Map(p.nodes.map((n) => [n.id, frameName(n)]))
    const parent = new Map<number, number>()
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
    for (let i = 0; i < p.samples.length; i++) {
      const us = p.timeDeltas[i] ?? 0
      sampled += us
      const leaf = p.samples[i]
      const name = names.get(leaf) ?? '?'
      if (!inclusive || name === '(idle)') {
        self.set(name, (self.get(name) ?? 0) + us)
        continue
      }
      const seen = new Set<string>()
      for (let id: number | undefined = leaf; id !== undefined; id = parent.get(id)) {
        const frame = names.get(id) ?? '?'
        if (frame === '(root)' || seen.has(frame)) continue
        seen.add(frame)
        self.set(frame, (self.get(frame) ?? 0) + us)
      }
    }
  }
  const idle = self.get('(idle)') ?? 0
  const busy = sampled - idle
  const what = inclusive ? 'time with the frame on the stack' : 'self time'
  self.delete('(idle)')
  const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, top)
  process.stdout.write(
    `${files.length} profiles, ${(sampled / 1e6).toFixed(1)} s sampled, ${((idle / sampled) * 100).toFixed(0)}% idle; ${what} of the top frames:\n` +
      textTable(
        ['frame', inclusive ? 'total s' : 'self s', '% of busy'],
        rows.map(([name, us]) => [name, (us / 1e6).toFixed(2), ((us / busy) * 100).toFixed(1)]),
      ) +
      '\n',
  )
}

main(process.argv.slice(2))
