/**
 * The fleet dashboard tests' pieces: a golden image and its torrent; reading
 * a dashboard (seed/daemon --dashboard): its /api/fleet JSON, and its SSE
 * stream with the time each event arrived (closed by cleanupAll).
 */
import { writeFile } from 'node:fs/promises'
import { get, type IncomingMessage } from 'node:http'
import { join } from 'node:path'
import { createTorrent } from '../../src/create/create.js'
import type { FleetSnapshot } from '../../src/dashboard/fleet-model.js'
import type { ExtentTorrent } from '../../src/torrent/metainfo.js'
import { onCleanup, pseudoRandom } from './sys.js'

/** An 8 MiB pseudo-random golden.img in `dir` and golden.torrent (every byte, 64 KiB pieces) announcing to `tracker`. */
export async function makeFleetImage(dir: string, tracker: string, seed: number): Promise<{ source: string; size: number; torrentFile: string; torrent: ExtentTorrent }> {
  const size = 8 * 1024 * 1024
  const source = join(dir, 'golden.img')
  await writeFile(source, pseudoRandom(size, seed))
  const made = await createTorrent({ source, name: 'golden', mode: 'all', pieceLength: 64 * 1024, trackers: [tracker] })
  const torrentFile = join(dir, 'golden.torrent')
  await writeFile(torrentFile, made.buffer)
  return { source, size, torrentFile, torrent: made.torrent }
}

/** GET `${url}api/fleet` (url: the dashboard's page URL, ending in /). */
export async function fetchFleet(url: string): Promise<FleetSnapshot> {
  return (await (await fetch(`${url}api/fleet`)).json()) as FleetSnapshot
}

/** The fleet's SSE stream: every event's snapshot with the time it arrived. */
export function followEvents(url: string): { events: { at: number; snap: FleetSnapshot }[] } {
  const events: { at: number; snap: FleetSnapshot }[] = []
  let buf = ''
  const req = get(url, (res: IncomingMessage) => {
    res.setEncoding('utf8')
    res.on('data', (d: string) => {
      buf += d
      let end
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end)
        buf = buf.slice(end + 2)
        const data = /^data: (.*)$/m.exec(block)
        if (/^event: fleet$/m.test(block) && data) events.push({ at: Date.now(), snap: JSON.parse(data[1]) as FleetSnapshot })
      }
    })
  })
  req.on('error', () => {})
  onCleanup(async () => void req.destroy())
  return { events }
}
