import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import bencode from 'bencode'
import { afterEach, describe, expect, it } from 'vitest'
import { extentName, gapsOf, rangesToExtents, validateExtents } from '../src/torrent/extents.js'
import { buildTorrent, DEFAULT_PIECE_LENGTH, parseTorrent } from '../src/torrent/metainfo.js'
import { cleanupAll, cli, tempDir } from './helpers/sys.js'

afterEach(cleanupAll)

const MiB = 1024 * 1024

function sample(overrides: Record<string, unknown> = {}, top: Record<string, unknown> = {}) {
  const files = [
    { length: 3 * MiB, path: [extentName(0)] },
    { length: 20 * MiB, path: [extentName(64 * MiB)] },
  ]
  const pieces = Buffer.alloc(20 * 2, 7)
  const info = { files, name: 'sda1', 'piece length': DEFAULT_PIECE_LENGTH, pieces, ...overrides }
  return Buffer.from(bencode.encode({ announce: 'http://127.0.0.1:6969/announce', info, ...top }))
}

describe('extent names', () => {
  it('are 32 lowercase hex digits', () => {
    expect(extentName(16 * MiB)).toBe('00000000000000000000000001000000')
  })
  it('accepts 1-32 hex digits, upper or lower case (older torrents used 16)', () => {
    const ex = validateExtents([
      { path: ['0000000000001000'], length: 1 },
      { path: ['2000'], length: 1 },
      { path: ['ABCDEF'], length: 1 },
    ])
    expect(ex.map((e) => e.offset)).toEqual([0x1000, 0x2000, 0xabcdef])
  })
})

describe('parseTorrent', () => {
  it('parses the EZIO/partclone layout into typed extents', () => {
    const t = parseTorrent(sample())
    expect(t.name).toBe('sda1')
    expect(t.pieceLength).toBe(16 * MiB)
    expect(t.pieceCount).toBe(2)
    expect(t.totalLength).toBe(23 * MiB)
    expect(t.extents).toEqual([
      { offset: 0, length: 3 * MiB, start: 0, name: extentName(0) },
      { offset: 64 * MiB, length: 20 * MiB, start: 3 * MiB, name: extentName(64 * MiB) },
    ])
    expect(t.trackers).toEqual(['http://127.0.0.1:6969/announce'])
    expect(t.meta.gaps).toBe('dont-care')
  })

  it('hashes the info dictionary exactly as it stands in the file', () => {
    const buf = sample()
    const info = bencode.encode(bencode.decode(buf).info)
    expect(parseTorrent(buf).infoHash).toBe(createHash('sha1').update(info).digest('hex'))
  })

  it('keeps the info-hash when blockswarm metadata is added outside info', () => {
    const plain = parseTorrent(sample())
    const withMeta = parseTorrent(sample({}, { blockswarm: { gaps: 'zero', 'target size': 128 * MiB } }))
    expect(withMeta.infoHash).toBe(plain.infoHash)
    expect(withMeta.meta).toEqual({ gaps: 'zero', targetSize: 128 * MiB, source: undefined })
  })

  const bad: [string, Buffer, RegExp][] = [
    ['bencode garbage', Buffer.from('d4:infod4:name'), /not bencoded|unterminated|string runs past/],
    ['not a dictionary', Buffer.from('li1ee'), /not a dictionary/],
    ['an empty file', Buffer.alloc(0), /empty file/],
    ['no info', Buffer.from(bencode.encode({ announce: 'x' })), /"info" is not a dictionary/],
    ['non-hex name', sample({ files: [{ length: 1, path: ['0000zz'] }], pieces: Buffer.alloc(20) }), /file entry 0.*"0000zz" is not a hex offset/],
    ['traversal name', sample({ files: [{ length: 1, path: ['..', 'x'] }], pieces: Buffer.alloc(20) }), /file entry 0.*unsafe path component "\.\."/],
    ['slash in a name', sample({ files: [{ length: 1, path: ['a/00'] }], pieces: Buffer.alloc(20) }), /unsafe path component "a\/00"/],
    ['33 hex digits', sample({ files: [{ length: 1, path: ['0'.repeat(33)] }], pieces: Buffer.alloc(20) }), /not a hex offset/],
    [
      'overlapping extents',
      sample({ files: [{ length: 4096, path: ['0'] }, { length: 10, path: ['800'] }], pieces: Buffer.alloc(20) }),
      /file entry 1.*overlaps the previous extent 0x0\+4096/,
    ],
    [
      'unsorted extents',
      sample({ files: [{ length: 1, path: ['1000'] }, { length: 1, path: ['0'] }], pieces: Buffer.alloc(20) }),
      /file entry 1.*must be sorted/,
    ],
    ['zero-length extent', sample({ files: [{ length: 0, path: ['0'] }], pieces: Buffer.alloc(0) }), /file entry 0.*length 0 is not a positive integer/],
    ['negative length', sample({ files: [{ length: -5, path: ['0'] }], pieces: Buffer.alloc(20) }), /length -5 is not a positive integer/],
    ['huge length', sample({ files: [{ length: 2 ** 60, path: ['0'] }], pieces: Buffer.alloc(20) }), /length.*(not an integer|beyond)/],
    ['pieces of the wrong length', sample({ pieces: Buffer.alloc(39) }), /info.pieces is 39 bytes; 2 pieces .* need 40/],
    ['piece length not a power of two', sample({ 'piece length': 3 * MiB }), /not a power of two/],
    ['piece length too small', sample({ 'piece length': 1024 }), /not a power of two between 16 KiB/],
    ['a name that is a path', sample({ name: '../etc' }), /info.name "..\/etc" is not a safe directory name/],
    ['single-file torrent', Buffer.from(bencode.encode({ info: { name: 'x', length: 5, 'piece length': 16384, pieces: Buffer.alloc(20) } })), /single-file torrent/],
    ['wrong type for files', sample({ files: 'nope' }), /info.files is not a list/],
    ['bad gaps value', sample({}, { blockswarm: { gaps: 'maybe' } }), /blockswarm.gaps "maybe"/],
    ['target size smaller than the extents', sample({}, { blockswarm: { 'target size': 1024 } }), /target size.*smaller than the last extent's end/],
  ]
  for (const [what, buf, message] of bad) {
    it(`rejects ${what} with a message that names the problem`, () => {
      expect(() => parseTorrent(buf, { source: 'x.torrent' })).toThrow(message)
      expect(() => parseTorrent(buf, { source: 'x.torrent' })).toThrow(/^x\.torrent: /)
    })
  }
})

describe('buildTorrent', () => {
  it('round-trips extents, trackers, web seeds and metadata', () => {
    const extents = rangesToExtents([
      { offset: 0, length: 1000 },
      { offset: 1 << 20, length: 40000 },
    ])
    const { torrent, buffer } = buildTorrent({
      name: 'disk',
      pieceLength: 16384,
      pieces: Buffer.alloc(20 * 3, 1),
      extents,
      trackers: ['http://a/announce', 'udp://b:1/announce'],
      webSeeds: ['http://c/'],
      meta: { gaps: 'zero', targetSize: 2 << 20, source: 'zero' },
    })
    expect(torrent.extents).toEqual(extents)
    expect(torrent.trackers).toEqual(['http://a/announce', 'udp://b:1/announce'])
    expect(torrent.webSeeds).toEqual(['http://c/'])
    expect(torrent.meta).toEqual({ gaps: 'zero', targetSize: 2 << 20, source: 'zero' })
    expect(parseTorrent(buffer).infoHash).toBe(torrent.infoHash)
    expect(gapsOf(torrent.extents, 2 << 20)).toEqual([
      { offset: 1000, length: (1 << 20) - 1000 },
      { offset: (1 << 20) + 40000, length: (2 << 20) - (1 << 20) - 40000 },
    ])
  })
})

describe('blockswarm inspect', () => {
  it('prints the summary as JSON', async () => {
    const dir = await tempDir()
    const file = join(dir, 'a.torrent')
    await writeFile(file, sample({}, { blockswarm: { gaps: 'zero', 'target size': 100 * MiB } }))
    const r = await cli(['inspect', file, '--json'])
    expect(r.code).toBe(0)
    const s = JSON.parse(r.stdout)
    expect(s).toMatchObject({ name: 'sda1', pieceLength: 16 * MiB, pieceCount: 2, extentCount: 2, bytesCovered: 23 * MiB, gaps: 'zero', targetSize: 100 * MiB })
    expect(s.infoHash).toMatch(/^[0-9a-f]{40}$/)
  })

  it('says what is wrong with a malformed torrent and exits non-zero', async () => {
    const dir = await tempDir()
    const file = join(dir, 'bad.torrent')
    await writeFile(file, sample({ files: [{ length: 1, path: ['..'] }], pieces: Buffer.alloc(20) }))
    const r = await cli(['inspect', file])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/bad\.torrent: bad extent: file entry 0.*unsafe path component "\.\."/)
  })

  it('says so when the file is missing', async () => {
    const r = await cli(['inspect', '/nonexistent/x.torrent'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/cannot read \/nonexistent\/x\.torrent: ENOENT/)
  })
})
