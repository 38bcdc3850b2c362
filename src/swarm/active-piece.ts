/**
 * A piece being downloaded: its buffer (taken from the memory budget), and
 * for each 16 KiB block whether it is missing, requested (and from whom) or
 * received (and from whom, to know whom to blame if the hash fails).
 * Several peers fill one piece block by block, so a small budget of pieces
 * still keeps many peers busy.
 *
 * Its SHA-1 is computed as the blocks arrive, over the received blocks from
 * the start (blocks come mostly in order): while the block is still in the
 * CPU's cache, in steps of microseconds rather than one long pass over the
 * piece, and the piece can be written the moment its last block is in.
 */
import { createHash, type Hash } from 'node:crypto'

import { BLOCK_SIZE } from './wire-messages.js'

export { BLOCK_SIZE }

/** Who was asked for a block: one peer (the usual case, no Set per block), or several in the endgame. */
type Askers<P> = P | Set<P> | undefined

const NOBODY: readonly never[] = []

const MISSING = 0
const REQUESTED = 1
const RECEIVED = 2

export class ActivePiece<P> {
  readonly blockCount: number
  private readonly state: Uint8Array
  private readonly askers: Askers<P>[]
  /** Who sent each received block. */
  readonly senders: (P | undefined)[]
  private missingBlocks: number
  private receivedBlocks = 0
  private cursor = 0
  private hash: Hash = createHash('sha1')
  /** Blocks from the start that are in `hash`. */
  private hashedBlocks = 0
  /** After a hash failure with several senders: the one peer allowed to fetch this piece again. */
  soleSource?: P

  constructor(
    readonly index: number,
    readonly length: number,
    readonly buffer: Buffer,
  ) {
    this.blockCount = Math.ceil(length / BLOCK_SIZE)
    this.state = new Uint8Array(this.blockCount)
    this.askers = new Array(this.blockCount)
    this.senders = new Array(this.blockCount)
    this.missingBlocks = this.blockCount
  }

  blockOffset(block: number): number {
    return block * BLOCK_SIZE
  }

  blockLength(block: number): number {
    return Math.min(BLOCK_SIZE, this.length - block * BLOCK_SIZE)
  }

  /** Blocks nobody has been asked for. */
  get missing(): number {
    return this.missingBlocks
  }

  get complete(): boolean {
    return this.receivedBlocks === this.blockCount
  }

  /** Bytes of the blocks received so far (the last block at its own length). */
  get receivedBytes(): number {
    const last = this.blockCount - 1
    const short = this.state[last] === RECEIVED ? BLOCK_SIZE - this.blockLength(last) : 0
    return this.receivedBlocks * BLOCK_SIZE - short
  }

  /** The first block nobody has been asked for, or -1. */
  nextMissing(): number {
    if (this.missingBlocks === 0) return -1
    while (this.cursor < this.blockCount && this.state[this.cursor] !== MISSING) this.cursor++
    return this.cursor < this.blockCount ? this.cursor : -1
  }

  /** Endgame: a block asked of fewer than `maxAskers` others, not yet of `peer`, not yet received; or -1. */
  nextDuplicate(peer: P, maxAskers: number): number {
    for (let b = 0; b < this.blockCount; b++) {
      if (this.state[b] !== REQUESTED) continue
      const a = this.askers[b]
      const many = a instanceof Set
      if ((many ? a.size : 1) < maxAskers && !(many ? a.has(peer) : a === peer)) return b
    }
    return -1
  }

  markRequested(block: number, peer: P): void {
    if (this.state[block] === RECEIVED) throw new Error(`block ${block} of piece ${this.index} is already received`)
    if (this.state[block] === MISSING) {
      this.state[block] = REQUESTED
      this.missingBlocks--
      this.askers[block] = peer
      return
    }
    const a = this.askers[block]
    if (a instanceof Set) a.add(peer)
    else if (a !== peer) this.askers[block] = new Set([a as P, peer])
  }

  /** `peer` will not deliver `block` (cancelled, timed out, choked, gone); true if nobody else is asked for it now. */
  dropRequest(block: number, peer: P): boolean {
    if (this.state[block] !== REQUESTED) return false
    const a = this.askers[block]
    if (a instanceof Set) {
      a.delete(peer)
      if (a.size > 0) return false
    } else if (a !== peer) {
      return false
    }
    this.state[block] = MISSING
    this.askers[block] = undefined
    this.missingBlocks++
    if (block < this.cursor) this.cursor = block
    return true
  }

  /**
   * Take a block's data from `peer`. Returns the other peers that were also
   * asked for it (to send them a cancel), or undefined if the block was
   * already received from someone else.
   */
  receive(block: number, data: Uint8Array, peer: P): readonly P[] | undefined {
    if (this.state[block] === RECEIVED) return undefined
    if (this.state[block] === MISSING) this.missingBlocks--
    const a = this.askers[block]
    const others = a instanceof Set ? [...a].filter((p) => p !== peer) : a === undefined || a === peer ? NOBODY : [a]
    this.buffer.set(data, block * BLOCK_SIZE)
    this.state[block] = RECEIVED
    this.askers[block] = undefined
    this.senders[block] = peer
    this.receivedBlocks++
    if (block === this.hashedBlocks) this.advanceHash()
    return others
  }

  /** Hash the received blocks that follow the hashed ones, in one update. */
  private advanceHash(): void {
    let end = this.hashedBlocks
    while (end < this.blockCount && this.state[end] === RECEIVED) end++
    if (end === this.hashedBlocks) return
    this.hash.update(this.buffer.subarray(this.hashedBlocks * BLOCK_SIZE, Math.min(end * BLOCK_SIZE, this.length)))
    this.hashedBlocks = end
  }

  /** The SHA-1 of the whole piece, once every block is received (once). */
  digest(): Buffer {
    if (!this.complete) throw new Error(`piece ${this.index} is not complete: ${this.blockCount - this.receivedBlocks} blocks missing`)
    this.advanceHash()
    return this.hash.digest()
  }

  /** Forget every block `peer` sent (it was banned): they go back to missing. Returns how many. */
  discardFrom(peer: P): number {
    let n = 0
    for (let b = 0; b < this.blockCount; b++) {
      if (this.state[b] === RECEIVED && this.senders[b] === peer) {
        this.state[b] = MISSING
        this.senders[b] = undefined
        this.receivedBlocks--
        this.missingBlocks++
        if (b < this.cursor) this.cursor = b
        n++
      }
    }
    if (n > 0) {
      // a discarded block may be in the hash: start it again over what is left
      this.hash = createHash('sha1')
      this.hashedBlocks = 0
      this.advanceHash()
    }
    return n
  }

  /** The distinct peers that sent blocks of this piece. */
  contributors(): P[] {
    return [...new Set(this.senders.filter((p): p is P => p !== undefined))]
  }
}
