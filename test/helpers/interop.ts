/**
 * Standard BitTorrent clients as test peers, all on 127.0.0.1 and all
 * cleaned up by cleanupAll(): `blockswarm seed`, python3-libtorrent (a small
 * script), aria2c, transmission-daemon (driven by transmission-remote); free
 * ports; and byte comparisons of what they left on disk against the source.
 */
import type { ChildProcess } from 'node:child_process'
import { open, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ExtentTorrent } from '../../src/torrent/metainfo.js'
import { captureOutput, CLI, freePort, run, startProcess, type RunResult, waitFor } from './sys.js'

/** Debian's python3 (the one with the libtorrent module; `python3` on PATH may be another). */
export const PYTHON = '/usr/bin/python3'

/** What `blockswarm seed` prints before the line to put into opentracker's whitelist. */
const WHITELIST_HEADER = 'opentracker whitelist line'

/** Start `blockswarm seed ARGS` and wait until it says it is seeding; `whitelistLine` is the line it prints for opentracker. */
export async function startSeeder(args: string[], logLevel = 'warn'): Promise<{ child: ChildProcess; output: () => string; whitelistLine: string }> {
  const child = startProcess(process.execPath, [CLI, 'seed', ...args, '--log-level', logLevel])
  const out = captureOutput(child)
  const line = () => {
    const lines = out.text().split('\n')
    const at = lines.findIndex((l) => l.startsWith(WHITELIST_HEADER))
    return at >= 0 && at + 2 < lines.length ? lines[at + 1] : undefined
  }
  await waitFor('the seeder to start', () => line() !== undefined || child.exitCode !== null, 30_000, out.text)
  if (child.exitCode !== null) throw new Error(`seeder exited ${child.exitCode}:\n${out.text()}`)
  return { child, output: out.text, whitelistLine: line()! }
}

import { readRange } from './sys.js'

export { readRange }

/** The extents (as "0xOFFSET+LENGTH") whose bytes on `target` differ from those on `source` (devices or image files). */
export async function differingExtents(t: ExtentTorrent, source: string, target: string): Promise<string[]> {
  const bad: string[] = []
  for (const e of t.extents) {
    if (!(await readRange(source, e.offset, e.length)).equals(await readRange(target, e.offset, e.length))) bad.push(`0x${e.offset.toString(16)}+${e.length}`)
  }
  return bad
}

/**
 * What is wrong with a standard client's download under `dir`: DIR/NAME must
 * hold exactly one file per extent, named by its offset, each equal to that
 * extent's bytes on `source`. Empty when all is right.
 */
export async function extentFileProblems(dir: string, t: ExtentTorrent, source: string): Promise<string[]> {
  const problems: string[] = []
  const names = new Set(await readdir(join(dir, t.name)))
  for (const n of names) if (!t.extents.some((e) => e.name === n)) problems.push(`${n}: not an extent of the torrent`)
  for (const e of t.extents) {
    if (!names.has(e.name)) problems.push(`${e.name}: missing`)
    else if (!(await readFile(join(dir, t.name, e.name))).equals(await readRange(source, e.offset, e.length))) problems.push(`${e.name}: differs from ${source} at 0x${e.offset.toString(16)}+${e.length}`)
  }
  return problems
}

/** A libtorrent peer: "seed" (from save_path, trusted) or "leech" (exits once complete); prints JSON status lines. */
const LIBTORRENT_PEER = `
import json, sys, time
import libtorrent as lt
mode, torrent, save, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ses = lt.session({'listen_interfaces': '127.0.0.1:%d' % port, 'enable_dht': False, 'enable_lsd': False,
                  'enable_upnp': False, 'enable_natpmp': False, 'allow_multiple_connections_per_ip': True})
p = lt.add_torrent_params()
p.ti = lt.torrent_info(torrent)
p.save_path = save
if mode == 'seed':
    p.flags |= lt.torrent_flags.seed_mode
h = ses.add_torrent(p)
for peer in sys.argv[5:]:
    host, pt = peer.rsplit(':', 1)
    h.connect_peer((host, int(pt)))
print(json.dumps({'ready': True}), flush=True)
while True:
    s = h.status()
    print(json.dumps({'progress': s.progress, 'seeding': s.is_seeding, 'peers': s.num_peers,
                      'down': s.total_payload_download, 'failed': s.total_failed_bytes}), flush=True)
    if mode == 'leech' and s.is_seeding:
        break
    time.sleep(0.2)
`

/** Write the libtorrent peer script into `dir`; returns its path (run it with PYTHON MODE TORRENT SAVE PORT [PEER...]). */
export async function writeLibtorrentPeer(dir: string): Promise<string> {
  const path = join(dir, 'lt-peer.py')
  await writeFile(path, LIBTORRENT_PEER)
  return path
}

/** aria2c flags for a quiet, loopback-only BitTorrent client with no DHT, LPD or peer exchange. */
export function aria2cFlags(dir: string, listenPort: number): string[] {
  return [
    `--dir=${dir}`,
    `--listen-port=${listenPort}`,
    '--interface=127.0.0.1',
    '--disable-ipv6=true',
    '--enable-dht=false',
    '--enable-dht6=false',
    '--bt-enable-lpd=false',
    '--enable-peer-exchange=false',
    '--summary-interval=0',
  ]
}

export interface Transmission {
  readonly peerPort: number
  readonly child: ChildProcess
  readonly output: () => string
  /** transmission-remote against this daemon. */
  remote(...args: string[]): Promise<RunResult>
  /** The `transmission-remote -l` row of the one torrent, e.g. "1 100% 38.74 MB Done 0.0 0.0 0.0 Idle sda1" (spaces squeezed). */
  row(): Promise<string>
}

/**
 * transmission-daemon in the foreground with its own config dir under `dir`,
 * peers and RPC on 127.0.0.1 only, no DHT/LPD/port mapping/uTP, and
 * `downloadDir` as the download directory; ready for transmission-remote.
 */
export async function startTransmission(dir: string, downloadDir: string): Promise<Transmission> {
  const [peerPort, rpcPort] = [await freePort(), await freePort()]
  const child = startProcess('transmission-daemon', [
    '--foreground',
    '--config-dir', join(dir, 'transmission-config'),
    '--download-dir', downloadDir,
    '--peerport', String(peerPort),
    '--bind-address-ipv4', '127.0.0.1',
    '--port', String(rpcPort),
    '--rpc-bind-address', '127.0.0.1',
    '--no-auth',
    '--no-dht',
    '--no-lpd',
    '--no-portmap',
    '--no-utp',
    '--log-error',
  ])
  const out = captureOutput(child)
  const remote = (...args: string[]) => run('transmission-remote', [`127.0.0.1:${rpcPort}`, ...args], { timeoutMs: 10_000 })
  let ready = false
  for (let i = 0; i < 100 && !ready && child.exitCode === null; i++) {
    ready = (await remote('-l')).code === 0
    if (!ready) await new Promise((r) => setTimeout(r, 200))
  }
  if (!ready) throw new Error(`transmission-daemon did not answer RPC on 127.0.0.1:${rpcPort}:\n${out.text()}`)
  const row = async () => {
    const lines = (await remote('-l')).stdout.trim().split('\n')
    return lines.length === 3 ? lines[1].trim().replace(/\s+/g, ' ') : ''
  }
  return { peerPort, child, output: out.text, remote, row }
}

export { freePort, waitFor }
