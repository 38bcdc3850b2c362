/**
 * blockswarm as a library, from another TypeScript project: make an extent
 * torrent of an image, seed it from one Session and deploy it with another
 * onto an image file, both in this process over loopback, then check the
 * bytes. Run: node deploy-in-process.js IMAGE TARGET (TARGET: an existing
 * file at least as large as IMAGE).
 */
import { readFile } from 'node:fs/promises'
import { createTorrent, parseTorrent, Session, type TorrentStatus } from 'blockswarm'

async function main(image: string, target: string): Promise<void> {
  const made = await createTorrent({ source: image, name: 'disk', mode: 'zero', pieceLength: 64 * 1024 })
  const torrent = parseTorrent(made.buffer)
  const seeder = await Session.start({ port: 0, bind: '127.0.0.1' })
  const node = await Session.start({ port: 0, bind: '127.0.0.1', peers: [`127.0.0.1:${seeder.port}`] })
  try {
    await seeder.add(made.buffer, { target: image, seedingMode: true })
    const done = new Promise<TorrentStatus>((resolve, reject) => {
      node.on('change', (s: TorrentStatus) => {
        if (s.state === 'error') reject(new Error(s.error))
        else if (s.complete) resolve(s)
      })
    })
    await node.add(made.buffer, { target, skipCheck: true })
    const s = await done
    const [a, b] = [await readFile(image), await readFile(target)]
    const same = torrent.extents.every((e) => a.subarray(e.offset, e.offset + e.length).equals(b.subarray(e.offset, e.offset + e.length)))
    if (!same) throw new Error('the target differs from the image inside the extents')
    console.log(JSON.stringify({ ok: true, infoHash: s.infoHash, pieces: s.piecesDone, bytes: s.totalDone }))
  } finally {
    await node.close()
    await seeder.close()
  }
}

const [image, target] = process.argv.slice(2)
main(image, target).catch((err: Error) => {
  console.error(err.message)
  process.exit(1)
})
