/**
 * A source that may change while it is read is refused: an ext4 image on a
 * loop device, mounted read-write. `create` (every mode) and `seed` refuse it
 * naming the mount and the fixes (unmount, remount read-only, fsfreeze);
 * `--force` goes on (seed with a loud warning); once remounted read-only it
 * is accepted. The mount and the loop device are undone also on failure.
 */
import { access, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeExtImage } from './helpers/images-ext.js'
import { captureOutput, cleanupAll, CLI, cli, freePort, loopAttach, onCleanup, run, sh, startProcess, tempDir, waitFor } from './helpers/sys.js'

const MiB = 1024 * 1024

let work: string
let dev: string
let mnt: string
let torrentFile: string

const exists = (p: string) => access(p).then(() => true, () => false)

/** The refusal's message: which mount, and all three fixes. */
function expectRefusal(stderr: string): void {
  expect(stderr).toContain(`${dev} is mounted read-write on ${mnt}`)
  expect(stderr).toContain('unmount it')
  expect(stderr).toContain(`remount it read-only (mount -o remount,ro ${mnt})`)
  expect(stderr).toContain(`freeze it with fsfreeze -f ${mnt}`)
  expect(stderr).toContain('--force')
}

afterAll(cleanupAll)

beforeAll(async () => {
  work = await tempDir('bsw-mounted-')
  const image = join(work, 'src.img')
  await makeExtImage(image, 32 * MiB, 'mkfs.ext4', [])
  // the torrent is made from the image before it is mounted
  torrentFile = join(work, 'src.torrent')
  const made = await cli(['create', image, '-o', torrentFile, '--piece-size', '1M'])
  expect(made.code, made.stderr).toBe(0)
  dev = await loopAttach(image)
  mnt = join(work, 'mnt')
  await mkdir(mnt)
  await sh('mount', ['-t', 'ext4', dev, mnt])
  onCleanup(async () => {
    await run('umount', [mnt])
  })
})

describe('a read-write-mounted source', () => {
  it('create --mode zero and create (auto) refuse it with the fixes and write nothing; --force goes on', async () => {
    for (const mode of [['--mode', 'zero'], []]) {
      const out = join(work, `refused${mode.join('')}.torrent`)
      const r = await cli(['create', dev, '-o', out, ...mode])
      expect(r.code, `create ${mode.join(' ')}: ${r.stdout}${r.stderr}`).not.toBe(0)
      expectRefusal(r.stderr)
      expect(await exists(out)).toBe(false)
    }
    const forced = join(work, 'forced.torrent')
    const r = await cli(['create', dev, '-o', forced, '--mode', 'zero', '--force'])
    expect(r.code, `${r.stdout}${r.stderr}`).toBe(0)
    expect(r.stderr).toContain(`--force: ${dev} is in use: ${dev} is mounted read-write on ${mnt}`)
    expect(await exists(forced)).toBe(true)
  })

  it('seed refuses it with the fixes; seed --force seeds it with a loud warning', async () => {
    const refused = await cli(['seed', torrentFile, dev, '--port', String(await freePort())], { timeoutMs: 60_000 })
    expect(refused.code, `${refused.stdout}${refused.stderr}`).not.toBe(0)
    expectRefusal(refused.stderr)

    const seeder = startProcess(process.execPath, [CLI, 'seed', torrentFile, dev, '--force', '--port', String(await freePort()), '--log-level', 'warn'])
    const out = captureOutput(seeder)
    await waitFor('the forced seeder to start', () => out.text().includes('opentracker whitelist line') || seeder.exitCode !== null, 30_000, out.text)
    expect(seeder.exitCode, out.text()).toBeNull()
    const warning = out.text().split('\n').find((l) => l.includes('WARNING'))
    expect(warning, out.text()).toBeDefined()
    expect(warning).toContain(`${dev} is mounted read-write on ${mnt}`)
    expect(warning).toContain('may serve changing data')
    expect(warning).toContain('peers will ban it for bad pieces')
    seeder.kill('SIGKILL')
  })

  it('once remounted read-only, create --mode zero and create (auto) accept it', async () => {
    await sh('mount', ['-o', 'remount,ro', mnt])
    for (const mode of [['--mode', 'zero'], []]) {
      const out = join(work, `ro${mode.join('')}.torrent`)
      const r = await cli(['create', dev, '-o', out, ...mode])
      expect(r.code, `create ${mode.join(' ')}: ${r.stdout}${r.stderr}`).toBe(0)
      expect(r.stderr).not.toContain('mounted read-write')
      expect(await exists(out)).toBe(true)
    }
  })
})
