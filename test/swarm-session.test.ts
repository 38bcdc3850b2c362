/**
 * The Session as a library: several torrents in one session, each with its
 * own target, over real TCP on 127.0.0.1 and real files; a "gaps must be
 * zero" torrent zeroes its gaps and leaves a "don't care" one's alone; bad
 * adds are refused with a code and a message and disturb nothing; remove
 * never touches the target's data; pause and resume.
 */
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { Session, SessionError } from '../src/session/session.js'
import { gapsOf } from '../src/torrent/extents.js'
import { buildTorrent, type ExtentTorrent, type GapPolicy } from '../src/torrent/metainfo.js'
import { waitStatus } from './helpers/grpc-fixtures.js'
import { cleanupAll, freePort, onCleanup, pseudoRandom, tempDir } from './helpers/sys.js'

const KiB = 1024

async function startSession(opts: Parameters<typeof Session.start>[0] = {}): Promise<Session> {
  const s = await Session.start({ port: await freePort(), bind: '127.0.0.1', ...opts })
  onCleanup(() => s.close())
  return s
}

/** An image of `size` pseudo-random bytes and a torrent over some extents of it (with gaps between). */
function makeImage(size: number, seed: number, gaps: GapPolicy, name: string): { image: Buffer; torrent: ExtentTorrent; raw: Buffer } {
  const image = pseudoRandom(size, seed)
  const extents = [
    { offset: 4 * KiB, length: 300 * KiB + 17 },
    { offset: 512 * KiB, length: 64 * KiB },
    { offset: 700 * KiB, length: size - 700 * KiB - 3 * KiB },
  ]
  const pieceLength = 64 * KiB
  const stream = Buffer.concat(extents.map((e) => image.subarray(e.offset, e.offset + e.length)))
  const pieces: Buffer[] = []
  for (let at = 0; at < stream.length; at += pieceLength) pieces.push(createHash('sha1').update(stream.subarray(at, at + pieceLength)).digest())
  const { buffer, torrent } = buildTorrent({ name, pieceLength, pieces: Buffer.concat(pieces), extents, meta: { gaps, targetSize: size } })
  return { image, torrent, raw: buffer }
}

afterEach(cleanupAll)

describe('Session', () => {
  it('runs several torrents at once, each onto its own target; zero-gap torrents get zeroed gaps, others keep theirs', async () => {
    const dir = await tempDir('bsw-session-')
    const size = 1024 * KiB
    const a = makeImage(size, 7, 'dont-care', 'disk-a')
    const b = makeImage(size, 8, 'zero', 'disk-b')
    const stale = Buffer.alloc(size, 0x5a)
    const paths = { goldA: join(dir, 'gold-a.img'), goldB: join(dir, 'gold-b.img'), dstA: join(dir, 'dst-a.img'), dstB: join(dir, 'dst-b.img') }
    await writeFile(paths.goldA, a.image)
    await writeFile(paths.goldB, b.image)
    await writeFile(paths.dstA, stale)
    await writeFile(paths.dstB, stale)

    const seeder = await startSession()
    await seeder.add(a.raw, { target: paths.goldA, seedingMode: true })
    await seeder.add(b.torrent, { target: paths.goldB, seedingMode: true })
    expect(seeder.status().map((s) => s.state)).toEqual(['seeding', 'seeding'])

    const leecher = await startSession({ peers: [`127.0.0.1:${seeder.port}`], memory: 2 * 1024 * KiB })
    await leecher.add(a.raw, { target: paths.dstA, seedIdle: 0 })
    await leecher.add(b.raw, { target: paths.dstB, seedIdle: 0 })
    const [sa, sb] = await Promise.all([
      waitStatus(leecher, a.torrent.infoHash, (s) => s.done, 'torrent A done'),
      waitStatus(leecher, b.torrent.infoHash, (s) => s.done, 'torrent B done'),
    ])
    for (const s of [sa, sb]) {
      expect(s.state).toBe('finished')
      expect(s.piecesDone).toBe(s.pieceCount)
      expect(s.progress).toBe(1)
      expect(s.totalDownloaded).toBeGreaterThanOrEqual(s.total)
      expect(s.bans).toEqual([])
    }
    const dstA = await readFile(paths.dstA)
    const dstB = await readFile(paths.dstB)
    for (const e of a.torrent.extents) expect(dstA.subarray(e.offset, e.offset + e.length).equals(a.image.subarray(e.offset, e.offset + e.length))).toBe(true)
    for (const e of b.torrent.extents) expect(dstB.subarray(e.offset, e.offset + e.length).equals(b.image.subarray(e.offset, e.offset + e.length))).toBe(true)
    for (const g of gapsOf(a.torrent.extents, size)) expect(dstA.subarray(g.offset, g.offset + g.length).equals(stale.subarray(0, g.length))).toBe(true)
    for (const g of gapsOf(b.torrent.extents, size)) expect(dstB.subarray(g.offset, g.offset + g.length).equals(Buffer.alloc(g.length))).toBe(true)

    // the seeder saw the uploads, per torrent
    const up = seeder.status().map((s) => s.totalUploaded)
    expect(up[0]).toBeGreaterThanOrEqual(a.torrent.totalLength)
    expect(up[1]).toBeGreaterThanOrEqual(b.torrent.totalLength)
  })

  it('refuses bad adds with a code and a message, and the torrents already there carry on', async () => {
    const dir = await tempDir('bsw-session-')
    const size = 1024 * KiB
    const a = makeImage(size, 9, 'dont-care', 'disk-a')
    const c = makeImage(size, 10, 'dont-care', 'disk-c')
    const gold = join(dir, 'gold.img')
    await writeFile(gold, a.image)
    const session = await startSession()
    await session.add(a.raw, { target: gold, seedingMode: true })

    const refused = async (p: Promise<unknown>): Promise<SessionError> => {
      const err = await p.then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(SessionError)
      return err as SessionError
    }
    const dup = await refused(session.add(a.raw, { target: join(dir, 'other.img') }))
    expect(dup.code).toBe('ALREADY_EXISTS')
    expect(dup.message).toContain(a.torrent.infoHash)
    const sameTarget = await refused(session.add(c.raw, { target: gold, seedingMode: true }))
    expect(sameTarget.code).toBe('FAILED_PRECONDITION')
    expect(sameTarget.message).toMatch(/already used by torrent/)
    const garbage = await refused(session.add(Buffer.from('d4:infod4:name1:xee'), { target: join(dir, 'x.img') }))
    expect(garbage.code).toBe('INVALID_ARGUMENT')
    const missing = await refused(session.add(c.raw, { target: join(dir, 'no-such-dir', 'x.img') }))
    expect(missing.code).toBe('FAILED_PRECONDITION')
    expect(missing.message).toContain('does not exist')
    const badPeer = await refused(session.add(c.raw, { target: gold + '2', peers: ['nonsense'] }))
    expect(badPeer.code).toBe('INVALID_ARGUMENT')
    expect(badPeer.message).toContain('"nonsense"')
    expect(() => session.status(['0'.repeat(40)])).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }))
    expect(() => session.pause('xyz')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))

    expect(session.status().map((s) => [s.infoHash, s.state])).toEqual([[a.torrent.infoHash, 'seeding']])
  })

  it('dials each peer once: not back a peer that dialed it, and not itself again once it saw itself', async () => {
    const dir = await tempDir('bsw-session-')
    const { raw } = makeImage(1024 * KiB, 14, 'dont-care', 'disk-a')
    // three leechers of a torrent nobody has stay connected with nothing to trade; each lists all three addresses, its own too
    const ports = [await freePort(), await freePort(), await freePort()]
    const peers = ports.map((p) => `127.0.0.1:${p}`)
    const dials = ports.map(() => [] as string[])
    const sessions = await Promise.all(
      ports.map((port, i) => {
        const write = (line: string) => {
          const j = JSON.parse(line) as { msg: string; peer?: string }
          if (j.msg === 'dialing') dials[i].push(j.peer!)
        }
        return startSession({ port, peers, log: pino({ level: 'debug' }, { write }) })
      }),
    )
    for (const i of ports.keys()) await writeFile(join(dir, `dst-${i}.img`), Buffer.alloc(1024 * KiB))
    await Promise.all(sessions.map((s, i) => s.add(raw, { target: join(dir, `dst-${i}.img`) })))
    // without the fix, a node dialed itself again after 1 s and 3 s, and redialed a peer that had dialed it after 1 s
    await new Promise((r) => setTimeout(r, 4500))
    for (const [i, s] of sessions.entries()) {
      expect(s.status()[0].peers).toBe(2)
      expect(dials[i].filter((a) => a === peers[i])).toEqual([peers[i]])
      expect(new Set(dials[i]).size, `node ${i + 1} dialed ${dials[i].join(', ')}`).toBe(dials[i].length)
    }
  })

  it('pauses, resumes and removes a torrent without touching its target', async () => {
    const dir = await tempDir('bsw-session-')
    const size = 1024 * KiB
    const a = makeImage(size, 12, 'zero', 'disk-a')
    const target = join(dir, 'target.img')
    const before = pseudoRandom(size, 99)
    await writeFile(target, before)
    const session = await startSession()
    // nothing to download from: it waits for peers at once, the check (a probe on this stale target) beside
    await session.add(a.raw, { target })
    expect(session.get(a.torrent.infoHash)?.state).toBe('downloading')
    const checked = await waitStatus(session, a.torrent.infoHash, (s) => s.checkRate !== undefined && s.checkPending === 0, 'checked')
    expect(checked.piecesDone).toBe(0)
    expect(checked.totalChecked).toBeGreaterThan(0)
    session.pause(a.torrent.infoHash)
    expect(session.get(a.torrent.infoHash)).toMatchObject({ state: 'paused', paused: true, done: false })
    session.resume(a.torrent.infoHash)
    expect(session.get(a.torrent.infoHash)).toMatchObject({ state: 'downloading', paused: false })
    await session.remove(a.torrent.infoHash)
    expect(session.get(a.torrent.infoHash)).toBeUndefined()
    expect((await readFile(target)).equals(before)).toBe(true)
  })
})
