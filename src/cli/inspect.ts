import type { Command } from 'commander'
import { extentsEnd } from '../torrent/extents.js'
import { type ExtentTorrent, parseTorrent } from '../torrent/metainfo.js'
import { formatBytes } from '../util/size.js'
import { loadTorrentFile } from './torrent-file.js'

/** A plain summary of a torrent, the same for humans (table) and scripts (--json). */
export function summarize(t: ExtentTorrent) {
  return {
    infoHash: t.infoHash,
    name: t.name,
    pieceLength: t.pieceLength,
    pieceCount: t.pieceCount,
    extentCount: t.extents.length,
    bytesCovered: t.totalLength,
    firstOffset: t.extents[0].offset,
    endOffset: extentsEnd(t.extents),
    gaps: t.meta.gaps,
    targetSize: t.meta.targetSize ?? null,
    source: t.meta.source ?? null,
    trackers: t.trackers,
    webSeeds: t.webSeeds,
    webSeedImages: t.meta.webSeedImages ?? [],
    createdBy: t.createdBy ?? null,
  }
}


export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('show what an extent torrent holds, or why it is malformed')
    .argument('<torrent>', '.torrent file')
    .option('--json', 'print one JSON object')
    .action(async (file: string, opts: { json?: boolean }) => {
      const s = summarize(await loadTorrentFile(file))
      if (opts.json) {
        process.stdout.write(JSON.stringify(s, null, 2) + '\n')
        return
      }
      const rows: [string, string][] = [
        ['info-hash', s.infoHash],
        ['name', s.name],
        ['piece size', `${formatBytes(s.pieceLength)} (${s.pieceLength})`],
        ['pieces', String(s.pieceCount)],
        ['extents', String(s.extentCount)],
        ['bytes covered', `${formatBytes(s.bytesCovered)} (${s.bytesCovered})`],
        ['extent span', `0x${s.firstOffset.toString(16)} .. 0x${s.endOffset.toString(16)}`],
        ['gaps', s.gaps === 'zero' ? 'must be zero (zero-scan)' : "don't care (filesystem-aware)"],
        ['target size', s.targetSize === null ? 'unknown' : `${formatBytes(s.targetSize)} (${s.targetSize})`],
        ['source', s.source ?? 'unknown'],
        ['trackers', s.trackers.length ? s.trackers.join(' ') : 'none'],
      ]
      if (s.webSeeds.length) rows.push(['web seeds', s.webSeeds.join(' ')])
      if (s.webSeedImages.length) rows.push(['web seed images', s.webSeedImages.join(' ')])
      for (const [k, v] of rows) process.stdout.write(`${k.padEnd(14)} ${v}\n`)
    })
}
