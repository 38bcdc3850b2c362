/**
 * `blockswarm daemon --dashboard` over loopback. The daemon seeds a torrent
 * (--seed, seeding mode) whose tracker is a bittorrent-tracker Server in this
 * process: the daemon has no embedded tracker, so its dashboard knows nodes
 * by their connections to it and by the peers it saw complete. Two
 * `blockswarm deploy`s find it through that tracker. Once they exited,
 * /api/fleet must show both done, each holding every piece of the strip; the
 * SSE stream must show each node within 2 s of its first announce (measured
 * from the moment this tracker answered it). Off loopback without TLS, a
 * token or --insecure, the daemon refuses to start at all.
 */
import { Server } from 'bittorrent-tracker'
import { afterEach, describe, expect, it } from 'vitest'
import { startDeploy } from './helpers/deploy-run.js'
import { fetchFleet, followEvents, makeFleetImage } from './helpers/fleet.js'
import { makeTarget, startDaemonProcess } from './helpers/grpc-fixtures.js'
import { cleanupAll, cli, freePort, onCleanup, tempDir, waitExit, waitFor } from './helpers/sys.js'

afterEach(cleanupAll)

/** A tracker on 127.0.0.1 that notes when it answered each peer's first announce. */
async function startTracker(): Promise<{ url: string; firstAnnounce: Map<string, number> }> {
  const port = await freePort()
  const server = new Server({ http: true, udp: false, ws: false, stats: false })
  const firstAnnounce = new Map<string, number>()
  // emitted once the announce is answered; peer ids in hex, as the dashboard shows them
  server.on('start', (_addr: string, params: { peer_id: string }) => {
    if (!firstAnnounce.has(params.peer_id)) firstAnnounce.set(params.peer_id, Date.now())
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()))
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${port}/announce`, firstAnnounce }
}

describe('blockswarm daemon --dashboard', () => {
  it('shows the deploys against a seeding daemon done, holding every piece after they left; SSE within 2 s of a node\'s announce', async () => {
    const dir = await tempDir('bsw-fleet-daemon-')
    const tracker = await startTracker()
    const { source, size, torrentFile, torrent } = await makeFleetImage(dir, tracker.url, 17)

    const address = `127.0.0.1:${await freePort()}`
    const dashPort = await freePort()
    const daemon = await startDaemonProcess(
      // --upload-rate: the deploys take a few seconds, long enough to be seen part-way while connected
      ['--listen', address, '--port', '0', '--bind', '127.0.0.1', '--status-interval', '0', '--upload-rate', '2M', '--seed', `${torrentFile}=${source}`, '--dashboard', `127.0.0.1:${dashPort}`],
      address,
    )
    await waitFor('the daemon to announce its torrent', () => tracker.firstAnnounce.size === 1 || daemon.child.exitCode !== null, 30_000, daemon.output)
    const started = daemon
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; dashboard?: string })
      .find((l) => l.msg === 'daemon started')
    const url = `http://127.0.0.1:${dashPort}/`
    expect(started?.dashboard, daemon.output()).toBe(url)
    const daemonId = [...tracker.firstAnnounce.keys()][0]
    const sse = followEvents(`${url}api/fleet/events`)
    await waitFor('the stream to carry the torrent\'s fleet', () => sse.events.length > 0, 30_000, daemon.output)
    expect(sse.events[0].snap).toMatchObject({ tracker: false, fleet: { nodes: 0 }, torrent: { infoHash: torrent.infoHash } })

    const deploys = []
    for (let i = 0; i < 2; i++) {
      const target = await makeTarget(dir, `node${i}.img`, size)
      deploys.push(startDeploy([torrentFile, target, '--port', '0', '--bind', '127.0.0.1', '--skip-check', '--seed-idle', '3', '--log-level', 'warn']))
    }
    for (const d of deploys) expect(await waitExit(d.child, 120_000), d.text()).toBe(0)

    // both exited: known by the pieces the daemon saw, done, and counted in every piece
    const ids = [...tracker.firstAnnounce.keys()].filter((id) => id !== daemonId)
    expect(ids).toHaveLength(2)
    const fleet = await fetchFleet(url)
    expect(fleet.nodes.map((n) => n.id).sort()).toEqual([...ids].sort())
    for (const n of fleet.nodes) {
      expect(n).toMatchObject({ state: 'done', progress: 1, have: size, connected: false })
      expect(n.address).toMatch(/^127\.0\.0\.1:\d+$/)
      expect(n.completedAt).toBeGreaterThanOrEqual(tracker.firstAnnounce.get(n.id)!)
    }
    expect(fleet.fleet).toMatchObject({ nodes: 2, done: 2, byState: { done: 2, silent: 0, downloading: 0 } })
    expect(fleet.fleet.lastFinish).not.toBeNull()
    expect(fleet.pieces).toEqual(new Array(torrent.pieceCount).fill(2))

    // the stream showed each node part-way while connected, then done
    for (const id of ids) {
      const seen = sse.events.map((e) => e.snap.nodes.find((n) => n.id === id)).filter((n) => n !== undefined)
      expect(seen.some((n) => n.connected && n.state === 'downloading' && n.progress > 0 && n.progress < 1), `node ${id} was never seen part-way`).toBe(true)
      expect(seen.at(-1)!.state).toBe('done')
    }

    // each node reached the stream within 2 s of its first announce (the daemon cannot know of it before)
    for (const id of ids) {
      const announcedAt = tracker.firstAnnounce.get(id)!
      const first = sse.events.find((e) => e.snap.nodes.some((n) => n.id === id))
      expect(first, `no event showed ${id}`).toBeDefined()
      expect(first!.at - announcedAt).toBeGreaterThanOrEqual(0)
      expect(first!.at - announcedAt, `node ${id} reached the stream ${first!.at - announcedAt} ms after its announce`).toBeLessThanOrEqual(2000)
    }

    daemon.child.kill('SIGTERM')
    expect(await waitExit(daemon.child, 15_000), daemon.output()).toBe(0)
  })

  it('refuses --dashboard 0.0.0.0:PORT without TLS, a token or --insecure, before it starts anything', async () => {
    const { BLOCKSWARM_TOKEN: _token, ...env } = process.env
    const r = await cli(['daemon', '--listen', `127.0.0.1:${await freePort()}`, '--port', '0', '--bind', '127.0.0.1', '--dashboard', `0.0.0.0:${await freePort()}`], { env, timeoutMs: 30_000 })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^blockswarm: refusing to serve the dashboard on 0\.0\.0\.0 without TLS or a token: .*--tls-cert FILE --tls-key FILE.*--token-file FILE.*or add --insecure/m)
    expect(r.stderr).not.toMatch(/session started|control API listening/)
  })
})
