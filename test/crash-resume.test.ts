/**
 * Crashes at random moments: a real `blockswarm deploy` onto a loop device
 * (stale data), fed by a rate-limited `blockswarm seed` so that a deploy
 * takes a couple of seconds, is killed with SIGKILL at seeded-random moments
 * aimed at each phase (start-up, the resume check, mid-download, the last
 * pieces and the finish: flush and zeroing of the gaps of a zero-scan
 * torrent). After every kill a re-run must finish with the target equal to
 * the image byte for byte, e2fsck -fn clean, re-using every piece the killed
 * run had reported verified, and downloading only what it did not re-use.
 */
import { copyFile, open, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { pieceSize } from '../src/torrent/piece-map.js'
import { deployJson, firstDifference, startDeploy, startSeed, waitFor } from './helpers/deploy-run.js'
import { makeGoldenWork } from './helpers/images-ext.js'
import { cleanupAll, cli, loopAttach, run, waitExit } from './helpers/sys.js'
import { mulberry32 } from '../tools/lib/random.js'

const MiB = 1024 * 1024
const IMAGE_SIZE = 64 * MiB
const KILLS = 12
const SEED = 0x5eed_0f_c0

type Phase = 'start' | 'check' | 'download' | 'finish'

/** A small seeded generator, so that a failing run can be repeated. */
const random = mulberry32

let work: string
let image: string
let stale: string
let torrentFile: string
let torrent: ExtentTorrent

beforeAll(async () => {
  ;({ work, image, stale } = await makeGoldenWork('bsw-crash-', 53, IMAGE_SIZE))
  torrentFile = join(work, 'golden.torrent')
  // zero-scan: the finish has real work (zeroing every gap over the stale data), so kills can land in it
  const made = await cli(['create', image, '-o', torrentFile, '--mode', 'zero', '--piece-size', '256K'])
  expect(made.code, made.stderr).toBe(0)
  torrent = parseTorrent(await readFile(torrentFile))
  expect(torrent.meta.gaps).toBe('zero')
})

afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
})

/** Put the stale pattern back on the device (through it, so its page cache agrees). */
async function resetTarget(dev: string): Promise<void> {
  const data = await readFile(stale)
  const fh = await open(dev, 'r+')
  try {
    await fh.write(data, 0, data.length, 0)
    await fh.datasync()
  } finally {
    await fh.close()
  }
}

/** Bytes of the first `n` pieces at least (the last piece may be short). */
function piecesBytes(n: number): number {
  if (n === 0) return 0
  return (n - 1) * torrent.pieceLength + pieceSize(torrent.layout, torrent.pieceCount - 1)
}

describe('kill -9 at random moments', () => {
  it(`${KILLS} deploys killed in every phase; each re-run finishes exact, e2fsck clean, downloading only what was not verified`, async () => {
    const rnd = random(SEED)
    const { port: seedPort } = await startSeed(torrentFile, image, ['--upload-rate', '12M'])
    const backing = join(work, 'target.img')
    await copyFile(stale, backing)
    const dev = await loopAttach(backing)
    const base = ['--peer', `127.0.0.1:${seedPort}`, '--bind', '127.0.0.1']
    const n = torrent.pieceCount

    // every phase at least twice, in a seeded order
    const phases: Phase[] = ['start', 'start', 'check', 'check', 'check', 'download', 'download', 'download', 'download', 'finish', 'finish', 'finish']
    for (let i = phases.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1))
      ;[phases[i], phases[j]] = [phases[j], phases[i]]
    }
    expect(phases.length).toBe(KILLS)

    const log: string[] = []
    let killed = 0
    for (const [round, phase] of phases.entries()) {
      const fresh = (phase === 'start' || phase === 'download') && rnd() < 0.7
      if (fresh) await resetTarget(dev)
      const d = startDeploy([torrentFile, dev, ...base, '--port', '0', '--seed-idle', '2'])
      const alive = () => d.child.exitCode === null && d.child.signalCode === null
      const until = (what: string, pred: () => boolean) => waitFor(what, () => pred() || !alive(), 30_000, d.text)
      switch (phase) {
        case 'start':
          await new Promise((r) => setTimeout(r, rnd() * 600))
          break
        case 'check':
          await until('the resume check', () => d.state() !== '')
          await new Promise((r) => setTimeout(r, rnd() * 40))
          break
        case 'download': {
          const at = Math.ceil((0.15 + 0.7 * rnd()) * n)
          await until(`${at} pieces`, () => d.pieces() >= at)
          break
        }
        case 'finish': {
          const at = n - Math.floor(rnd() * 3)
          await until(`${at} pieces`, () => d.pieces() >= at)
          break
        }
      }
      const seen = d.pieces()
      const state = d.state() || 'starting'
      const wasAlive = alive()
      if (wasAlive) {
        d.child.kill('SIGKILL')
        expect(await waitExit(d.child, 10_000)).toBe(null)
        killed++
      } else {
        // finished before the kill came: fine, if it finished well
        expect(d.child.exitCode, `round ${round} (${phase}) ended by itself:\n${d.text()}`).toBe(0)
      }

      const r = await cli(['deploy', torrentFile, dev, ...base, '--port', '0', '--seed-idle', '0', '--json', '--log-level', 'debug'], { timeoutMs: 60_000 })
      expect(r.code, `round ${round} (${phase}): re-run after a kill at ${seen}/${n} pieces (${state}):\n${r.stdout}\n${r.stderr}`).toBe(0)
      const j = deployJson(r.stdout)
      expect(j.ok).toBe(true)
      // every piece the killed run reported verified was on the disk: re-used, not fetched again
      expect(j.reused).toBeGreaterThanOrEqual(piecesBytes(seen))
      // what was fetched is what was not re-used, and nothing twice (one seeder: no endgame duplicates)
      expect(j.downloaded, r.stderr).toBe(j.total - j.reused)
      expect(await firstDifference(dev, image, IMAGE_SIZE)).toBe(-1)
      const fsck = await run('e2fsck', ['-fn', dev])
      expect(fsck.code, `e2fsck -fn ${dev}:\n${fsck.stdout}${fsck.stderr}`).toBe(0)
      log.push(
        `${round}: ${phase.padEnd(8)} ${fresh ? 'stale ' : 'kept  '} ${wasAlive ? 'killed' : 'exited'} at ${String(seen).padStart(3)}/${n} (${state.padEnd(11)}) → re-used ${j.reused}, downloaded ${j.downloaded}`,
      )
    }
    console.log(`seed ${SEED.toString(16)}, ${n} pieces of ${torrent.pieceLength} bytes, ${torrent.totalLength} bytes in all:\n${log.join('\n')}`)
    expect(killed).toBeGreaterThanOrEqual(10)
  })
})
