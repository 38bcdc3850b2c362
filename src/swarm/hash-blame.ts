/**
 * Whom to blame for a piece that failed its hash. If one peer sent the whole
 * piece, it is the culprit. If several did, the digest of every block and
 * its sender are kept; when the piece later passes, each kept block is
 * compared with the good data and only the senders of blocks that differ are
 * blamed — innocent peers that shared the piece are never banned.
 */
import { createHash } from 'node:crypto'
import { type ActivePiece, BLOCK_SIZE } from './active-piece.js'
import type { PeerIdentity } from './ban-list.js'

interface KeptBlock {
  readonly block: number
  readonly sender: PeerIdentity
  readonly digest: Buffer
}

const blockDigest = (data: Uint8Array) => createHash('sha1').update(data).digest()

export class HashBlame {
  private readonly kept = new Map<number, KeptBlock[]>()

  /** Pieces with kept blocks: to be fetched from a single peer next time. */
  isSuspect(index: number): boolean {
    return this.kept.has(index)
  }

  /**
   * A piece failed. Returns the peers to ban now: the sole sender, if there
   * was one; otherwise none yet (its blocks are kept for comparison).
   */
  failed<P extends { identity: PeerIdentity }>(piece: ActivePiece<P>, data: Buffer): PeerIdentity[] {
    const contributors = piece.contributors()
    // a sole sender is the culprit; blocks kept from an earlier failure stay for comparison
    if (contributors.length === 1) return [contributors[0].identity]
    const list = this.kept.get(piece.index) ?? []
    for (let b = 0; b < piece.blockCount; b++) {
      const sender = piece.senders[b]
      if (!sender) continue
      const at = b * BLOCK_SIZE
      list.push({ block: b, sender: sender.identity, digest: blockDigest(data.subarray(at, at + piece.blockLength(b))) })
    }
    this.kept.set(piece.index, list)
    return []
  }

  /** A piece passed: the senders of kept blocks that differ from the good data. */
  passed(index: number, data: Buffer): PeerIdentity[] {
    const list = this.kept.get(index)
    if (!list) return []
    this.kept.delete(index)
    const guilty = new Map<string, PeerIdentity>()
    const good = new Map<number, Buffer>()
    for (const k of list) {
      let d = good.get(k.block)
      if (!d) {
        const at = k.block * BLOCK_SIZE
        d = blockDigest(data.subarray(at, Math.min(at + BLOCK_SIZE, data.length)))
        good.set(k.block, d)
      }
      if (!d.equals(k.digest)) guilty.set(`${k.sender.ip}:${k.sender.port}:${k.sender.peerId}`, k.sender)
    }
    return [...guilty.values()]
  }
}
