/**
 * How the CLI shows torrents: one plain JSON shape for scripts, table rows
 * and progress-bar fields for people. Pure functions of a TorrentInfo.
 */
import type { TorrentInfo, WireState, WireWebSeed } from '../control/blockswarm-wire.js'
import { etaSeconds } from '../session/outcome.js'
import { formatBytes } from '../util/size.js'

export { etaSeconds }

export type StateName = 'checking' | 'downloading' | 'finishing' | 'seeding' | 'finished' | 'paused' | 'error' | 'unknown'

export function stateName(s: WireState): StateName {
  const name = s.replace(/^TORRENT_STATE_/, '').toLowerCase()
  return name === 'unspecified' ? 'unknown' : (name as StateName)
}


export function formatDuration(s: number | null): string {
  if (s === null) return '-'
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`
}

export const formatRate = (bytesPerSecond: number): string => `${formatBytes(bytesPerSecond)}/s`

/** The JSON a script gets for one torrent (status --json). */
export function torrentJson(t: TorrentInfo) {
  return {
    infoHash: t.infoHash,
    name: t.name,
    target: t.target,
    state: stateName(t.state),
    paused: t.paused,
    done: t.done,
    doneReason: t.doneReason || null,
    error: t.error || null,
    progress: t.progress,
    total: t.total,
    totalDone: t.totalDone,
    piecesDone: t.piecesDone,
    pieceCount: t.pieceCount,
    downloadRate: t.downloadRate,
    uploadRate: t.uploadRate,
    totalDownloaded: t.totalDownloaded,
    totalUploaded: t.totalUploaded,
    peers: t.numPeers,
    seeds: t.numSeeds,
    etaSeconds: etaSeconds(t),
    startedAt: t.startedAt ? new Date(t.startedAt).toISOString() : null,
    complete: t.complete,
    finishedAt: t.finishedAt ? new Date(t.finishedAt).toISOString() : null,
    bans: t.bans,
    fromWebSeeds: t.totalFromWebSeeds,
    webSeeds: t.webSeeds.map((w) => ({ ...w, lastError: w.lastError || null })),
  }
}

const percent = (p: number): string => `${(Math.floor(p * 1000) / 10).toFixed(1)}%`

/** The state as a person reads it: "seeding", "paused", "error: <why>", "seeding (done)". */
export function stateText(t: TorrentInfo): string {
  const name = stateName(t.state)
  if (name === 'error') return `error: ${t.error}`
  return t.done ? `${name} (done)` : name
}

/** A web seed's row under its torrent in `status`: kind, URL, state, rate, bytes, last error. */
function webSeedCells(w: WireWebSeed): string[] {
  return [`  ${w.kind === 'image' ? 'web seed image' : 'web seed'}`, w.url, w.state, formatRate(w.downloadRate), formatBytes(w.totalDownloaded), w.lastError ? `last error: ${w.lastError}` : '-']
}

/** A table of torrents for `status`; under each torrent, a row per web seed (aligned among themselves). */
export function torrentTable(list: readonly TorrentInfo[]): string {
  const head = ['HASH', 'NAME', 'STATE', 'PROGRESS', 'DOWN', 'UP', 'PEERS', 'ETA', 'TARGET']
  const rows = list.map((t) => [
    t.infoHash,
    t.name,
    stateText(t),
    percent(t.progress),
    formatRate(t.downloadRate),
    formatRate(t.uploadRate),
    String(t.numPeers),
    formatDuration(etaSeconds(t)),
    t.target,
  ])
  const [header, ...lines] = alignColumns([head, ...rows]).split('\n')
  const seedRows = list.flatMap((t) => t.webSeeds.map(webSeedCells))
  const seedLines = seedRows.length ? alignColumns(seedRows).split('\n') : []
  const out = [header]
  list.forEach((t, i) => out.push(lines[i], ...seedLines.splice(0, t.webSeeds.length)))
  return out.join('\n') + '\n'
}

/** Rows of cells as text columns, two spaces apart (the last column not padded), one line each. */
export function alignColumns(rows: readonly (readonly string[])[]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n'
}

/** The payload of one torrent's progress bar: the fields of BAR_FORMAT (not named like cli-progress's own tokens, e.g. {eta}). */
export function barFields(t: TorrentInfo, nameWidth: number) {
  return {
    name: t.name.padEnd(nameWidth),
    state: stateText(t).padEnd('downloading'.length),
    down: formatRate(t.downloadRate),
    up: formatRate(t.uploadRate),
    peers: t.numPeers,
    etaText: formatDuration(etaSeconds(t)),
    pct: percent(t.progress).padStart('100.0%'.length),
  }
}

export const BAR_FORMAT = '{name} [{bar}] {pct} | {state} | down {down} up {up} | peers {peers} | ETA {etaText}'
