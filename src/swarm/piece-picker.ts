/**
 * Which piece to start next: rarest first (fewest connected peers have it,
 * random among equals, so that peers spread over different pieces and trade),
 * or lowest index first when sequential order is asked for.
 *
 * Missing pieces sit in buckets by availability, so a pick costs a walk over
 * the rarest bucket the peer can serve, not a scan of every piece.
 *
 * While the resume check runs beside the download, a missing piece may be
 * unchecked (the target may hold it already): pick() offers only checked
 * ones, and pickUnchecked() the one to check next when those run out.
 */
const MISSING = 0
const ACTIVE = 1
const DONE = 2

export class PiecePicker {
  private readonly avail: Int32Array
  private readonly state: Uint8Array
  /** buckets[a]: missing pieces that exactly `a` connected peers have. */
  private readonly buckets: number[][] = [[]]
  /** Position of a missing piece inside its bucket. */
  private readonly pos: Int32Array
  private missingCount: number
  private firstMissing = 0
  /** Pieces the resume check has not read back yet (all 0 when it is not running beside the download). */
  private unchecked?: Uint8Array
  private uncheckedCount = 0

  constructor(
    readonly pieceCount: number,
    readonly sequential = false,
    private readonly random: () => number = Math.random,
  ) {
    this.avail = new Int32Array(pieceCount)
    this.state = new Uint8Array(pieceCount)
    this.pos = new Int32Array(pieceCount)
    const b0 = this.buckets[0]
    for (let i = 0; i < pieceCount; i++) {
      this.pos[i] = b0.length
      b0.push(i)
    }
    this.missingCount = pieceCount
  }

  /** Pieces neither held nor in progress. */
  get missing(): number {
    return this.missingCount
  }

  availability(index: number): number {
    return this.avail[index]
  }

  isMissing(index: number): boolean {
    return this.state[index] === MISSING
  }

  private bucket(a: number): number[] {
    while (this.buckets.length <= a) this.buckets.push([])
    return this.buckets[a]
  }

  private unlink(index: number): void {
    const b = this.buckets[this.avail[index]]
    const at = this.pos[index]
    const last = b.pop()!
    if (last !== index) {
      b[at] = last
      this.pos[last] = at
    }
  }

  private link(index: number): void {
    const b = this.bucket(this.avail[index])
    this.pos[index] = b.length
    b.push(index)
  }

  private shift(index: number, delta: number): void {
    if (this.state[index] === MISSING) this.unlink(index)
    this.avail[index] += delta
    if (this.state[index] === MISSING) this.link(index)
  }

  /** A connected peer has (or announced) this piece. */
  peerHas(index: number): void {
    this.shift(index, 1)
  }

  /** A peer that had this piece went away. */
  peerLost(index: number): void {
    if (this.avail[index] > 0) this.shift(index, -1)
  }

  private setState(index: number, s: number): void {
    const was = this.state[index]
    if (was === s) return
    if (was === MISSING) {
      this.unlink(index)
      this.missingCount--
    }
    this.state[index] = s
    if (s === MISSING) {
      this.link(index)
      this.missingCount++
      if (index < this.firstMissing) this.firstMissing = index
    }
  }

  /** Every piece is unchecked (the resume check begins beside the download). */
  markAllUnchecked(): void {
    this.unchecked = new Uint8Array(this.pieceCount).fill(1)
    this.uncheckedCount = this.pieceCount
  }

  /** The resume check read this piece back (intact: setDone follows). */
  setChecked(index: number): void {
    if (!this.unchecked?.[index]) return
    this.unchecked[index] = 0
    if (--this.uncheckedCount === 0) this.unchecked = undefined
  }

  /** The check ends early (the probe found a fresh disk): every piece counts as checked. */
  clearUnchecked(): void {
    this.unchecked = undefined
    this.uncheckedCount = 0
  }

  /** Pieces the resume check has yet to read back. */
  get uncheckedPieces(): number {
    return this.uncheckedCount
  }

  /** Started: no longer offered by pick(). */
  setActive(index: number): void {
    this.setState(index, ACTIVE)
  }

  /** Verified and written. */
  setDone(index: number): void {
    this.setState(index, DONE)
  }

  /** Back to missing (aborted, or failed its hash). */
  setMissing(index: number): void {
    this.setState(index, MISSING)
  }

  /**
   * The next piece to start from a peer that has the pieces `has` says, or
   * undefined when it has none we miss (or only unchecked ones).
   */
  pick(has: (index: number) => boolean): number | undefined {
    const u = this.unchecked
    return this.walk(u ? (i) => u[i] === 0 && has(i) : has)
  }

  /** The unchecked piece pick() would have offered: the resume check reads it next. */
  pickUnchecked(has: (index: number) => boolean): number | undefined {
    const u = this.unchecked
    return u ? this.walk((i) => u[i] === 1 && has(i)) : undefined
  }

  /** A missing piece no connected peer has (checked already), from a random start: what a web seed is asked for. */
  pickUnheld(ok: (index: number) => boolean): number | undefined {
    const u = this.unchecked
    const b = this.buckets[0]
    const n = b.length
    const start = Math.floor(this.random() * n)
    for (let k = 0; k < n; k++) {
      const i = b[(start + k) % n]
      if ((!u || u[i] === 0) && ok(i)) return i
    }
    return undefined
  }

  private walk(ok: (index: number) => boolean): number | undefined {
    if (this.missingCount === 0) return undefined
    if (this.sequential) {
      while (this.firstMissing < this.pieceCount && this.state[this.firstMissing] !== MISSING) this.firstMissing++
      for (let i = this.firstMissing; i < this.pieceCount; i++) if (this.state[i] === MISSING && ok(i)) return i
      return undefined
    }
    for (let a = 1; a < this.buckets.length; a++) {
      const b = this.buckets[a]
      const n = b.length
      if (n === 0) continue
      const start = Math.floor(this.random() * n)
      for (let k = 0; k < n; k++) {
        const i = b[(start + k) % n]
        if (ok(i)) return i
      }
    }
    return undefined
  }
}
