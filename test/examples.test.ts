/**
 * The examples/ run for real on one machine: orchestrate.ts against three
 * `blockswarm daemon` processes; clonezilla-flow.sh from partclone to
 * verified targets; blockswarm.service through systemd-analyze and its own
 * ExecStart line; the Tinkerbell entrypoint with a local seeder, a loop
 * device or image file, and without DEST_DISK.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { connectControl } from '../src/control/client.js'
import { parseTorrent } from '../src/torrent/metainfo.js'
import { pseudoRandomBytes } from '../tools/bench/ext4-image.js'
import { freePorts } from '../tools/demo/ports.js'
import { type Image, makeImage, startDaemonProcess, startSeeder } from './helpers/grpc-fixtures.js'
import { cleanupAll, CLI, loopAttach, onCleanup, pseudoRandom, readRange, ROOT, run, tempDir, waitExit } from './helpers/sys.js'

const EXAMPLES = join(ROOT, 'examples')
const ORCHESTRATE = join(ROOT, 'dist/examples/orchestrate.js')
const MiB = 1024 * 1024
const isRoot = process.getuid?.() === 0

afterEach(cleanupAll)
afterAll(cleanupAll)

/** A target file of `size` stale (non-zero) bytes. */
async function staleFile(path: string, size: number, seed: number): Promise<string> {
  await writeFile(path, pseudoRandom(size, seed))
  return path
}

describe('examples/orchestrate.ts', () => {
  let dir: string
  let image: Image

  // shared by the tests (cleanupAll after each test would remove a tempDir): removed in afterAll
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bsw-orch-'))
    image = await makeImage(dir, 'disk', 8 * MiB, 31)
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  async function daemons(n: number) {
    const ports = await freePorts(2 * n)
    return Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const address = `127.0.0.1:${ports[2 * i]}`
        await startDaemonProcess(['--listen', address, '--port', String(ports[2 * i + 1]), '--bind', '127.0.0.1', '--log-level', 'warn'], address)
        return address
      }),
    )
  }

  it('adds the torrent to three daemons over gRPC, names the slowest node, exits 0 with every target exact; a re-run finds it there', async () => {
    const seeder = await startSeeder(image)
    const addresses = await daemons(3)
    const work = await tempDir('bsw-orch-targets-')
    const targets = await Promise.all(addresses.map((_, i) => staleFile(join(work, `node${i}.img`), image.size, 50 + i)))
    const args = [ORCHESTRATE, image.torrentFile, ...addresses.map((a, i) => `${a}=${targets[i]}`), '--peer', seeder.peer, '--seed-idle', '1', '--timeout', '60']

    const r = await run(process.execPath, args, { timeoutMs: 90_000 })
    expect(r.code, r.stdout + r.stderr).toBe(0)
    for (const a of addresses) {
      expect(r.stdout).toContain(`${a}: added -> `)
      expect(r.stdout).toMatch(new RegExp(`${a}: done in [\\d.]+ s`))
    }
    const slowest = /^slowest node: (\S+) \((\S+)\) done after [\d.]+ s; fastest [\d.]+ s, median [\d.]+ s$/m.exec(r.stdout)
    expect(slowest, r.stdout).not.toBeNull()
    expect(addresses).toContain(slowest![1])
    expect(r.stdout).toContain('all 3 nodes hold disk, every piece verified and flushed')
    // a "zero" torrent: the gaps are zeroed, so each target is the image, byte for byte
    for (const t of targets) expect((await readFile(t)).equals(image.bytes), t).toBe(true)

    const again = await run(process.execPath, args, { timeoutMs: 60_000 })
    expect(again.code, again.stdout + again.stderr).toBe(0)
    for (const a of addresses) expect(again.stdout).toContain(`${a}: already there -> `)
  })

  it('a daemon that cannot be reached: exit 1 naming it, while the reachable node still deploys', async () => {
    const seeder = await startSeeder(image)
    const [up] = await daemons(1)
    const [closedPort] = await freePorts(1)
    const down = `127.0.0.1:${closedPort}`
    const work = await tempDir('bsw-orch-down-')
    const target = await staleFile(join(work, 'up.img'), image.size, 60)
    const r = await run(process.execPath, [ORCHESTRATE, image.torrentFile, `${up}=${target}`, `${down}=${join(work, 'down.img')}`, '--peer', seeder.peer, '--timeout', '60'])
    expect(r.code, r.stdout + r.stderr).toBe(1)
    expect(r.stdout).toContain(`${down}: FAILED: cannot reach the blockswarm daemon at ${down}`)
    expect(r.stdout).toContain('1 of 2 nodes failed')
    expect(r.stdout).toMatch(new RegExp(`slowest node: ${up} `))
    expect((await readFile(target)).equals(image.bytes)).toBe(true)
  })

  it('bad arguments: exit 2 with the usage', async () => {
    const r = await run(process.execPath, [ORCHESTRATE, image.torrentFile])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('give a torrent and at least one ADDR=TARGET')
    expect(r.stderr).toContain('usage: orchestrate.js TORRENT ADDR=TARGET')
    const bad = await run(process.execPath, [ORCHESTRATE, image.torrentFile, '127.0.0.1:1=relative.img'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('"127.0.0.1:1=relative.img" is not ADDR=TARGET with an absolute TARGET')
  })
})

describe('examples/clonezilla-flow.sh', () => {
  it('partclone -T, create --from-partclone, seed, two deploys with a --then-command, partclone-verified; the targets hold the source\'s extents', async () => {
    const work = await tempDir('bsw-clonezilla-')
    const [trackerPort, peerPort] = await freePorts(2)
    // the generated source is 64 MiB: one target is a loop device over 64 MiB of stale data (a file without root)
    const stale = join(work, 'stale1.img')
    await writeFile(stale, Buffer.concat(Array.from({ length: 16 }, (_, i) => pseudoRandomBytes(4 * MiB, `stale-${i}`))))
    const first = isRoot ? await loopAttach(stale) : stale
    const targets = [first, join(work, 'node2.img')]
    const env = { ...process.env, WORK: work, TARGETS: targets.join(' '), PIECE_SIZE: '1M', SEED_IDLE: '1', TRACKER_PORT: String(trackerPort), PEER_PORT: String(peerPort), TIMEOUT: '60' }
    const r = await run('bash', [join(EXAMPLES, 'clonezilla-flow.sh')], { env, timeoutMs: 100_000 })
    const out = r.stdout + r.stderr
    expect(r.code, out).toBe(0)
    expect(out).toContain('source: generated ext4 image')
    expect(out).toMatch(/1\. partclone\.extfs -c -T: \d+ extent files/)
    expect(out).toMatch(/blockswarm create --from-partclone: .* \(\d+ × 1\.00 MiB pieces\)/)
    for (const [i, t] of targets.entries()) {
      expect(out).toContain(`node${i + 1} ${t}: deployed (exit 0)`)
      expect(out).toContain(`node${i + 1} ${t}: same used blocks and sha1s as the source`)
      // the --then-command (e2fsck -fn of the target) ran and passed on each node
      expect(await readFile(join(work, `node${i + 1}.log`), 'utf8')).toContain('--then-command exited 0')
    }
    expect(out).toContain('all 2 nodes hold part')

    const torrent = parseTorrent(await readFile(join(work, 'part.torrent')))
    const source = await readFile(join(work, 'source.img'))
    for (const t of targets) {
      for (const e of torrent.extents) {
        expect((await readRange(t, e.offset, e.length)).equals(source.subarray(e.offset, e.offset + e.length)), `${t} extent ${e.name}`).toBe(true)
      }
    }
  })

  it('a source without an ext2/3/4 filesystem: exit 1 with what partclone said', async () => {
    const work = await tempDir('bsw-clonezilla-bad-')
    const zeros = join(work, 'zeros.img')
    await writeFile(zeros, Buffer.alloc(8 * MiB))
    const r = await run('bash', [join(EXAMPLES, 'clonezilla-flow.sh')], { env: { ...process.env, WORK: work, SOURCE: zeros } })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`clonezilla-flow: partclone.extfs -c -T could not read ${zeros}: Couldn't find valid filesystem superblock.`)
  })
})

describe('examples/blockswarm.service', () => {
  const UNIT = join(EXAMPLES, 'blockswarm.service')

  /** [section, key, value] of every assignment (comments and blank lines skipped). */
  async function unitEntries(): Promise<[string, string, string][]> {
    let section = ''
    const entries: [string, string, string][] = []
    for (const line of (await readFile(UNIT, 'utf8')).split('\n')) {
      const l = line.trim()
      if (!l || l.startsWith('#')) continue
      const head = /^\[(\w+)\]$/.exec(l)
      if (head) section = head[1]
      else {
        const at = l.indexOf('=')
        expect(at, `not key=value: ${l}`).toBeGreaterThan(0)
        entries.push([section, l.slice(0, at), l.slice(at + 1)])
      }
    }
    return entries
  }
  const value = (entries: [string, string, string][], section: string, key: string) => entries.find(([s, k]) => s === section && k === key)?.[2]

  it('has what a daemon unit needs: ExecStart of `blockswarm daemon` on a unix socket, Restart=on-failure, hardening that keeps /dev', async () => {
    const e = await unitEntries()
    expect(value(e, 'Unit', 'Description')).toBeTruthy()
    expect(value(e, 'Service', 'ExecStart')).toMatch(/^\/usr\/local\/bin\/blockswarm daemon --listen unix:\/run\/blockswarm\/control\.sock /)
    expect(value(e, 'Service', 'RuntimeDirectory')).toBe('blockswarm')
    expect(value(e, 'Service', 'Restart')).toBe('on-failure')
    expect(value(e, 'Service', 'KillSignal')).toBe('SIGTERM')
    expect(value(e, 'Service', 'ProtectSystem')).toBe('strict')
    expect(value(e, 'Service', 'PrivateDevices')).toBe('no')
    expect(value(e, 'Service', 'MemoryDenyWriteExecute')).toBeUndefined()
    expect(value(e, 'Install', 'WantedBy')).toBe('multi-user.target')
  })

  it.skipIf(!existsSync('/usr/bin/systemd-analyze'))('systemd-analyze verify accepts it without a warning', async () => {
    const dir = await tempDir('bsw-unit-')
    // verify checks that ExecStart's program exists: point it at this checkout's
    const unit = join(dir, 'blockswarm.service')
    await writeFile(unit, (await readFile(UNIT, 'utf8')).replace(/^ExecStart=\/usr\/local\/bin\/blockswarm /m, `ExecStart=${CLI} `))
    const r = await run('systemd-analyze', ['verify', unit])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr.trim()).toBe('')
  })

  it('its ExecStart line starts a daemon that answers on the socket and stops with exit 0 on the KillSignal', async () => {
    const e = await unitEntries()
    const runtime = await tempDir('bsw-unit-run-')
    const [port] = await freePorts(1)
    // what systemd would do: RuntimeDirectory= made (here: a temp dir), $BLOCKSWARM_OPTS empty; and a free --port
    const argv = value(e, 'Service', 'ExecStart')!
      .split(/\s+/)
      .filter((w) => w !== '$BLOCKSWARM_OPTS')
      .map((w) => w.replace('/run/blockswarm/', `${runtime}/`))
    expect(argv.slice(0, 2)).toEqual(['/usr/local/bin/blockswarm', 'daemon'])
    const args = argv.slice(2)
    args[args.indexOf('--port') + 1] = String(port)
    const address = `unix:${runtime}/control.sock`
    const { child } = await startDaemonProcess(args, address)
    const c = connectControl(address)
    onCleanup(async () => c.close())
    const info = await c.blockswarm.GetDaemonInfo({})
    expect(info.btPort).toBe(port)
    expect(info.listen).toContain(address)
    child.kill('SIGTERM')
    expect(await waitExit(child, 30_000)).toBe(0)
  })
})

describe('examples/tinkerbell-action/entrypoint.sh', () => {
  const ENTRYPOINT = join(EXAMPLES, 'tinkerbell-action/entrypoint.sh')
  let dir: string
  let image: Image

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bsw-tink-'))
    image = await makeImage(dir, 'disk', 8 * MiB, 41)
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  const action = (env: Record<string, string>) =>
    run('sh', [ENTRYPOINT], { env: { PATH: process.env.PATH, TMPDIR: dir, BLOCKSWARM: `${process.execPath} ${CLI}`, ...env }, timeoutMs: 90_000 })

  it(`TORRENT_PATH and PEERS onto a stale ${isRoot ? 'loop device' : 'image file'}: exit 0, the target is the image byte for byte`, async () => {
    const seeder = await startSeeder(image)
    const [btPort] = await freePorts(1)
    const work = await tempDir('bsw-tink-t-')
    const file = await staleFile(join(work, 'disk.img'), image.size, 70)
    const dest = isRoot ? await loopAttach(file) : file
    const r = await action({ TORRENT_PATH: image.torrentFile, DEST_DISK: dest, PEERS: `${seeder.peer}`, SEED_IDLE: '0', BT_PORT: String(btPort), BIND: '127.0.0.1' })
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain(`blockswarm-action: deploying ${image.torrentFile} to ${dest}`)
    expect(r.stdout).toContain(`deployed disk to ${dest}`)
    expect((await readRange(dest, 0, image.size + 1)).equals(image.bytes)).toBe(true)
  })

  it('TORRENT_URL over HTTP onto an image file it creates (CREATE_IMAGE): exit 0, exact bytes, the fetched torrent removed', async () => {
    const seeder = await startSeeder(image)
    const [btPort] = await freePorts(1)
    const torrentBytes = await readFile(image.torrentFile)
    const server = createServer((req, res) => {
      if (req.url === '/disk.torrent') res.writeHead(200).end(torrentBytes)
      else res.writeHead(404).end()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    onCleanup(() => new Promise((r) => server.close(() => r())))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.torrent`
    const work = await tempDir('bsw-tink-u-')
    const dest = join(work, 'new.img')
    const tmp = await tempDir('bsw-tink-tmp-')
    const r = await action({ TORRENT_URL: url, DEST_DISK: dest, CREATE_IMAGE: 'true', PEERS: seeder.peer, SEED_IDLE: '0', BT_PORT: String(btPort), BIND: '127.0.0.1', TMPDIR: tmp })
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect((await readFile(dest)).equals(image.bytes)).toBe(true)
    expect((await run('ls', ['-A', tmp])).stdout).toBe('')

    const missing = await action({ TORRENT_URL: url.replace('disk.torrent', 'nope.torrent'), DEST_DISK: dest, TMPDIR: tmp })
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain(`blockswarm-action: cannot fetch TORRENT_URL=${url.replace('disk.torrent', 'nope.torrent')}`)
  })

  it('without DEST_DISK, or without a torrent: exit 2 and the message names the variable', async () => {
    const noDisk = await action({ TORRENT_PATH: image.torrentFile })
    expect(noDisk.code).toBe(2)
    expect(noDisk.stderr).toContain('blockswarm-action: DEST_DISK is not set: name the block device to write, e.g. DEST_DISK=/dev/sda')
    const target = await staleFile(join(dir, 'x.img'), MiB, 3)
    const noTorrent = await action({ DEST_DISK: target })
    expect(noTorrent.code).toBe(2)
    expect(noTorrent.stderr).toContain('neither TORRENT_URL nor TORRENT_PATH is set')
    const noDevice = await action({ TORRENT_PATH: image.torrentFile, DEST_DISK: '/dev/no-such-disk' })
    expect(noDevice.code).toBe(2)
    expect(noDevice.stderr).toContain('DEST_DISK=/dev/no-such-disk does not exist')
  })
})
