/**
 * Debian's opentracker for tests: whitelist mode (only the info-hashes in its
 * whitelist file are tracked), HTTP and UDP on one port of 127.0.0.1, and
 * plain HTTP questions to it (announce as a made-up peer, scrape).
 */
import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { captureOutput, startProcess, tempDir } from './sys.js'

/** opentracker's answer to an announce of a hash that is not in its whitelist. */
export const NOT_AUTHORIZED = 'Requested download is not authorized for use with this tracker.'

/** The 20 bytes of a hex info-hash, %-escaped for a tracker URL. */
export function escapedHash(infoHash: string): string {
  return infoHash.replace(/../g, (b) => `%${b}`)
}

/** An HTTP GET of the tracker (announce or scrape); the bencoded body as latin1 text. */
export async function askTracker(port: number, path: string, query: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/${path}?${query}`)
  return Buffer.from(await res.arrayBuffer()).toString('latin1')
}

/** A one-off announce of `infoHash` by a made-up peer (127.0.0.1:1, left 0, so it counts as a seed). */
export function announceSeed(port: number, infoHash: string): Promise<string> {
  return askTracker(port, 'announce', `info_hash=${escapedHash(infoHash)}&peer_id=-TEST00-abcdefghijkl&port=1&uploaded=0&downloaded=0&left=0&compact=1`)
}

/** Seeds ("complete"), leechers ("incomplete") and completed downloads ("downloaded") the tracker counts for a torrent. */
export async function scrape(port: number, infoHash: string): Promise<{ complete: number; incomplete: number; downloaded: number }> {
  const body = await askTracker(port, 'scrape', `info_hash=${escapedHash(infoHash)}`)
  const count = (key: string) => Number(new RegExp(`${key.length}:${key}i(\\d+)e`).exec(body)?.[1] ?? -1)
  return { complete: count('complete'), incomplete: count('incomplete'), downloaded: count('downloaded') }
}

export interface Opentracker {
  readonly whitelist: string
  /** Re-read the whitelist (SIGHUP). */
  reload(): void
  output(): string
}

/**
 * opentracker on 127.0.0.1:`port` (TCP and UDP) with a whitelist file holding
 * `listed`. It drops root for "nobody" before it reads the whitelist (also on
 * each SIGHUP), so the file and its directory must be readable by that user.
 */
export async function startOpentracker(port: number, listed: readonly string[] = []): Promise<Opentracker> {
  const dir = await tempDir('bsw-opentracker-whitelist-')
  await chmod(dir, 0o755)
  const whitelist = join(dir, 'whitelist.txt')
  await writeFile(whitelist, ['# info-hashes this tracker serves, one per line', ...listed, ''].join('\n'), { mode: 0o644 })
  const child = startProcess('opentracker', ['-i', '127.0.0.1', '-p', String(port), '-P', String(port), '-w', whitelist])
  const out = captureOutput(child)
  let up = false
  for (let i = 0; i < 100 && !up && child.exitCode === null; i++) {
    up = await announceSeed(port, '00'.repeat(20)).then(
      () => true,
      () => false,
    )
    if (!up) await new Promise((r) => setTimeout(r, 100))
  }
  if (!up) throw new Error(`opentracker did not answer on 127.0.0.1:${port}:\n${out.text()}`)
  return { whitelist, reload: () => void child.kill('SIGHUP'), output: out.text }
}
