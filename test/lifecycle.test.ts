/**
 * A node's life cycle after the deploy, with real processes on 127.0.0.1:
 * the done policy's acceptance test (one seeder, three deploys onto loop
 * devices; every deploy exits 0 by itself, none before all three have
 * finished), the then-command with its environment and exit code, the same
 * policy given by CLI flags and by gRPC SetDonePolicy to a daemon with
 * --exit-when-done, and kexec up to (not including) the real thing: the
 * deployed kernel and initrd read out with debugfs, the kexec arguments, a
 * stand-in kexec on PATH; reboot and kexec (stand-ins too) after the reader
 * of the deploy's stdout has gone. The real reboot and kexec are never run;
 * their refusal without --allow-dangerous is.
 */
import { existsSync } from 'node:fs'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { connectControl } from '../src/control/client.js'
import type { TorrentInfo } from '../src/control/blockswarm-wire.js'
import { extractBootFiles, filesystemUuid } from '../src/cli/boot-files.js'
import { defaultKexecAppend, kexecLoadArgs, runThenAction, thenActionFrom, thenEnv } from '../src/cli/then-action.js'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { startDaemonProcess, startSession } from './helpers/grpc-fixtures.js'
import { makeExtImage, makeStaleTarget } from './helpers/images-ext.js'
import { captureOutput, cleanupAll, CLI, cli, freePort, loopAttach, onCleanup, pseudoRandom, run, sh, startProcess, waitExit, waitFor } from './helpers/sys.js'

const KiB = 1024
const MiB = 1024 * KiB
const IMAGE_SIZE = 32 * MiB
const KERNEL = pseudoRandom(300 * KiB + 5, 61)
const INITRD = pseudoRandom(200 * KiB + 9, 62)
const OTHER_KERNEL = pseudoRandom(100 * KiB, 63)
/** A file name long enough that a symlink to it keeps its target in a data block (a "slow" symlink). */
const LONG_NAME = `vmlinuz-${'x'.repeat(80)}`

/** The `--json` report of a deploy. */
interface DeployJson {
  ok: boolean
  finishedAt: number | null
  uploaded: number
  doneReason: string | null
  then: { action: string; ok: boolean | null; message: string; exitCode?: number | null } | null
}

function parseJson(stdout: string, stderr: string): DeployJson {
  try {
    return JSON.parse(stdout) as DeployJson
  } catch {
    throw new Error(`no JSON report:\n${stdout}\n${stderr}`)
  }
}

/** `KEY=value` lines → object. */
function envLines(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  )
}

/** The JSON log lines of a process's output. */
function logLines(text: string): { msg: string; reason?: string }[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string; reason?: string })
}

let work: string
let image: string
let stale: string
let torrentFile: string
let torrent: ExtentTorrent

beforeAll(async () => {
  // shared by the tests (cleanupAll after each test would remove a tempDir): removed in afterAll
  work = await mkdtemp(join(tmpdir(), 'bsw-lifecycle-'))
  const root = join(work, 'root')
  await mkdir(join(root, 'boot'), { recursive: true })
  await mkdir(join(root, 'data'), { recursive: true })
  await writeFile(join(root, 'boot/vmlinuz-6.1.0-9-amd64'), KERNEL)
  await writeFile(join(root, 'boot/initrd.img-6.1.0-9-amd64'), INITRD)
  await writeFile(join(root, `boot/${LONG_NAME}`), OTHER_KERNEL)
  // Debian's links: relative at the root, and (Ubuntu) in /boot; one absolute; one slow
  await symlink('boot/vmlinuz-6.1.0-9-amd64', join(root, 'vmlinuz'))
  await symlink('vmlinuz-6.1.0-9-amd64', join(root, 'boot/vmlinuz'))
  await symlink('/boot/initrd.img-6.1.0-9-amd64', join(root, 'boot/initrd.img'))
  await symlink(`/boot/${LONG_NAME}`, join(root, 'boot/vmlinuz.old'))
  await writeFile(join(root, 'data/a.bin'), pseudoRandom(6 * MiB + 11, 64))
  await writeFile(join(root, 'data/b.bin'), pseudoRandom(5 * MiB, 65))
  image = join(work, 'golden.img')
  await makeExtImage(image, IMAGE_SIZE, 'mkfs.ext4', [], root)
  stale = join(work, 'stale.img')
  await makeStaleTarget(stale, IMAGE_SIZE)
  torrentFile = join(work, 'golden.torrent')
  const made = await cli(['create', image, '-o', torrentFile, '--piece-size', '256K'])
  expect(made.code, made.stderr).toBe(0)
  torrent = parseTorrent(await readFile(torrentFile))
  expect(torrent.trackers).toEqual([])
})

afterEach(cleanupAll)
afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
})

/** The bytes of `path` inside the torrent's extents, concatenated. */
async function extentBytes(path: string): Promise<Buffer> {
  const data = await readFile(path)
  return Buffer.concat(torrent.extents.map((e) => data.subarray(e.offset, e.offset + e.length)))
}

describe('then-action choice', () => {
  it('refuses reboot and kexec without --allow-dangerous, and contradictory flags, saying what to do', () => {
    expect(() => thenActionFrom({ then: 'reboot' })).toThrow('--then reboot reboots this machine once the deploy is done: add --allow-dangerous to allow it')
    expect(() => thenActionFrom({ then: 'kexec' })).toThrow(/--then kexec replaces the running system .*: add --allow-dangerous/)
    expect(() => thenActionFrom({ then: 'exit', thenCommand: 'true' })).toThrow('give either --then exit or --then-command, not both')
    expect(() => thenActionFrom({ kexecKernel: '/boot/vmlinuz' })).toThrow('--kexec-kernel, --kexec-initrd and --kexec-append go with --then kexec')
    expect(() => thenActionFrom({ then: 'shutdown' })).toThrow('--then "shutdown" is not one of exit, reboot, kexec')
    expect(() => thenActionFrom({ thenCommand: '  ' })).toThrow('--then-command is empty')
    expect(thenActionFrom({})).toEqual({ kind: 'exit' })
    expect(thenActionFrom({ then: 'reboot', allowDangerous: true })).toEqual({ kind: 'reboot' })
    expect(thenActionFrom({ then: 'kexec', allowDangerous: true, kexecAppend: 'root=/dev/sda1 quiet' })).toEqual({ kind: 'kexec', append: 'root=/dev/sda1 quiet' })
    expect(thenActionFrom({ thenCommand: 'echo hi' })).toEqual({ kind: 'command', command: 'echo hi' })
  })

  it('builds the kexec load arguments', () => {
    expect(kexecLoadArgs('/tmp/k', '/tmp/i', 'root=UUID=1234 ro')).toEqual(['-l', '/tmp/k', '--initrd=/tmp/i', '--append=root=UUID=1234 ro'])
    expect(kexecLoadArgs('/tmp/k', undefined, 'console=ttyS0 root=/dev/vda')).toEqual(['-l', '/tmp/k', '--append=console=ttyS0 root=/dev/vda'])
    expect(defaultKexecAppend('727b1ca6-82cf-4526-8264-4c2a2c435385')).toBe('root=UUID=727b1ca6-82cf-4526-8264-4c2a2c435385 ro')
  })

  it('the CLI refuses dangerous actions without --allow-dangerous before touching the target, and a daemon then-action without --exit-when-done', async () => {
    const target = join(work, 'untouched.img')
    await copyFile(stale, target)
    for (const then of ['reboot', 'kexec']) {
      const r = await cli(['deploy', torrentFile, target, '--port', '0', '--then', then])
      expect(r.code).toBe(1)
      expect(r.stderr).toContain(`--then ${then}`)
      expect(r.stderr).toContain('add --allow-dangerous to allow it')
    }
    expect((await readFile(target)).equals(await readFile(stale))).toBe(true)
    // allowed, but the tools are missing
    const noTools = await cli(['deploy', torrentFile, target, '--port', '0', '--then', 'kexec', '--allow-dangerous'], { env: { ...process.env, PATH: '/nonexistent' } })
    expect(noTools.code).toBe(1)
    expect(noTools.stderr).toContain('--then kexec needs kexec, which is not on PATH: install kexec-tools')
    const daemon = await cli(['daemon', '--port', '0', '--then-command', 'true'])
    expect(daemon.code).toBe(1)
    expect(daemon.stderr).toContain('--then-command runs when the daemon exits by itself: add --exit-when-done')
  })
})

describe('kexec files', () => {
  it('reads the kernel and initrd out of an ext4 filesystem with debugfs, following fast, slow, relative and absolute symlinks', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bsw-boot-'))
    onCleanup(() => rm(dir, { recursive: true, force: true }))
    const uuid = (await sh('blkid', ['-p', '-o', 'value', '-s', 'UUID', image])).trim()
    expect(await filesystemUuid(image)).toBe(uuid)

    const files = await extractBootFiles(image, dir)
    expect(files).toMatchObject({ kernelPath: '/boot/vmlinuz-6.1.0-9-amd64', initrdPath: '/boot/initrd.img-6.1.0-9-amd64', uuid })
    expect((await readFile(files.kernel)).equals(KERNEL)).toBe(true)
    expect((await readFile(files.initrd!)).equals(INITRD)).toBe(true)

    const old = await extractBootFiles(image, join(dir), { kernel: '/boot/vmlinuz.old', initrd: '/boot/initrd.img' })
    expect(old.kernelPath).toBe(`/boot/${LONG_NAME}`)
    expect((await readFile(old.kernel)).equals(OTHER_KERNEL)).toBe(true)

    await expect(extractBootFiles(image, dir, { kernel: '/boot/vmlinuz-7' })).rejects.toThrow(`no kernel in the filesystem on ${image}: looked for /boot/vmlinuz-7 (give --kexec-kernel PATH)`)
    await expect(extractBootFiles(image, dir, { initrd: '/boot/initrd-7' })).rejects.toThrow(`no initrd /boot/initrd-7 in the filesystem on ${image}`)
    await expect(extractBootFiles(stale, dir)).rejects.toThrow(`${stale} holds no ext2/3/4 filesystem that debugfs can read`)
  })

  it('deploy --then kexec --allow-dangerous loads the deployed kernel and initrd (a stand-in kexec on PATH records the calls)', async () => {
    const fake = await mkdtemp(join(tmpdir(), 'bsw-fake-kexec-'))
    onCleanup(() => rm(fake, { recursive: true, force: true }))
    const log = join(fake, 'calls')
    await writeFile(
      join(fake, 'kexec'),
      [
        '#!/bin/sh',
        `printf '%s\\n' "$*" >> ${log}`,
        'if [ "$1" = -l ]; then',
        `  cp "$2" ${fake}/kernel.copy`,
        `  for a; do case "$a" in --initrd=*) cp "\${a#--initrd=}" ${fake}/initrd.copy ;; esac; done`,
        'fi',
        '',
      ].join('\n'),
      { mode: 0o755 },
    )
    const env = { ...process.env, PATH: `${fake}:${process.env.PATH}` }
    // never the real thing: the stand-in must be the kexec this PATH finds
    expect((await run('/bin/sh', ['-c', 'command -v kexec'], { env })).stdout.trim()).toBe(join(fake, 'kexec'))

    const seeder = await startSession()
    await seeder.add(torrent, { target: image, seedingMode: true })
    const target = join(fake, 'target.img')
    const r = await cli(['deploy', torrentFile, target, '--create-image', '--port', '0', '--peer', `127.0.0.1:${seeder.port}`, '--seed-idle', '0', '--then', 'kexec', '--allow-dangerous', '--json'], {
      env,
      timeoutMs: 60_000,
    })
    // the stand-in's `kexec -e` returns, which a real one never does: reported as a failed then-action
    expect(r.code, r.stderr).toBe(3)
    const j = parseJson(r.stdout, r.stderr)
    expect(j.ok).toBe(true)
    expect(j.then).toEqual({ action: 'kexec', ok: null, message: 'runs after this report' })
    expect(r.stderr).toContain('--then kexec failed: kexec -e returned (it exited 0): the loaded kernel did not start')
    const calls = (await readFile(log, 'utf8')).trim().split('\n')
    const uuid = await filesystemUuid(image)
    expect(calls).toHaveLength(2)
    expect(calls[0]).toMatch(new RegExp(`^-l (/\\S+)/kernel --initrd=\\1/initrd --append=root=UUID=${uuid} ro$`))
    expect(calls[1]).toBe('-e')
    expect((await readFile(join(fake, 'kernel.copy'))).equals(KERNEL)).toBe(true)
    expect((await readFile(join(fake, 'initrd.copy'))).equals(INITRD)).toBe(true)
    // the copies were removed
    const tempDirOfCopies = calls[0].split(' ')[1].replace(/\/kernel$/, '')
    await expect(readdir(tempDirOfCopies)).rejects.toThrow(/ENOENT/)
  })

  it('deploy --then reboot|kexec still does it when the reader of its report has gone (a closed pipe must not end the deploy with 0 and nothing done)', async () => {
    const fake = await mkdtemp(join(tmpdir(), 'bsw-fake-then-'))
    onCleanup(() => rm(fake, { recursive: true, force: true }))
    const calls = join(fake, 'calls')
    // stand-ins that record their calls; a real `kexec -e` never returns, this one does
    for (const tool of ['reboot', 'kexec']) {
      await writeFile(join(fake, tool), ['#!/bin/sh', `printf '${tool} %s\\n' "$*" >> ${calls}`, ''].join('\n'), { mode: 0o755 })
    }
    const env = { ...process.env, PATH: `${fake}:${process.env.PATH}` }
    for (const tool of ['reboot', 'kexec']) expect((await run('/bin/sh', ['-c', `command -v ${tool}`], { env })).stdout.trim()).toBe(join(fake, tool))

    const seeder = await startSession()
    await seeder.add(torrent, { target: image, seedingMode: true })
    const cases = [
      { then: 'reboot', flags: ['--json'], code: 0, calls: [/^reboot$/] },
      { then: 'kexec', flags: [], code: 3, calls: [/^kexec -l \S+\/kernel --initrd=\S+\/initrd --append=root=UUID=\S+ ro$/, /^kexec -e$/] },
    ]
    for (const c of cases) {
      await rm(calls, { force: true })
      const target = join(fake, `target-${c.then}.img`)
      const child = startProcess(
        process.execPath,
        [CLI, 'deploy', torrentFile, target, '--create-image', '--port', '0', '--peer', `127.0.0.1:${seeder.port}`, '--seed-idle', '0', '--then', c.then, '--allow-dangerous', ...c.flags],
        { env },
      )
      const err = captureOutput(child)
      // the orchestrator's pipe closes before the report: writing it fails with EPIPE
      child.stdout!.destroy()
      expect(await waitExit(child, 60_000), err.text()).toBe(c.code)
      const made = existsSync(calls) ? (await readFile(calls, 'utf8')).trim().split('\n') : []
      expect(made, `${c.then}: ${err.text()}`).toHaveLength(c.calls.length)
      c.calls.forEach((re, i) => expect(made[i]).toMatch(re))
      expect((await extentBytes(target)).equals(await extentBytes(image))).toBe(true)
    }
  })
})

describe('then-command', () => {
  it('gets the result and the torrent in its environment, also for a failed deploy', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bsw-then-'))
    onCleanup(() => rm(dir, { recursive: true, force: true }))
    const out = join(dir, 'env')
    const outcome = { target: '/dev/loop9', infoHash: 'ab'.repeat(20), name: 'sda1', size: 1234, ok: false, error: 'piece 3: write failed' }
    expect(thenEnv(outcome)).toEqual({
      BLOCKSWARM_TARGET: '/dev/loop9',
      BLOCKSWARM_INFOHASH: 'ab'.repeat(20),
      BLOCKSWARM_NAME: 'sda1',
      BLOCKSWARM_TORRENT_SIZE: '1234',
      BLOCKSWARM_RESULT: 'failed',
      BLOCKSWARM_ERROR: 'piece 3: write failed',
    })
    const r = await runThenAction({ kind: 'command', command: `env | grep ^BLOCKSWARM_ | sort > ${out}; exit 5` }, [outcome])
    expect(r).toMatchObject({ ok: false, message: '--then-command for /dev/loop9 exited 5', commands: [{ target: '/dev/loop9', exitCode: 5, signal: null }] })
    expect(envLines(await readFile(out, 'utf8'))).toEqual(thenEnv(outcome))
  })

  it('a failing --then-command after a good deploy: exit code 3, its exit code in the report', async () => {
    const seeder = await startSession()
    await seeder.add(torrent, { target: image, seedingMode: true })
    const target = join(work, 'then-fail.img')
    await copyFile(stale, target)
    const r = await cli(['deploy', torrentFile, target, '--port', '0', '--peer', `127.0.0.1:${seeder.port}`, '--seed-idle', '0', '--then-command', 'exit 7', '--json'], { timeoutMs: 60_000 })
    expect(r.code, r.stderr).toBe(3)
    const j = parseJson(r.stdout, r.stderr)
    expect(j.ok).toBe(true)
    expect(j.then).toEqual({ action: 'command "exit 7"', ok: false, message: `--then-command for ${target} exited 7`, exitCode: 7 })
    expect((await extentBytes(target)).equals(await extentBytes(image))).toBe(true)
  })
})

describe('done policy', () => {
  it('one seeder, three deploys onto loop devices, the third started after the others finished: each exits 0 by itself once all are seeds, none before all have finished; the then-command runs after', async () => {
    const seedPort = await freePort()
    // a slow seeder: the deploys must fetch from each other
    const seeder = startProcess(process.execPath, [CLI, 'seed', torrentFile, image, '--port', String(seedPort), '--upload-rate', '4M', '--log-level', 'warn'])
    const seederOut = captureOutput(seeder)
    await waitFor('the seeder', () => seederOut.text().includes('opentracker whitelist line') || seeder.exitCode !== null, 30_000, seederOut.text)

    // Loop devices over files in memory (tmpfs): a node's flush at its finish takes no time. A node tells its
    // peers it has every piece before it flushes; with a slow flush a peer could see it as a seed, and leave,
    // before its finishedAt (harmless: it needs nothing more), which the check below would count as too early.
    const shm = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bsw-lifecycle-'))
    onCleanup(() => rm(shm, { recursive: true, force: true }))
    const devices: string[] = []
    for (let i = 0; i < 3; i++) {
      const file = join(shm, `node${i}.img`)
      await copyFile(stale, file)
      devices.push(await loopAttach(file))
    }
    const ports = [await freePort(), await freePort(), await freePort()]
    const nodes: { child: ChildProcess; out: { text: () => string }; stdout: string; exitedAt?: number }[] = []
    const startNode = (i: number) => {
      const others = ports.filter((_, j) => j !== i).flatMap((p) => ['--peer', `127.0.0.1:${p}`])
      // the ratio and idle rules cannot be met within the test: only "every known peer is a seed" ends the seeding
      // (LIFECYCLE_LOG=debug shows each node's peers when this test needs a look)
      const child = startProcess(process.execPath, [
        CLI, 'deploy', torrentFile, devices[i], '--port', String(ports[i]), '--peer', `127.0.0.1:${seedPort}`, ...others,
        '--seed-ratio', '100', '--seed-idle', '600', '--json', '--log-level', process.env.LIFECYCLE_LOG ?? 'warn',
        '--then-command', `{ env | grep ^BLOCKSWARM_ | sort; echo RAN_AT=$(date +%s%3N); } > ${join(work, `then${i}.env`)}`,
      ])
      const node = { child, out: captureOutput(child), stdout: '', exitedAt: undefined as number | undefined }
      child.stdout!.on('data', (d) => (node.stdout += d))
      child.once('exit', () => (node.exitedAt = Date.now()))
      nodes.push(node)
    }
    // nodes 0 and 1 first; node 2 joins only once both have every piece: they must wait for it (and serve it)
    startNode(0)
    startNode(1)
    const seeding = (i: number) => / seeding 100\.0% /.test(nodes[i].out.text()) || nodes[i].child.exitCode !== null
    await waitFor('nodes 0 and 1 to finish', () => seeding(0) && seeding(1), 60_000, () => nodes.map((n) => n.out.text()).join('\n'))
    expect(nodes.map((n) => n.child.exitCode), nodes.map((n) => n.out.text()).join('\n')).toEqual([null, null])
    startNode(2)
    // all exit, or one fails (the others would then wait for it for ever, as they should)
    const outputs = () => nodes.map((n, i) => `--- node ${i}\n${n.out.text()}`).join('\n')
    await waitFor('every node to exit', () => nodes.every((n) => n.exitedAt) || nodes.some((n) => n.exitedAt && n.child.exitCode !== 0), 60_000, outputs)
    const reports = nodes.map((n, i) => {
      expect(n.child.exitCode, `node ${i} exited ${n.child.exitCode ?? n.child.signalCode}:\n${outputs()}`).toBe(0)
      return parseJson(n.stdout, n.out.text())
    })
    const lastFinish = Math.max(...reports.map((j) => j.finishedAt!))
    for (const [i, j] of reports.entries()) {
      expect(j.ok).toBe(true)
      expect(j.doneReason).toBe('every known peer (3) is a seed')
      // no node left while another was still downloading
      expect(nodes[i].exitedAt!, `node ${i} exited before node ${reports.findIndex((r) => r.finishedAt === lastFinish)} finished`).toBeGreaterThanOrEqual(lastFinish)
      const env = envLines(await readFile(join(work, `then${i}.env`), 'utf8'))
      expect(env).toMatchObject({
        BLOCKSWARM_TARGET: devices[i],
        BLOCKSWARM_INFOHASH: torrent.infoHash,
        BLOCKSWARM_NAME: torrent.name,
        BLOCKSWARM_TORRENT_SIZE: String(torrent.totalLength),
        BLOCKSWARM_RESULT: 'ok',
        BLOCKSWARM_ERROR: '',
      })
      expect(Number(env.RAN_AT)).toBeGreaterThanOrEqual(j.finishedAt!)
      expect(j.then).toEqual({ action: expect.stringMatching(/^command /), ok: true, message: '--then-command exited 0', exitCode: 0 })
      expect((await extentBytes(devices[i])).equals(await extentBytes(image)), `extents of ${devices[i]}`).toBe(true)
    }
    expect(reports[2].finishedAt!).toBe(lastFinish)
    // the late node was served by the early ones (the seeder is slow), which were not gone yet
    expect(reports[0].uploaded + reports[1].uploaded).toBeGreaterThan(0)
    const fsck = await run('e2fsck', ['-fn', devices[0]])
    expect(fsck.code, fsck.stdout).toBe(0)
    console.log(
      `done policy: finished at +${reports.map((j) => j.finishedAt! - Math.min(...reports.map((r) => r.finishedAt!))).join(', ')} ms, ` +
        `exited ${nodes.map((n) => n.exitedAt! - lastFinish).join(', ')} ms after the last finish; uploaded ${reports.map((j) => j.uploaded).join(', ')} bytes`,
    )
    seeder.kill('SIGTERM')
    expect(await waitExit(seeder, 15_000)).toBe(0)
  })

  it('a daemon with --exit-when-done: the policy from CLI flags or from gRPC SetDonePolicy ends it the same way, then the then-command runs', async () => {
    const seeder = await startSession()
    await seeder.add(torrent, { target: image, seedingMode: true })
    const thenCommand = (i: number) => `{ env | grep ^BLOCKSWARM_ | sort; } > ${join(work, `daemon${i}.env`)}`
    const targets = [0, 1].map((i) => join(work, `daemon-target${i}.img`))
    for (const t of targets) await copyFile(stale, t)
    const common = (i: number) => ['--port', '0', '--peer', `127.0.0.1:${seeder.port}`, '--exit-when-done', '--add', `${torrentFile}=${targets[i]}`, '--then-command', thenCommand(i)]

    // the policy as flags
    const byFlags = startProcess(process.execPath, [CLI, 'daemon', '--listen', `127.0.0.1:${await freePort()}`, '--seed-ratio', '5', ...common(0)])
    const flagsOut = captureOutput(byFlags)
    expect(await waitExit(byFlags, 60_000), flagsOut.text()).toBe(0)

    // no policy: it finishes and keeps seeding until SetDonePolicy gives the same one
    const address = `127.0.0.1:${await freePort()}`
    const metrics = `127.0.0.1:${await freePort()}`
    const byGrpc = await startDaemonProcess(['--listen', address, '--metrics', metrics, ...common(1)], address)
    const c = connectControl(address)
    onCleanup(async () => c.close())
    await waitFor('the daemon to finish the download', async () => (await c.blockswarm.ListTorrents({})).torrents[0]?.state === 'TORRENT_STATE_SEEDING', 60_000, byGrpc.output)
    const scraped = await (await fetch(`http://${metrics}/metrics`)).text()
    expect(scraped).toContain(`blockswarm_torrent_state{infohash="${torrent.infoHash}",name="${torrent.name}",state="seeding"} 1`)
    expect(byGrpc.child.exitCode).toBe(null)
    expect(await c.blockswarm.GetDaemonInfo({})).toMatchObject({ exitWhenDone: true, thenAction: 'command', donePolicy: { seedRatio: 0, seedIdleSeconds: 0 } })
    expect((await c.blockswarm.ListTorrents({})).torrents[0].done).toBe(false)
    // a watcher (at most one update per 2 s) sees the torrent done before the stream ends, though the daemon exits at once
    const watch = c.blockswarm.WatchTorrents({ intervalMs: 2000 })[Symbol.asyncIterator]()
    expect((await watch.next()).value.torrents[0]).toMatchObject({ state: 'TORRENT_STATE_SEEDING', done: false })
    await c.blockswarm.SetDonePolicy({ infoHash: '', policy: { seedRatio: 5, seedIdleSeconds: 0 } })
    const watched: TorrentInfo[] = []
    for (;;) {
      const r = await watch.next().catch(() => ({ done: true as const, value: undefined }))
      if (r.done) break
      watched.push(...r.value.torrents)
    }
    expect(watched.at(-1), byGrpc.output()).toMatchObject({ state: 'TORRENT_STATE_FINISHED', done: true, complete: true })
    expect(await waitExit(byGrpc.child, 30_000), byGrpc.output()).toBe(0)

    const reasons = [flagsOut.text(), byGrpc.output()].map((text) => logLines(text).find((l) => l.msg === 'done seeding')?.reason)
    expect(reasons).toEqual(['every known peer (1) is a seed', 'every known peer (1) is a seed'])
    for (const [i, text] of [flagsOut.text(), byGrpc.output()].entries()) {
      expect(logLines(text).map((l) => l.msg)).toEqual(
        expect.arrayContaining(['torrent added', 'all pieces verified and flushed; seeding', 'done seeding', 'every torrent is done; exiting', 'then-command finished', 'daemon stopped']),
      )
      expect(envLines(await readFile(join(work, `daemon${i}.env`), 'utf8'))).toMatchObject({ BLOCKSWARM_TARGET: targets[i], BLOCKSWARM_RESULT: 'ok', BLOCKSWARM_NAME: torrent.name })
      expect((await extentBytes(targets[i])).equals(await extentBytes(image))).toBe(true)
    }
  })
})
