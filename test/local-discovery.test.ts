/**
 * Local Service Discovery (BEP 14), only ever inside network namespaces made
 * here: two nodes on one bridge (tools/bench/netns.ts, 10.77.0.0/16), no
 * tracker in the torrent and no --peer anywhere. Without --lsd a node finds
 * nobody; with it, the node deploys from the seeder. Multicast never leaves
 * the namespaces, which are removed (with what runs in them) also on failure.
 * The announce format itself is checked first, without any network.
 */
import { readFile, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { announcePackets, LSD_GROUP, LSD_PORT, parseAnnounce } from '../src/services/local-discovery.js'
import { Topology } from '../tools/bench/netns.js'
import { extentDigest, makeImage, makeTarget } from './helpers/grpc-fixtures.js'
import { extentFileProblems } from './helpers/interop.js'
import { captureOutput, cleanupAll, CLI, onCleanup, tempDir, waitExit, waitFor } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024
const hashes = Array.from({ length: 60 }, (_, i) => i.toString(16).padStart(2, '0').repeat(20))

describe('BEP 14 announces', () => {
  it('are BT-SEARCH requests to the group, several info-hashes a packet within 1400 bytes, read back as sent', () => {
    const packets = announcePackets(hashes, 6881, 'c00c1e')
    expect(packets.length).toBeGreaterThan(1)
    for (const p of packets) expect(p.length).toBeLessThanOrEqual(1400)
    const first = packets[0].toString('latin1')
    expect(first.startsWith(`BT-SEARCH * HTTP/1.1\r\nHost: ${LSD_GROUP}:${LSD_PORT}\r\nPort: 6881\r\nInfohash: ${hashes[0]}\r\nInfohash: ${hashes[1]}\r\n`)).toBe(true)
    expect(first.endsWith('cookie: c00c1e\r\n\r\n\r\n')).toBe(true)
    const read = packets.map((p) => parseAnnounce(p)!)
    expect(read.flatMap((a) => a.infoHashes)).toEqual(hashes)
    expect(read.every((a) => a.port === 6881 && a.cookie === 'c00c1e')).toBe(true)
  })

  it("are read leniently (another client's header case, bare LF, no cookie, unknown headers) and anything else is ignored", () => {
    const upper = hashes[7].toUpperCase()
    const other = Buffer.from(`BT-SEARCH * HTTP/1.1\nhost: ${LSD_GROUP}:${LSD_PORT}\nPORT: 51413\nx-extra: 1\nINFOHASH: ${upper}\ninfohash: ${hashes[7]}\n\n`)
    expect(parseAnnounce(other)).toEqual({ port: 51413, infoHashes: [hashes[7]], cookie: undefined })
    for (const bad of [
      `M-SEARCH * HTTP/1.1\r\nPort: 6881\r\nInfohash: ${hashes[0]}\r\n\r\n`,
      `BT-SEARCH * HTTP/1.1\r\nInfohash: ${hashes[0]}\r\n\r\n`,
      `BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: ${hashes[0]}\r\n\r\n`,
      `BT-SEARCH * HTTP/1.1\r\nPort: 70000\r\nInfohash: ${hashes[0]}\r\n\r\n`,
      `BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\nInfohash: ${hashes[0].slice(2)}\r\n\r\n`,
      `BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\n\r\nInfohash: ${hashes[0]}\r\n`,
      '',
    ]) {
      expect(parseAnnounce(Buffer.from(bad)), JSON.stringify(bad)).toBeUndefined()
    }
  })
})

describe('--lsd in two namespaces on one bridge', () => {
  it('no tracker, no --peer: a node without --lsd finds nobody; `ezio --lsd` and `deploy --lsd` deploy from a `daemon --lsd` seeder', async () => {
    const dir = await tempDir('bsw-lsd-')
    const image = await makeImage(dir, 'sda1', 8 * MiB, 13)
    expect(image.torrent.trackers).toEqual([])
    const ezio = join(dir, 'ezio')
    await symlink(CLI, ezio)
    const net = Topology.create({ nodes: 2, rate: '1gbit', prefix: `bswlsd${process.pid}` })
    onCleanup(async () => net.destroy())
    const node = (i: number, cmd: string, args: string[]) => {
      const child = net.spawn(i, cmd, args)
      return { child, output: captureOutput(child).text }
    }

    const seeder = node(0, process.execPath, [CLI, 'daemon', '--lsd', '--seed', `${image.torrentFile}=${image.path}`, '--status-interval', '0'])
    await waitFor('the seeder to announce', () => seeder.output().includes('"msg":"local service discovery on"') || seeder.child.exitCode !== null, 30_000, seeder.output)
    expect(seeder.child.exitCode, seeder.output()).toBeNull()
    expect(seeder.output()).toContain(`"interfaces":["${Topology.address(0)}"]`)

    // LSD is off by default: nothing to find peers with
    const alone = await makeTarget(dir, 'alone.img', image.size)
    const blind = node(1, process.execPath, [CLI, 'deploy', image.torrentFile, alone, '--stall-timeout', '3', '--json'])
    expect(await waitExit(blind.child, 60_000), blind.output()).toBe(1)
    expect(blind.output()).toContain('stalled: no data for 3 s (--stall-timeout); no peer connected')

    // the ezio name, EZIO's file mode, and --lsd: the seeder hears the node's announce and dials it
    const viaEzio = join(dir, 'ezio-target')
    const daemon = node(1, ezio, ['--lsd', '-F', '--add', `${image.torrentFile}=${viaEzio}`, '--exit-when-done', '--seed-idle', '1', '--status-interval', '0'])
    expect(await waitExit(daemon.child, 60_000), `${daemon.output()}\nseeder:\n${seeder.output()}`).toBe(0)
    expect(await extentFileProblems(viaEzio, image.torrent, image.path)).toEqual([])

    // deploy --lsd too
    const target = await makeTarget(dir, 'target.img', image.size)
    const deploy = node(1, process.execPath, [CLI, 'deploy', image.torrentFile, target, '--lsd', '--seed-idle', '0', '--stall-timeout', '30'])
    expect(await waitExit(deploy.child, 60_000), `${deploy.output()}\nseeder:\n${seeder.output()}`).toBe(0)
    expect(extentDigest(image.torrent, await readFile(target))).toBe(extentDigest(image.torrent, image.bytes))

    seeder.child.kill('SIGTERM')
    expect(await waitExit(seeder.child, 30_000), seeder.output()).toBe(0)
  })
})
