/**
 * A generated ext4 image for demos and benchmarks: `mkfs.ext4 -d` over a
 * directory of pseudo-random files (a few large, many small, a tree), made
 * without mounting, so it works wherever e2fsprogs is installed.
 */
import { execFileSync } from 'node:child_process'
import { createCipheriv, createHash } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** Fast pseudo-random bytes: AES-CTR over zeros, keyed by `seed`. */
export function pseudoRandomBytes(size: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest()
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size))
}

export interface Ext4Image {
  readonly path: string
  /** Image size in bytes. */
  readonly size: number
  /** Bytes of file data written into it. */
  readonly dataBytes: number
}

/**
 * Make `dir/name` holding about `dataBytes` of file data; the image is sized
 * 1.5× the data plus 32 MiB so it has free blocks (the gaps a torrent skips).
 */
export function makeExt4Image(dir: string, dataBytes: number, name = 'golden.img'): Ext4Image {
  const data = join(dir, `${name}.d`)
  mkdirSync(join(data, 'usr/lib'), { recursive: true })
  mkdirSync(join(data, 'etc'), { recursive: true })
  const MiB = 1024 * 1024
  let written = 0
  let i = 0
  // Small files first (configuration-like), then large ones (libraries, images) up to the total.
  for (; i < 64 && written < dataBytes / 8; i++) {
    const n = 1000 + ((i * 7919) % 60_000)
    writeFileSync(join(data, 'etc', `conf${i}`), pseudoRandomBytes(n, `small-${i}`))
    written += n
  }
  for (; written < dataBytes; i++) {
    const n = Math.min(8 * MiB + ((i * 104729) % MiB), dataBytes - written)
    writeFileSync(join(data, 'usr/lib', `lib${i}.so`), pseudoRandomBytes(n, `large-${i}`))
    written += n
  }
  const path = join(dir, name)
  const size = Math.ceil((written * 1.5 + 32 * MiB) / MiB) * MiB
  writeFileSync(path, '')
  execFileSync('truncate', ['-s', String(size), path])
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'golden', '-d', data, path])
  rmSync(data, { recursive: true, force: true })
  return { path, size, dataBytes: written }
}
