/**
 * The command line at its edges, as a new user meets it: output piped into
 * `head -1`, arguments swapped, a checkout that was never built.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { captureOutput, CLI, cleanupAll, loopAttach, pseudoRandom, ROOT, run, startProcess, tempDir, waitExit, waitFor } from './helpers/sys.js'
import { makeImage, makeTarget } from './helpers/grpc-fixtures.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024
/** Prints the process's peak RSS (KiB) on stderr as it exits, however it exits. */
const PEAK_RSS = `data:text/javascript,process.on('exit',()=>process.stderr.write('peak-rss-kib '+process.resourceUsage().maxRSS+'\\n'))`

describe('the command line at its edges', () => {
  it('inspect … | head -1 and create … | head -1 end quietly: exit 0, no stack trace', async () => {
    const dir = await tempDir('bsw-pipe-')
    // many extents, so that inspect's output overflows the pipe
    const bytes = pseudoRandom(8 * MiB, 5)
    for (let at = 0; at < bytes.length; at += 128 * 1024) bytes.fill(0, at, at + 64 * 1024)
    const image = join(dir, 'many.img')
    await writeFile(image, bytes)
    const torrent = join(dir, 'many.torrent')
    for (const cmd of [
      `node ${CLI} create ${image} -o ${torrent} --mode zero --piece-size 16K --json | head -1`,
      `node ${CLI} inspect ${torrent} --json | head -1`,
      `node ${CLI} inspect ${torrent} | head -1`,
    ]) {
      const r = await run('bash', ['-c', `set -o pipefail; ${cmd}`])
      expect(r.stderr, cmd).not.toMatch(/EPIPE|Error|at /)
      expect(r.code, `${cmd}: ${r.stderr}`).toBe(0)
      expect(r.stdout.split('\n').filter(Boolean)).toHaveLength(1)
    }
  })

  it('a deploy stopped by SIGTERM after its stdout reader went away exits 143, not 0 (nothing reports success that is not on the disk)', async () => {
    const dir = await tempDir('bsw-pipe-deploy-')
    const image = await makeImage(dir, 'gone', 4 * MiB)
    const target = await makeTarget(dir, 'target.img', image.size)
    // a peer that refuses: the deploy waits, downloading nothing
    const child = startProcess(process.execPath, [CLI, 'deploy', image.torrentFile, target, '--peer', '127.0.0.1:1', '--port', '0', '--bind', '127.0.0.1', '--json', '--seed-idle', '0'])
    const err = captureOutput(child)
    // the reader of its report goes away (an orchestrator's pipe, a timeout that closed it)
    child.stdout!.destroy()
    await waitFor('the deploy to start downloading', () => /downloading/.test(err.text()) || child.exitCode !== null, 30_000, err.text)
    child.kill('SIGTERM')
    expect(await waitExit(child, 30_000), err.text()).toBe(143)
  })

  it('deploy with its arguments swapped (a 200 MiB disk as the torrent) names the mistake without reading the disk into memory', async () => {
    const dir = await tempDir('bsw-swap-')
    const image = await makeImage(dir, 'sda1', MiB)
    const disk = join(dir, 'disk.img')
    await writeFile(disk, Buffer.alloc(0))
    await run('truncate', ['-s', '200M', disk])
    await writeFile(disk, pseudoRandom(MiB, 3), { flag: 'r+' })
    const loop = await loopAttach(disk)
    for (const bogus of [loop, disk]) {
      const r = await run(process.execPath, ['--import', PEAK_RSS, CLI, 'deploy', bogus, image.torrentFile])
      expect(r.code).toBe(1)
      expect(r.stderr).toContain(`${bogus} looks like a disk image, not a torrent`)
      expect(r.stderr).toContain('arguments swapped? the usage is: blockswarm deploy TORRENT TARGET')
      const peak = Number(/peak-rss-kib (\d+)/.exec(r.stderr)?.[1])
      expect(peak, r.stderr).toBeGreaterThan(0)
      expect(peak * 1024).toBeLessThan(100 * MiB)
    }
  })

  it('the bundled command line imports only Node builtins and the package dependencies (where it is installed, nothing else is)', async () => {
    const { readdir, readFile } = await import('node:fs/promises')
    const { builtinModules } = await import('node:module')
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; files: string[] }
    expect(pkg.files).toContain('dist/bundle/')
    const dir = join(ROOT, 'dist/bundle')
    const files = (await readdir(dir)).filter((f) => f.endsWith('.js'))
    expect(files).toContain('main.js')
    const bare = new Set<string>()
    for (const f of files) {
      const code = await readFile(join(dir, f), 'utf8')
      // import … from "x", export … from "x", import "x" (each on a line of its own in rolldown's output), import("x")
      const specifiers = [...code.matchAll(/^(?:import|export)\b[^\n]*?["']([^"'\n]+)["'];?$/gm), ...code.matchAll(/\bimport\(\s*["']([^"'\n]+)["']\s*\)/g)]
      for (const m of specifiers) if (!m[1].startsWith('.')) bare.add(m[1])
    }
    expect([...bare]).toContain('commander')
    const packageOf = (id: string) => id.split('/').slice(0, id.startsWith('@') ? 2 : 1).join('/')
    const foreign = [...bare].filter((id) => !id.startsWith('node:') && !builtinModules.includes(id) && !(packageOf(id) in pkg.dependencies))
    expect(foreign).toEqual([])
  })

  it('a checkout that was never built says to build it (npm ci and npm install do, through prepare)', async () => {
    const dir = await tempDir('bsw-nobuild-')
    await mkdir(join(dir, 'bin'))
    await copyFile(join(ROOT, 'bin/blockswarm.js'), join(dir, 'bin/blockswarm.js'))
    const r = await run(process.execPath, [join(dir, 'bin/blockswarm.js'), '--help'])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('not built yet (dist/ is missing): run `npm run build`')
    const pkg = JSON.parse(await (await import('node:fs/promises')).readFile(join(ROOT, 'package.json'), 'utf8'))
    expect(pkg.scripts.prepare).toBe('npm run build')
  })
})
