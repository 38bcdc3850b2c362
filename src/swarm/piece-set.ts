/**
 * The set of pieces we hold, kept as the wire's bitfield (piece 0 is the
 * high bit of byte 0), with a running count.
 */
export class PieceSet {
  readonly bits: Buffer
  private held = 0

  constructor(readonly size: number) {
    this.bits = Buffer.alloc(Math.ceil(size / 8))
  }

  has(index: number): boolean {
    return (this.bits[index >> 3] & (0x80 >> (index & 7))) !== 0
  }

  /** Add a piece; returns false if it was already there. */
  add(index: number): boolean {
    if (this.has(index)) return false
    this.bits[index >> 3] |= 0x80 >> (index & 7)
    this.held++
    return true
  }

  addAll(): void {
    for (let i = 0; i < this.size; i++) this.add(i)
  }

  get count(): number {
    return this.held
  }

  get complete(): boolean {
    return this.held === this.size
  }
}
