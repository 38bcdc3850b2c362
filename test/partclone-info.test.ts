/**
 * partclone's torrent.info parser: on real partclone output (ext4 image made
 * with mkfs.ext4 -d) and on malformed input, where each error names the line.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PARTCLONE_PIECE_LENGTH, PartcloneInfoError, parsePartcloneInfo, readPartcloneInfo } from '../src/create/partclone-info.js'
import { cleanupAll, pseudoRandom, sh, tempDir } from './helpers/sys.js'

const MiB = 1024 * 1024

describe('torrent.info from real partclone', () => {
  let dir: string
  let image: string

  beforeAll(async () => {
    dir = await tempDir('bsw-pcinfo-')
    const data = join(dir, 'data')
    await sh('mkdir', [data])
    // 37 MiB of file data: three pieces of 16 MiB, the last one partial
    await writeFile(join(data, 'a.bin'), pseudoRandom(30 * MiB, 7))
    await writeFile(join(data, 'b.bin'), pseudoRandom(7 * MiB, 8))
    image = join(dir, 'ext4.img')
    await sh('truncate', ['-s', '96M', image])
    await sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', data, image])
  })
  afterAll(cleanupAll)

  it('-T: extents are the files partclone wrote, sha1 lines are the 16 MiB piece hashes', async () => {
    const out = join(dir, 'out-T')
    await sh('partclone.extfs', ['-c', '-T', '-q', '-s', image, '-o', out, '-L', join(dir, 'T.log')])
    const info = await readPartcloneInfo(join(out, 'torrent.info'))

    expect(info.blockSize).toBe(4096)
    expect(info.blocksTotal).toBe((96 * MiB) / 4096)
    const files = (await readdir(out)).filter((f) => f !== 'torrent.info').sort()
    expect(info.extents.map((e) => e.name)).toEqual(files)
    for (const e of info.extents) {
      expect(e.name).toMatch(/^[0-9a-f]{32}$/)
      expect(e.offset).toBe(parseInt(e.name, 16))
      expect((await stat(join(out, e.name))).size).toBe(e.length)
      // partclone's default -z (1 MiB) caps each file
      expect(e.length).toBeLessThanOrEqual(MiB)
    }
    expect(info.totalLength).toBeGreaterThan(37 * MiB)
    expect(info.complete).toBe(true)
    expect(info.pieces.length / 20).toBe(Math.ceil(info.totalLength / PARTCLONE_PIECE_LENGTH))

    // recompute the pieces over the concatenated extent files
    const stream = Buffer.concat(await Promise.all(info.extents.map((e) => readFile(join(out, e.name)))))
    for (let i = 0; i * PARTCLONE_PIECE_LENGTH < stream.length; i++) {
      const piece = stream.subarray(i * PARTCLONE_PIECE_LENGTH, (i + 1) * PARTCLONE_PIECE_LENGTH)
      expect(createHash('sha1').update(piece).digest('hex'), `piece ${i}`).toBe(info.pieces.subarray(i * 20, i * 20 + 20).toString('hex'))
    }
  })

  it('-t writes the same torrent.info without data files; -z 16M keeps the bytes but cuts fewer files', async () => {
    const outT = join(dir, 'out-T2')
    const outt = join(dir, 'out-t')
    const outz = join(dir, 'out-z')
    await sh('partclone.extfs', ['-c', '-T', '-q', '-s', image, '-o', outT, '-L', join(dir, 'T2.log')])
    await sh('partclone.extfs', ['-c', '-t', '-q', '-s', image, '-o', outt, '-L', join(dir, 't.log')])
    await sh('partclone.extfs', ['-c', '-T', '-q', '-z', String(16 * MiB), '-s', image, '-o', outz, '-L', join(dir, 'z.log')])
    expect(await readdir(outt)).toEqual(['torrent.info'])
    expect(await readFile(join(outt, 'torrent.info'), 'utf8')).toBe(await readFile(join(outT, 'torrent.info'), 'utf8'))

    const small = await readPartcloneInfo(join(outT, 'torrent.info'))
    const big = await readPartcloneInfo(join(outz, 'torrent.info'))
    expect(big.extents.length).toBeLessThan(small.extents.length)
    expect(big.totalLength).toBe(small.totalLength)
    expect(big.pieces.equals(small.pieces)).toBe(true)
    // every 16M-cut extent is a union of 1M-cut ones
    for (const e of big.extents) {
      const inside = small.extents.filter((s) => s.offset >= e.offset && s.offset + s.length <= e.offset + e.length)
      expect(inside.reduce((n, s) => n + s.length, 0)).toBe(e.length)
    }
  })
})

describe('malformed torrent.info', () => {
  const pair = (offset: number, length: number) =>
    `offset: ${offset.toString(16).padStart(32, '0')}\nlength: ${length.toString(16).padStart(32, '0')}\n`
  const sha = (c: string) => `sha1: ${c.repeat(40)}\n`
  const head = 'block_size: 4096\nblocks_total: 32768\n'

  const bad: [string, string, RegExp][] = [
    ['unknown key', head + pair(0, 4096) + 'colour: blue\n', /x\.info line 5: unknown key "colour:"/],
    ['line without a colon', head + 'offset 0\n', /x\.info line 3: expected "key: value"/],
    ['non-hex offset', head + 'offset: 00000000000000000000000000zz0000\nlength: 1000\n', /line 3: offset "0+zz0000" is not a hex byte value/],
    ['offset longer than 32 digits', head + `offset: ${'0'.repeat(33)}\nlength: 1000\n`, /line 3: offset .* is not a hex byte value/],
    ['offset without length', head + pair(0, 4096) + 'offset: 2000\n' + sha('a'), /line 6: "offset:" on line 5 is not followed by a "length:" line/],
    ['offset at the end of the file', head + pair(0, 4096) + 'offset: 2000\n', /line 5: "offset:" is not followed by a "length:" line \(the file ends\)/],
    ['length without offset', head + 'length: 1000\n', /line 3: "length:" without an "offset:"/],
    ['zero length', head + 'offset: 0\nlength: 0\n', /line 4: length is 0/],
    ['overlapping extents', head + pair(0, 8192) + pair(4096, 4096), /line 5: offset 0x1000 is before the end of the previous extent 0x0\+8192/],
    ['unsorted extents', head + pair(8192, 4096) + pair(0, 4096), /line 5: offset 0x0 is before the end of the previous extent 0x2000\+4096/],
    ['short sha1', head + pair(0, 4096) + 'sha1: abcd\n', /line 5: sha1 "abcd" is not 40 hex digits/],
    ['sha1 before its piece is complete', head + pair(0, 8 * MiB) + sha('a') + pair(8 * MiB, 8 * MiB), /line 5: sha1 of piece 0 comes before its piece is complete \(8388608 bytes/],
    ['more sha1 lines than pieces', head + pair(0, 4096) + sha('a') + sha('b'), /line 6: sha1 of piece 1, but 4096 bytes of extents make only 1 pieces/],
    ['bad block_size', 'block_size: 4k\n', /line 1: block_size "4k" is not a decimal number/],
    ['block_size not a power of two', 'block_size: 3000\n', /line 1: block_size 3000 is not a power of two/],
    ['extent past the device', head + pair(0, 4096) + pair(32768 * 4096 - 4096, 8192), /line 5: extent 0x7fff000\+8192 ends past the device \(blocks_total 32768 × block_size 4096/],
  ]
  it.each(bad)('%s', (_what, text, message) => {
    expect(() => parsePartcloneInfo(text, 'x.info')).toThrow(PartcloneInfoError)
    expect(() => parsePartcloneInfo(text, 'x.info')).toThrow(message)
  })

  it('no extents at all', () => {
    expect(() => parsePartcloneInfo(head, 'x.info')).toThrow(/x\.info: no "offset:"\/"length:" pairs/)
    expect(() => parsePartcloneInfo('', 'x.info')).toThrow(/no "offset:"\/"length:" pairs/)
  })

  it('missing sha1 lines: parsed, but not complete', () => {
    const info = parsePartcloneInfo(head + pair(0, 16 * MiB) + sha('a') + pair(16 * MiB, 4096), 'x.info')
    expect(info.complete).toBe(false)
    expect(info.pieces.length).toBe(20)
    expect(info.totalLength).toBe(16 * MiB + 4096)
  })

  it('the final flush of a partial piece after the last pair, CRLF line ends, short hex and no header are accepted', () => {
    const text = (pair(0, 16 * MiB) + sha('a') + 'offset: 1000000\nlength: 1000\n' + sha('b')).replace(/\n/g, '\r\n')
    const info = parsePartcloneInfo(text, 'x.info')
    expect(info.complete).toBe(true)
    expect(info.blockSize).toBeNull()
    expect(info.extents[1]).toEqual({ offset: 16 * MiB, length: 4096, name: '1000000' })
    expect(info.pieces.subarray(20).toString('hex')).toBe('b'.repeat(40))
  })

  it('a missing file is named', async () => {
    await expect(readPartcloneInfo('/nonexistent/torrent.info')).rejects.toThrow('/nonexistent/torrent.info does not exist')
  })
})
