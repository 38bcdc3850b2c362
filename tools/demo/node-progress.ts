/**
 * How the demo shows its nodes' progress: one cli-progress bar per node on a
 * terminal, plain lines otherwise (at most one per node every few seconds,
 * and one on every state change).
 */
import cliProgress, { type SingleBar } from 'cli-progress'
import type { TorrentInfo } from '../../src/control/blockswarm-wire.js'
import { barFields, stateText } from '../../src/cli/torrent-view.js'

/** Narrower than `status --watch`'s bars: the nodes' lines fit 80 columns. */
const FORMAT = '{name} [{bar}] {pct} {state} ↓ {down} ↑ {up} peers {peers}'

export interface NodeProgress {
  /** Node `index` reported `t`. */
  update(index: number, t: TorrentInfo): void
  stop(): void
}

function barView(names: readonly string[]): NodeProgress {
  const multibar = new cliProgress.MultiBar({ format: FORMAT, stream: process.stdout, hideCursor: true, clearOnComplete: false, barsize: 20 })
  const width = Math.max(...names.map((n) => n.length))
  // one bar per node from the start, in node order, until its first report
  const waiting = { state: 'waiting'.padEnd(11), down: '-', up: '-', peers: 0, pct: '0.0%'.padStart(6) }
  const bars: SingleBar[] = names.map((n) => multibar.create(1, 0, { ...waiting, name: n.padEnd(width) }))
  return {
    update(i, t) {
      bars[i].setTotal(Math.max(t.total, 1))
      bars[i].update(t.totalDone, { ...barFields(t, 0), name: names[i].padEnd(width) })
    },
    stop: () => multibar.stop(),
  }
}

function lineView(names: readonly string[], everyMs: number): NodeProgress {
  const width = Math.max(...names.map((n) => n.length))
  const last = names.map(() => ({ at: 0, state: '' }))
  return {
    update(i, t) {
      const f = barFields(t, 0)
      const state = stateText(t)
      const now = Date.now()
      if (state === last[i].state && now - last[i].at < everyMs) return
      last[i] = { at: now, state }
      process.stdout.write(`  ${names[i].padEnd(width)}  ${f.pct}  ${state.padEnd(11)}  down ${f.down}  up ${f.up}  peers ${f.peers}\n`)
    },
    stop() {},
  }
}

/** Bars when stdout is a terminal, else lines. */
export function nodeProgress(names: readonly string[], tty: boolean, lineEveryMs = 2000): NodeProgress {
  return tty ? barView(names) : lineView(names, lineEveryMs)
}
