/**
 * The README's first usage example, as written, across two machines: an
 * imaging host (network namespace, 10.0.0.1/24) runs
 *   blockswarm create SOURCE -o golden.torrent --tracker http://10.0.0.1:6969/announce
 *   blockswarm seed golden.torrent SOURCE --tracker-embedded 6969
 * and a node (another namespace, 10.0.0.2/24, joined by a veth pair) runs
 *   blockswarm deploy golden.torrent TARGET --seed-idle 30
 * Only the device paths are replaced (an ext4 image file for /dev/sdb, a file
 * of stale bytes of the same size for /dev/sda). Both addresses exist only
 * inside the namespaces made here, which are removed also on failure.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { parseTorrent } from '../src/torrent/metainfo.js'
import { extTestTree, makeExtImage, makeStaleTarget, writeTree } from './helpers/images-ext.js'
import { captureOutput, cleanupAll, CLI, onCleanup, readRange, run, sh, startProcess, tempDir, waitExit, waitFor } from './helpers/sys.js'

const MiB = 1024 * 1024
const IMAGE_SIZE = 64 * MiB
const PREFIX = `bswrd${process.pid}`
const HOST_NS = `${PREFIX}-host`
const NODE_NS = `${PREFIX}-node`

afterAll(cleanupAll)

/** Remove a namespace we made, killing what runs inside it first (only our processes run there). */
async function removeNamespace(ns: string): Promise<void> {
  const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean)
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL')
    } catch {
      // already gone
    }
  }
  await run('ip', ['netns', 'del', ns])
}

async function makeNetwork(): Promise<void> {
  for (const ns of [HOST_NS, NODE_NS]) {
    await sh('ip', ['netns', 'add', ns])
    onCleanup(() => removeNamespace(ns))
    await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
  }
  // the veth pair is made inside the host namespace, its other end goes straight to the node's
  await sh('ip', ['-n', HOST_NS, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NODE_NS])
  await sh('ip', ['-n', HOST_NS, 'addr', 'add', '10.0.0.1/24', 'dev', 'eth0'])
  await sh('ip', ['-n', NODE_NS, 'addr', 'add', '10.0.0.2/24', 'dev', 'eth0'])
  await sh('ip', ['-n', HOST_NS, 'link', 'set', 'eth0', 'up'])
  await sh('ip', ['-n', NODE_NS, 'link', 'set', 'eth0', 'up'])
}

/** `node bin/blockswarm.js ARGS` inside namespace `ns`. */
const inNs = (ns: string, args: string[]): [string, string[]] => ['ip', ['netns', 'exec', ns, process.execPath, CLI, ...args]]

describe("the README's first usage example", () => {
  it('create with --tracker http://10.0.0.1:6969/announce, seed --tracker-embedded 6969, deploy --seed-idle 30 on another machine: exact extents, e2fsck clean', async () => {
    const work = await tempDir('bsw-readme-')
    const treeDir = join(work, 'tree')
    await writeTree(treeDir, extTestTree())
    const sdb = join(work, 'sdb.img')
    await makeExtImage(sdb, IMAGE_SIZE, 'mkfs.ext4', [], treeDir)
    const sda = join(work, 'sda.img')
    await makeStaleTarget(sda, IMAGE_SIZE)
    const torrentFile = join(work, 'golden.torrent')
    await makeNetwork()

    // 1. On the imaging host
    const create = await run(...inNs(HOST_NS, ['create', sdb, '-o', torrentFile, '--tracker', 'http://10.0.0.1:6969/announce']))
    expect(create.code, `create:\n${create.stdout}${create.stderr}`).toBe(0)
    const torrent = parseTorrent(await readFile(torrentFile))
    expect(torrent.trackers).toEqual(['http://10.0.0.1:6969/announce'])

    const seeder = startProcess(...inNs(HOST_NS, ['seed', torrentFile, sdb, '--tracker-embedded', '6969']))
    const seederOut = captureOutput(seeder)
    await waitFor('the seeder to start', () => seederOut.text().includes('opentracker whitelist line') || seeder.exitCode !== null, 30_000, seederOut.text)
    expect(seeder.exitCode, seederOut.text()).toBeNull()

    // 2. On the node
    const deploy = await run(...inNs(NODE_NS, ['deploy', torrentFile, sda, '--seed-idle', '30']), { timeoutMs: 120_000 })
    expect(deploy.code, `deploy:\n${deploy.stdout}${deploy.stderr}\nseeder:\n${seederOut.text()}`).toBe(0)

    seeder.kill('SIGTERM')
    expect(await waitExit(seeder, 30_000)).toBe(0)

    const badExtents: string[] = []
    for (const e of torrent.extents) {
      if (!(await readRange(sdb, e.offset, e.length)).equals(await readRange(sda, e.offset, e.length))) badExtents.push(`0x${e.offset.toString(16)}+${e.length}`)
    }
    expect(badExtents).toEqual([])
    const fsck = await run('e2fsck', ['-fn', sda])
    expect(fsck.code, `e2fsck -fn ${sda}:\n${fsck.stdout}${fsck.stderr}`).toBe(0)
  })
})
