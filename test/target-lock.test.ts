/**
 * One writer per target, with real processes, image files and loop devices:
 * two `blockswarm deploy`s (or daemons, or a deploy and a daemon) onto one
 * target → the second is refused at once, naming the holder's pid and
 * info-hash, also with --force, and the target comes out exactly the
 * winner's; seeders share a source but a writer is refused there; a disk's
 * writer and its partitions' writers exclude each other while two partitions
 * are written at once; a lock another program holds is named from /proc;
 * the lock goes with its holder, kill -9 included.
 *
 * A holder is a deploy (or daemon torrent) whose only peer is not up yet: it
 * holds its target and waits. Its seeder is started once the refusals were
 * checked, so nothing here depends on timing.
 */
import { copyFile, link, mkdtemp, readdir, readFile, rm, stat, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClientError, Status } from 'nice-grpc'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { connectControl } from '../src/control/client.js'
import { openStore } from '../src/storage/store.js'
import { TargetRefused } from '../src/storage/types.js'
import { parseTorrent, type ExtentTorrent } from '../src/torrent/metainfo.js'
import { badPieces } from '../tools/demo/verify.js'
import { type DeployProc, startDeploy, startSeed } from './helpers/deploy-run.js'
import { startDaemonProcess } from './helpers/grpc-fixtures.js'
import { makeExtImage, makeStaleTarget, writeTree } from './helpers/images-ext.js'
import { cleanupAll, cli, freePort, loopAttach, onCleanup, pseudoRandom, run, sh, startProcess, waitExit, waitFor } from './helpers/sys.js'

const MiB = 1024 * 1024
const IMAGE_SIZE = 16 * MiB
const RECORDS = '/run/blockswarm/locks'

interface Golden {
  image: string
  torrentFile: string
  torrent: ExtentTorrent
}

let work: string
let a: Golden
let b: Golden

/** An ext4 image of IMAGE_SIZE with a few files of its own, and its torrent (256 KiB pieces, no tracker). */
async function golden(name: string, seed: number): Promise<Golden> {
  const content = join(work, `${name}-content`)
  await writeTree(
    content,
    new Map([
      [`${name}/one.bin`, pseudoRandom(2 * MiB + 17 * seed, seed)],
      [`${name}/sub/two.bin`, pseudoRandom(MiB + 333, seed + 1)],
      [`${name}.txt`, Buffer.from(`this is image ${name}\n`)],
    ]),
  )
  const image = join(work, `${name}.img`)
  await makeExtImage(image, IMAGE_SIZE, 'mkfs.ext4', [], content)
  const torrentFile = join(work, `${name}.torrent`)
  const made = await cli(['create', image, '-o', torrentFile, '--piece-size', '256K', '--name', name])
  expect(made.code, made.stderr).toBe(0)
  return { image, torrentFile, torrent: parseTorrent(await readFile(torrentFile)) }
}

beforeAll(async () => {
  // shared by the tests (a tempDir would be removed after each): removed in afterAll
  work = await mkdtemp(join(tmpdir(), 'bsw-lock-'))
  a = await golden('alpha', 3)
  b = await golden('beta', 9)
  // two different images: the same target cannot verify against both
  expect(a.torrent.infoHash).not.toBe(b.torrent.infoHash)
})

afterEach(cleanupAll)
afterAll(async () => {
  await cleanupAll()
  if (work) await rm(work, { recursive: true, force: true })
  // lock records of the processes cleanupAll killed (-9) stay until the next lock sweeps them: remove those now
  for (const f of await readdir(RECORDS).catch(() => [] as string[])) {
    const pid = /^[\d-]+\.(\d+)\./.exec(f)?.[1]
    if (pid && !(await stat(`/proc/${pid}`).catch(() => undefined))) await rm(join(RECORDS, f), { force: true })
  }
})

/** A fresh target file of stale bytes. */
async function staleFile(name: string): Promise<string> {
  const path = join(work, name)
  await makeStaleTarget(path, IMAGE_SIZE)
  onCleanup(() => rm(path, { force: true }))
  return path
}

const swarmArgs = ['--port', '0', '--bind', '127.0.0.1', '--log-level', 'warn']

/**
 * A deploy of `g` onto `target` whose only peer (127.0.0.1:peerPort) is not up
 * yet: once it printed its first progress line it holds the target, and waits.
 */
async function holdingDeploy(g: Golden, target: string, peerPort: number): Promise<DeployProc> {
  const d = startDeploy([g.torrentFile, target, '--peer', `127.0.0.1:${peerPort}`, '--seed-idle', '0', '--stall-timeout', '0', ...swarmArgs])
  await waitFor(`the deploy onto ${target} to start`, () => d.state() !== '' || d.child.exitCode !== null, 60_000, d.text)
  expect(d.child.exitCode, d.text()).toBeNull()
  return d
}

/** A one-shot CLI run that must be refused: its exit code and output. */
async function refused(args: string[]): Promise<string> {
  const r = await cli([...args, ...swarmArgs], { timeoutMs: 60_000 })
  expect(r.code, `${args.join(' ')} should have been refused:\n${r.stdout}\n${r.stderr}`).not.toBe(0)
  return r.stdout + r.stderr
}

/** What a refusal because of `holder` (a blockswarm process writing or seeding `g`) must say. */
function expectNamesHolder(text: string, holder: number, g: Golden, doing: 'writing' | 'seeding'): void {
  expect(text).toContain(' is locked')
  expect(text).toContain(`blockswarm pid ${holder} (`)
  expect(text).toContain(`${doing} torrent ${g.torrent.infoHash} (${g.torrent.name})`)
  expect(text).toContain('--force does not override this lock')
  // never the kernel's EBUSY story (mounts, RAID, swap) for another blockswarm writer
  expect(text).not.toContain('in use by the kernel')
}

/** Start the holder's seeder on the port it waits for; it must then finish, exit 0. */
async function letFinish(d: DeployProc, g: Golden, peerPort: number): Promise<void> {
  await startSeed(g.torrentFile, g.image, [], peerPort)
  const code = await waitExit(d.child, 90_000)
  expect(code, d.text()).toBe(0)
  expect(d.text()).toContain('verified and flushed')
}

/** Lock records of process `pid` (removed when it releases its targets; left behind by kill -9). */
async function recordsOf(pid: number): Promise<string[]> {
  return (await readdir(RECORDS).catch(() => [] as string[])).filter((f) => f.includes(`.${pid}.`))
}

describe('one writer per target', () => {
  it('openStore: a second store on the same file by another path is a TargetRefused (locked) naming this process; closing releases', async () => {
    const target = await staleFile('in-process.img')
    const sym = join(work, 'in-process.symlink')
    await symlink(target, sym)
    onCleanup(() => rm(sym, { force: true }))
    const first = await openStore(a.torrent, target, { mode: 'write' })
    onCleanup(() => first.close())
    const err = await openStore(b.torrent, sym, { mode: 'read', force: true }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(TargetRefused)
    expect((err as TargetRefused).problem).toBe('locked')
    expect((err as TargetRefused).message).toContain(`${sym} is locked by blockswarm pid ${process.pid} (`)
    expect((err as TargetRefused).message).toContain(`, this very process), writing torrent ${a.torrent.infoHash} (${a.torrent.name}) to ${target} since `)
    await first.close()
    const again = await openStore(b.torrent, sym, { mode: 'write' })
    await again.close()
  })

  it('two deploys of different torrents onto one image file: one writes, the other is refused at once naming it; the target is the winner\'s', async () => {
    const target = await staleFile('shared.img')
    const port = await freePort()
    const first = await holdingDeploy(a, target, port)
    const pid = first.child.pid!

    const text = await refused(['deploy', b.torrentFile, target, '--peer', '127.0.0.1:1', '--stall-timeout', '0'])
    expectNamesHolder(text, pid, a, 'writing')
    expect(text).toContain(`${target} is locked by blockswarm pid ${pid} (`)
    // refused while the holder still runs: it did not wait for it
    expect(first.child.exitCode).toBeNull()
    // --force overrides in-use checks, never another writer; a seeder conflicts with a writer too
    expectNamesHolder(await refused(['deploy', b.torrentFile, target, '--force', '--peer', '127.0.0.1:1']), pid, a, 'writing')
    expectNamesHolder(await refused(['seed', a.torrentFile, target]), pid, a, 'writing')
    expect(await recordsOf(pid)).toHaveLength(1)

    await letFinish(first, a, port)
    expect(await badPieces(a.torrent, target)).toEqual([])
    expect((await badPieces(b.torrent, target)).length).toBeGreaterThan(0)
    const fsck = await run('e2fsck', ['-fn', target])
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)
    // released on exit: no record left
    expect(await recordsOf(pid)).toEqual([])
  })

  it('two deploys onto one loop device: the second is refused naming the holder, also with --force', async () => {
    const dev = await loopAttach(await staleFile('loop.img'))
    const port = await freePort()
    const first = await holdingDeploy(a, dev, port)
    const pid = first.child.pid!

    expectNamesHolder(await refused(['deploy', b.torrentFile, dev, '--peer', '127.0.0.1:1']), pid, a, 'writing')
    const forced = await refused(['deploy', b.torrentFile, dev, '--force', '--peer', '127.0.0.1:1'])
    expectNamesHolder(forced, pid, a, 'writing')
    expect(forced).toContain(`${dev} is locked by blockswarm pid ${pid} (`)
    expect(first.child.exitCode).toBeNull()

    await letFinish(first, a, port)
    expect(await badPieces(a.torrent, dev)).toEqual([])
    const fsck = await run('e2fsck', ['-fn', dev])
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0)
  })

  it('two daemons, a deploy and a daemon, one daemon through a symlink or a hard link: refused with FAILED_PRECONDITION naming the holder', async () => {
    const addresses = await Promise.all([freePort(), freePort()]).then((ports) => ports.map((p) => `127.0.0.1:${p}`))
    const daemons = await Promise.all(addresses.map((address) => startDaemonProcess(['--listen', address, ...swarmArgs], address)))
    const clients = addresses.map((address) => connectControl(address))
    onCleanup(async () => clients.forEach((c) => c.close()))
    const addError = async (i: number, g: Golden, target: string): Promise<{ code: string; details: string }> => {
      try {
        await clients[i].blockswarm.AddTorrent({ torrent: g.torrent.raw, target })
      } catch (err) {
        if (err instanceof ClientError) return { code: Status[err.code], details: err.details }
        throw err
      }
      throw new Error(`daemon ${i} accepted ${g.torrent.name} onto ${target}`)
    }

    // daemon 0 holds target one; daemon 1 and a deploy are refused
    const one = await staleFile('daemon-one.img')
    await clients[0].blockswarm.AddTorrent({ torrent: a.torrent.raw, target: one })
    const holder = daemons[0].child.pid!
    const second = await addError(1, b, one)
    expect(second.code).toBe('FAILED_PRECONDITION')
    expectNamesHolder(second.details, holder, a, 'writing')
    expectNamesHolder(await refused(['deploy', b.torrentFile, one, '--peer', '127.0.0.1:1']), holder, a, 'writing')

    // a deploy holds target two; daemon 1 is refused
    const two = await staleFile('daemon-two.img')
    const deploy = await holdingDeploy(b, two, await freePort())
    const third = await addError(1, a, two)
    expect(third.code).toBe('FAILED_PRECONDITION')
    expectNamesHolder(third.details, deploy.child.pid!, b, 'writing')

    // the same daemon, the same file by another name
    const sym = join(work, 'daemon-one.symlink')
    await symlink(one, sym)
    onCleanup(() => rm(sym, { force: true }))
    const bySymlink = await addError(0, b, sym)
    expect(bySymlink.code).toBe('FAILED_PRECONDITION')
    expect(bySymlink.details).toContain(a.torrent.infoHash)
    const hard = join(work, 'daemon-one.hardlink')
    await link(one, hard)
    onCleanup(() => rm(hard, { force: true }))
    const byLink = await addError(0, b, hard)
    expect(byLink.code).toBe('FAILED_PRECONDITION')
    expectNamesHolder(byLink.details, holder, a, 'writing')
    expect(byLink.details).toContain('this very process')
    for (const d of daemons) expect(d.child.exitCode).toBeNull()
  })

  it('several seeders share one read-only source; a deploy onto a source being seeded is refused', async () => {
    const source = join(work, 'source.img')
    await copyFile(a.image, source)
    onCleanup(() => rm(source, { force: true }))
    const roLoop = await loopAttach(source, { readOnly: true })
    const seeders = [await startSeed(a.torrentFile, roLoop), await startSeed(a.torrentFile, roLoop), await startSeed(a.torrentFile, source), await startSeed(a.torrentFile, source)]
    const [l1, l2, f1, f2] = seeders.map((s) => s.child.pid!)

    const ontoLoop = await refused(['deploy', b.torrentFile, roLoop, '--peer', '127.0.0.1:1', '--force'])
    for (const pid of [l1, l2]) expectNamesHolder(ontoLoop, pid, a, 'seeding')
    const ontoFile = await refused(['deploy', b.torrentFile, source, '--peer', '127.0.0.1:1'])
    for (const pid of [f1, f2]) expectNamesHolder(ontoFile, pid, a, 'seeding')
    for (const s of seeders) expect(s.child.exitCode).toBeNull()
    // nothing was written: the source still verifies
    expect(await badPieces(a.torrent, source)).toEqual([])
  })

  it('partitions: a writer of the disk refuses writers and seeders of its partitions and vice versa; two partitions are written at once; kill -9 releases', async () => {
    const file = await staleFile('disk.img')
    await sh('truncate', ['-s', '40M', file])
    await sh('sfdisk', ['-q', file], { input: 'label: gpt\nstart=2048, size=32768\nstart=34816, size=32768\n' })
    const disk = await loopAttach(file, { partscan: true })
    const [p1, p2] = [`${disk}p1`, `${disk}p2`]
    // here the kernel does not always scan at attach time: ask for the partitions explicitly
    if (!(await stat(p1).catch(() => undefined))) await sh('partx', ['-a', disk])
    await waitFor('the partition nodes', async () => (await stat(p2).catch(() => undefined)) !== undefined, 10_000)

    // the whole disk is written: its partitions can be neither written nor seeded
    const whole = await holdingDeploy(a, disk, await freePort())
    const wholePid = whole.child.pid!
    const ontoPart = await refused(['deploy', b.torrentFile, p1, '--peer', '127.0.0.1:1', '--force'])
    expectNamesHolder(ontoPart, wholePid, a, 'writing')
    expect(ontoPart).toContain(`${p1} is locked: its disk ${disk} is held by blockswarm pid ${wholePid} (`)
    expectNamesHolder(await refused(['seed', b.torrentFile, p2]), wholePid, a, 'writing')

    // kill -9: the kernel drops the lock with the process (its record stays behind, stale)
    whole.child.kill('SIGKILL')
    await waitExit(whole.child, 30_000)
    expect(await recordsOf(wholePid)).toHaveLength(1)

    // two partitions written at once; the disk can then be neither written nor seeded
    const [portA, portB] = [await freePort(), await freePort()]
    const first = await holdingDeploy(a, p1, portA)
    const second = await holdingDeploy(b, p2, portB)
    const ontoDisk = await refused(['deploy', b.torrentFile, disk, '--peer', '127.0.0.1:1', '--force'])
    expectNamesHolder(ontoDisk, first.child.pid!, a, 'writing')
    expectNamesHolder(ontoDisk, second.child.pid!, b, 'writing')
    expectNamesHolder(await refused(['seed', a.torrentFile, disk]), first.child.pid!, a, 'writing')
    await Promise.all([letFinish(first, a, portA), letFinish(second, b, portB)])
    expect(await badPieces(a.torrent, p1)).toEqual([])
    expect(await badPieces(b.torrent, p2)).toEqual([])
    // the stale record of the killed holder was cleared by the next lock of the disk
    expect(await recordsOf(wholePid)).toEqual([])
  })

  it('a lock another program holds (util-linux flock) is refused too, naming that program from /proc; --force does not override it', async () => {
    const target = await staleFile('foreign.img')
    // --no-fork: the pid started here is the one holding the lock (killed by cleanupAll)
    const holder = startProcess('flock', ['--no-fork', '--exclusive', target, 'sleep', '600'])
    await waitFor('flock to hold the file', async () => (await run('flock', ['--nonblock', '--shared', target, 'true'])).code !== 0 || holder.exitCode !== null, 10_000)
    expect(holder.exitCode).toBeNull()
    const text = await refused(['deploy', a.torrentFile, target, '--force', '--peer', '127.0.0.1:1'])
    expect(text).toContain(`${target} is locked by a program that left no blockswarm record; these have ${target} open: pid ${holder.pid} (sleep 600)`)
    expect(text).toContain('--force does not override this lock')
  })

  it('a holder killed with SIGKILL releases its target: a later deploy of another torrent succeeds', async () => {
    const target = await staleFile('killed.img')
    const holder = await holdingDeploy(a, target, await freePort())
    const pid = holder.child.pid!
    expectNamesHolder(await refused(['deploy', b.torrentFile, target, '--peer', '127.0.0.1:1']), pid, a, 'writing')
    holder.child.kill('SIGKILL')
    await waitExit(holder.child, 30_000)
    expect(await recordsOf(pid)).toHaveLength(1)

    const port = await freePort()
    const next = await holdingDeploy(b, target, port)
    await letFinish(next, b, port)
    expect(await badPieces(b.torrent, target)).toEqual([])
    expect(await recordsOf(pid)).toEqual([])
  })
})
