/**
 * Reading a .torrent file named on the command line: the one place every
 * command reads one. Bounded: a block device is never read as a torrent,
 * nor a file over MAX_TORRENT_BYTES, nor one whose first byte cannot start a
 * torrent (bencode dictionary, 'd') — the usual cause being swapped
 * arguments (`deploy /dev/sdb golden.torrent`), which would otherwise read
 * the whole disk into memory before failing.
 */
import { open } from 'node:fs/promises'
import { type ExtentTorrent, parseTorrent } from '../torrent/metainfo.js'
import { formatBytes } from '../util/size.js'

/** Larger than any torrent blockswarm makes: 20 bytes a piece plus ~60 bytes an extent. */
export const MAX_TORRENT_BYTES = 256 * 1024 * 1024

function notATorrent(path: string, why: string, usage?: string): Error {
  const hint = usage ? ` (arguments swapped? the usage is: ${usage})` : ''
  return new Error(`${path} looks like a disk image, not a torrent: ${why}${hint}`)
}

/** The bytes of a .torrent file; `usage` names the command's argument order for the swapped-arguments hint. */
export async function readTorrentFile(path: string, usage?: string): Promise<Buffer> {
  let fh
  try {
    fh = await open(path, 'r')
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  try {
    const st = await fh.stat()
    if (st.isBlockDevice()) throw notATorrent(path, 'it is a block device', usage)
    if (st.isDirectory()) throw new Error(`cannot read ${path}: it is a directory, not a .torrent file`)
    if (st.size > MAX_TORRENT_BYTES) throw notATorrent(path, `${formatBytes(st.size)} is larger than any torrent (at most ${formatBytes(MAX_TORRENT_BYTES)})`, usage)
    const first = Buffer.alloc(1)
    const { bytesRead } = await fh.read(first, 0, 1, 0)
    if (bytesRead === 1 && first[0] !== 0x64 /* 'd' */) throw notATorrent(path, `it starts with byte 0x${first[0].toString(16).padStart(2, '0')}, not a bencoded dictionary ('d')`, usage)
    return await fh.readFile()
  } finally {
    await fh.close()
  }
}

export async function loadTorrentFile(path: string, usage?: string): Promise<ExtentTorrent> {
  return parseTorrent(await readTorrentFile(path, usage), { source: path })
}
