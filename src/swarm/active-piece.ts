/**
 * A piece being downloaded: its buffer (taken from the memory budget), and
 * for each 16 KiB block whether it is missing, requested (and from whom) or
 * received (and from whom, to know whom to blame if the hash fails).
 * Several peers fill one piece block by block, so a small budget of pieces
 * still keeps many peers busy.
 */
export const BLOCK_SIZE = 16 * 1024

const MISSING = 0
const REQUESTED = 1
const RECEIVED = 2

export class ActivePiece<P> {
  readonly blockCount: number
  private readonly state: Uint8Array
  private readonly askers: (Set<P> | undefined)[]
  /** Who sent each received block. */
  readonly senders: (P | undefined)[]
  private missingBlocks: number
  private receivedBlocks = 0
  private cursor = 0
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
      const a = this.askers[b]!
      if (a.size < maxAskers && !a.has(peer)) return b
    }
    return -1
  }

  markRequested(block: number, peer: P): void {
    if (this.state[block] === RECEIVED) throw new Error(`block ${block} of piece ${this.index} is already received`)
    if (this.state[block] === MISSING) {
      this.state[block] = REQUESTED
      this.missingBlocks--
      this.askers[block] = new Set()
    }
    this.askers[block]!.add(peer)
  }

  /** `peer` will not deliver `block` (cancelled, timed out, choked, gone); true if nobody else is asked for it now. */
  dropRequest(block: number, peer: P): boolean {
    if (this.state[block] !== REQUESTED) return false
    const a = this.askers[block]!
    a.delete(peer)
    if (a.size > 0) return false
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
  receive(block: number, data: Uint8Array, peer: P): P[] | undefined {
    if (this.state[block] === RECEIVED) return undefined
    if (this.state[block] === MISSING) this.missingBlocks--
    const others = [...(this.askers[block] ?? [])].filter((p) => p !== peer)
    this.buffer.set(data, block * BLOCK_SIZE)
    this.state[block] = RECEIVED
    this.askers[block] = undefined
    this.senders[block] = peer
    this.receivedBlocks++
    return others
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
    return n
  }

  /** The distinct peers that sent blocks of this piece. */
  contributors(): P[] {
    return [...new Set(this.senders.filter((p): p is P => p !== undefined))]
  }
}
