/**
 * Fixtures for the control API tests: a source image with holes and its
 * extent torrent, a seeder Session, a daemon (in-process Session + control
 * server, or the real `blockswarm daemon` process), and the Python EZIO
 * client. Everything is registered with cleanupAll().
 */
import { createHash } from 'node:crypto'
import { open, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { createTorrent } from '../../src/create/create.js'
import { startControlServer, type ControlServer } from '../../src/control/server.js'
import { PROTO_DIR } from '../../src/control/proto-loader.js'
import { Session, type SessionOptions } from '../../src/session/session.js'
import type { TorrentStatus } from '../../src/swarm/status.js'
import type { ExtentTorrent } from '../../src/torrent/metainfo.js'
import { captureOutput, CLI, onCleanup, pseudoRandom, ROOT, run, startProcess } from './sys.js'
import { connectControl } from '../../src/control/client.js'
import { ClientError, Status } from 'nice-grpc'

export const PYTHON = '/usr/bin/python3'
const PY_CLIENT = join(ROOT, 'test/helpers/python-ezio-client.py')

export interface Image {
  path: string
  size: number
  bytes: Buffer
  torrent: ExtentTorrent
  torrentFile: string
}

/**
 * A pseudo-random image of `size` bytes with zeroed holes (so the torrent has
 * several extents and gaps), and its torrent (zero-scan, 64 KiB pieces).
 */
export async function makeImage(dir: string, name: string, size: number, seed = 7): Promise<Image> {
  const bytes = pseudoRandom(size, seed)
  for (let hole = size / 8; hole < size; hole += size / 4) bytes.fill(0, hole, hole + size / 16)
  const path = join(dir, `${name}.img`)
  await writeFile(path, bytes)
  const r = await createTorrent({ source: path, name, mode: 'zero', pieceLength: 64 * 1024 })
  const torrentFile = join(dir, `${name}.torrent`)
  await writeFile(torrentFile, r.buffer)
  return { path, size, bytes, torrent: r.torrent, torrentFile }
}

/** An empty target file of `size` bytes (sparse zeros). */
export async function makeTarget(dir: string, name: string, size: number): Promise<string> {
  const path = join(dir, name)
  const fh = await open(path, 'w')
  await fh.truncate(size)
  await fh.close()
  return path
}

/** SHA-1 of the bytes inside the torrent's extents (what a deploy must reproduce); compared as hex, not byte by byte. */
export function extentDigest(t: ExtentTorrent, image: Buffer): string {
  const h = createHash('sha1')
  for (const e of t.extents) h.update(image.subarray(e.offset, e.offset + e.length))
  return h.digest('hex')
}

export async function startSession(opts: SessionOptions = {}): Promise<Session> {
  const s = await Session.start({ port: 0, bind: '127.0.0.1', ...opts })
  onCleanup(() => s.close())
  return s
}

/** Two Sessions on `openStore`'s targets: a seeder of "memory:golden" (seeding mode) and a leecher that dials it (nothing added yet). */
export async function memorySeederAndLeecher(raw: Buffer, openStore: SessionOptions['openStore']): Promise<{ seeder: Session; leecher: Session }> {
  const seeder = await startSession({ openStore })
  await seeder.add(raw, { target: 'memory:golden', seedingMode: true })
  const leecher = await startSession({ openStore, peers: [`127.0.0.1:${seeder.port}`] })
  return { seeder, leecher }
}

/** A seeder of `image` on loopback; upload capped by `uploadRate` (bytes/s) to keep a deploy in progress for a while. */
export async function startSeeder(image: Image, uploadRate = 0): Promise<{ session: Session; peer: string }> {
  const session = await startSession({ uploadRate })
  await session.add(image.torrent, { target: image.path, seedingMode: true })
  return { session, peer: `127.0.0.1:${session.port}` }
}

/** A Session with the control API on a free loopback port; `exits` collects onExit codes. */
export async function startInProcessDaemon(opts: SessionOptions = {}): Promise<{ session: Session; control: ControlServer; address: string; exits: number[] }> {
  const session = await startSession(opts)
  const exits: number[] = []
  const control = await startControlServer(session, { listen: ['127.0.0.1:0'], facts: opts, onExit: (code) => exits.push(code) })
  onCleanup(() => control.close())
  return { session, control, address: control.addresses[0], exits }
}

/** The real `blockswarm daemon` process (or `command`, e.g. the `ezio` name); resolves once its control API answers. */
export async function startDaemonProcess(
  args: string[],
  address: string,
  command: readonly string[] = [process.execPath, CLI, 'daemon'],
): Promise<{ child: ChildProcess; output: () => string }> {
  const child = startProcess(command[0], [...command.slice(1), ...args])
  const out = captureOutput(child)
  const probe = connectControl(address)
  try {
    for (let i = 0; i < 300; i++) {
      if (child.exitCode !== null) throw new Error(`daemon exited ${child.exitCode}: ${out.text()}`)
      try {
        await probe.ezio.GetVersion({})
        return { child, output: out.text }
      } catch {
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  } finally {
    probe.close()
  }
  throw new Error(`daemon did not answer on ${address} within 30 s: ${out.text()}`)
}

/** Run the Python EZIO client; returns its JSON answer (errors are {error: {code, details}}). */
export async function python(stubs: string, address: string, ...args: string[]): Promise<any> {
  const r = await run(PYTHON, [PY_CLIENT, '--stubs', stubs, '--proto-dir', PROTO_DIR, address, ...args])
  if (r.code !== 0 && r.code !== 3) throw new Error(`python client ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/** Resolves with the torrent's status once `pred` holds (checked on every change and every 200 ms); rejects on a torrent error or the timeout. */
export function waitStatus(session: Session, hash: string, pred: (s: TorrentStatus) => boolean, what: string, timeoutMs = 60_000): Promise<TorrentStatus> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const s = session.get(hash)
      if (s && pred(s)) {
        done()
        resolve(s)
      } else if (s?.state === 'error') {
        done()
        reject(new Error(`${what}: torrent error: ${s.error}`))
      }
    }
    const timer = setInterval(check, 200)
    const deadline = setTimeout(() => {
      done()
      reject(new Error(`${what}: timed out; status ${JSON.stringify(session.get(hash))}`))
    }, timeoutMs)
    const done = () => {
      clearInterval(timer)
      clearTimeout(deadline)
      session.off('change', check)
    }
    session.on('change', check)
    check()
  })
}

/** The gRPC status (by name) and details a call failed with; throws if it succeeded or failed otherwise. */
export async function grpcError(p: Promise<unknown>): Promise<{ code: string; details: string }> {
  try {
    await p
  } catch (err) {
    if (err instanceof ClientError) return { code: Status[err.code], details: err.details }
    throw err
  }
  throw new Error('the call succeeded')
}
