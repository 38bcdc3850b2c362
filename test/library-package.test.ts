/**
 * The core as a library, the way another project gets it: `npm pack` this
 * checkout, install the tarball in a fresh TypeScript project, compile
 * examples/library/deploy-in-process.ts there against the installed package's
 * own .d.ts (import ... from 'blockswarm'), and run it: a torrent made,
 * (--ignore-scripts: bittorrent-tracker's optional WebRTC addon would build
 * from source, and nothing here needs it)
 * seeded and deployed in one process, the bytes checked.
 */
import { copyFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { cleanupAll, pseudoRandom, ROOT, run, tempDir } from './helpers/sys.js'

afterAll(cleanupAll)

const MiB = 1024 * 1024

describe('blockswarm as a library (packed tarball)', () => {
  it('npm pack → install in a new project → the example compiles against the package types and deploys', async () => {
    const dir = await tempDir('bsw-lib-')
    const pack = await run('npm', ['pack', '--pack-destination', dir, '--silent'], { timeoutMs: 300_000 })
    expect(pack.code, pack.stderr).toBe(0)
    const tarball = (await readdir(dir)).find((f) => f.endsWith('.tgz'))
    expect(tarball, pack.stdout).toBeDefined()

    const app = join(dir, 'app')
    await run('mkdir', ['-p', app])
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'lib-user', private: true, type: 'module' }))
    const install = await run('npm', ['install', '--prefix', app, '--no-audit', '--no-fund', '--prefer-offline', '--ignore-scripts', join(dir, tarball!)], { timeoutMs: 300_000 })
    expect(install.code, install.stderr).toBe(0)

    await copyFile(join(ROOT, 'examples/library/deploy-in-process.ts'), join(app, 'deploy-in-process.ts'))
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, typeRoots: [join(ROOT, 'node_modules/@types')], types: ['node'], skipLibCheck: true },
        files: ['deploy-in-process.ts'],
      }),
    )
    const tsc = await run(join(ROOT, 'node_modules/.bin/tsc'), ['-p', join(app, 'tsconfig.json')])
    expect(tsc.code, tsc.stdout + tsc.stderr).toBe(0)

    const bytes = pseudoRandom(4 * MiB, 21)
    bytes.fill(0, MiB, 2 * MiB) // a gap: several extents
    const image = join(dir, 'golden.img')
    const target = join(dir, 'target.img')
    await writeFile(image, bytes)
    await writeFile(target, pseudoRandom(4 * MiB, 22))
    const r = await run(process.execPath, [join(app, 'deploy-in-process.js'), image, target], { timeoutMs: 120_000 })
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, bytes: 3 * MiB })
  })
})
