/**
 * `npm run demo` (dist/tools/demo.js), run for real at a small size: as root
 * it deploys to loop devices over stale data, verifies, and the nodes serve
 * each other; afterwards its work directory, loop devices and processes are
 * gone, also after a Ctrl-C mid-deploy; with --targets file --keep the target
 * files it leaves hold the image's extents and the stale bytes elsewhere.
 */
import { existsSync } from 'node:fs'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { parseTorrent } from '../src/torrent/metainfo.js'
import { gapsOf } from '../src/torrent/extents.js'
import { pseudoRandomBytes } from '../tools/bench/ext4-image.js'
import { captureOutput, cleanupAll, onCleanup, ROOT, run, startProcess, waitExit } from './helpers/sys.js'

const DEMO = join(ROOT, 'dist/tools/demo.js')
const MiB = 1024 * 1024

afterEach(cleanupAll)

/** The demo gives up (and cleans up) on its own --timeout, before the test's. */
const demo = (args: string[]) => run(process.execPath, [DEMO, '--timeout', '90', ...args], { timeoutMs: 110_000 })

/** The work directory, the PIDs and the loop devices the demo says it made. */
function madeBy(output: string) {
  const work = /^work directory (\S+)$/m.exec(output)?.[1]
  if (!work) throw new Error(`the demo printed no work directory:\n${output}`)
  onCleanup(() => rm(work, { recursive: true, force: true }))
  const pids = [...output.matchAll(/\bpid (\d+)/g)].map((m) => Number(m[1]))
  const loops = [...new Set([...output.matchAll(/target (\/dev\/loop\d+)/g)].map((m) => m[1]))]
  return { work, pids, loops }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Nothing the demo made is left: no directory, no process, no loop device backed by a file in it. */
async function expectNothingLeft(made: ReturnType<typeof madeBy>): Promise<void> {
  expect(existsSync(made.work), `${made.work} still exists`).toBe(false)
  expect(made.pids.filter(alive)).toEqual([])
  const loops = await run('losetup', ['-a'])
  expect(loops.stdout.split('\n').filter((l) => l.includes(made.work))).toEqual([])
}

describe('npm run demo', () => {
  it.skipIf(process.getuid?.() !== 0)('as root: three daemons deploy onto stale loop devices over gRPC, verified, nodes serve each other, nothing left behind', async () => {
    const r = await demo(['--size', '8M', '--seeder-rate', '10M'])
    const out = r.stdout + r.stderr
    expect(r.code, out).toBe(0)
    const made = madeBy(out)
    expect(out).toContain('targets: loop devices with stale data')
    expect(made.loops).toHaveLength(3)
    expect(made.pids).toHaveLength(4) // seeder + 3 daemons
    for (const dev of made.loops) expect(out).toMatch(new RegExp(`${dev}: (\\d+)/\\1 pieces match the torrent's SHA-1, e2fsck -fn clean`))
    expect(out).toContain('daemons shut down over gRPC (Shutdown), seeder stopped (exit 0)')
    // the summary's "uploaded to nodes" column: what each node sent the others
    const rows = [...out.matchAll(/^ {2}(node\d) +[\d.]+ s +\d+ MB\/s +\S+ \S+ +(\S+) (\S+) +(\S+) +ok$/gm)]
    expect(rows.map((m) => m[1])).toEqual(['node1', 'node2', 'node3'])
    const uploaded = rows.map((m) => Number(m[2]))
    expect(uploaded.some((n) => n > 0), out).toBe(true)
    expect(out).toMatch(/the nodes sent each other [\d.]+ \S+: they served each other/)
    await expectNothingLeft(made)
  })

  it('--targets file --keep: the kept target files hold the image in its extents and their stale bytes in the free blocks', async () => {
    const r = await demo(['--size', '8M', '--nodes', '2', '--targets', 'file', '--keep'])
    const out = r.stdout + r.stderr
    expect(r.code, out).toBe(0)
    const made = madeBy(out)
    expect(out).toContain(`kept ${made.work}`)
    expect(made.pids.filter(alive)).toEqual([])

    const golden = await readFile(join(made.work, 'golden.img'))
    const torrent = parseTorrent(await readFile(join(made.work, 'golden.torrent')))
    expect(torrent.totalLength).toBeLessThan(golden.length)
    for (const name of ['node1', 'node2']) {
      const target = await readFile(join(made.work, `${name}.img`))
      expect(target.length).toBe(golden.length)
      for (const e of torrent.extents) {
        expect(target.subarray(e.offset, e.offset + e.length).equals(golden.subarray(e.offset, e.offset + e.length)), `${name} extent ${e.name}`).toBe(true)
      }
      // free blocks were not written: they still hold the node's stale pattern (a 4 MiB block repeated)
      const block = pseudoRandomBytes(4 * MiB, `stale-${name}`)
      const twice = Buffer.concat([block, block])
      for (const g of gapsOf(torrent.extents, golden.length)) {
        for (let at = g.offset; at < g.offset + g.length; at += 64 * 1024) {
          const n = Math.min(64 * 1024, g.offset + g.length - at)
          const want = twice.subarray(at % (4 * MiB), (at % (4 * MiB)) + n)
          expect(target.subarray(at, at + n).equals(want), `${name} gap byte ${at}`).toBe(true)
        }
      }
    }
  })

  it('Ctrl-C mid-deploy: exits 130 and stops its processes, detaches its loop devices, removes its work directory', async () => {
    // a slow seeder keeps the deploy running until the signal
    const child = startProcess(process.execPath, [DEMO, '--timeout', '90', '--size', '8M', '--seeder-rate', '256K'])
    // if the test fails early: SIGTERM first, so that the demo cleans up (before startProcess's SIGKILL)
    onCleanup(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await waitExit(child, 30_000).catch(() => {})
    })
    const out = captureOutput(child)
    const until = Date.now() + 90_000
    while (!out.text().includes('[5/7] deploying')) {
      if (child.exitCode !== null || Date.now() > until) throw new Error(`the demo did not reach the deploy step:\n${out.text()}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    await new Promise((r) => setTimeout(r, 1000))
    const made = madeBy(out.text())
    expect(made.pids.filter(alive)).toHaveLength(4)
    child.kill('SIGINT')
    expect(await waitExit(child, 60_000), out.text()).toBe(130)
    expect(out.text()).toContain('SIGINT: stopping the processes')
    expect(out.text()).not.toContain('FAILED')
    await expectNothingLeft(made)
  })
})
