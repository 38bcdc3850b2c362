/**
 * Linux swap: only the header page matters (signature, UUID, label); the rest
 * is scratch space that the kernel overwrites, so it is never copied.
 */
import type { FsReader } from './types.js'

const SIGNATURES = ['SWAPSPACE2', 'SWAP-SPACE']
/** Page sizes a swap header may be written for: the signature ends the first page. */
const PAGE_SIZES = [4096, 8192, 16384, 65536]

function pageSize(head: Buffer): number | undefined {
  return PAGE_SIZES.find((p) => p <= head.length && SIGNATURES.includes(head.toString('latin1', p - 10, p)))
}

export const swapReader: FsReader = {
  mode: 'swap',
  detect: (head) => pageSize(head) !== undefined,
  async scan(volume) {
    const head = await volume.source.read(volume.base, Math.min(65536, volume.length))
    const page = pageSize(head)
    if (page === undefined) throw new Error('no swap signature')
    return { fs: 'swap', blockSize: page, ranges: [{ offset: volume.base, length: page }] }
  },
}
