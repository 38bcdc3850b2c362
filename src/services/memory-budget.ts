/**
 * A fixed budget of bytes for in-flight piece buffers, shared by every
 * torrent of a session. A buffer is allocated only after its bytes are taken
 * from the budget, and the bytes come back when the piece is written (or
 * dropped), so memory stays bounded however many peers send data.
 *
 * Freed piece buffers are kept for reuse while the budget has room for them:
 * allocating a fresh 16 MiB buffer per piece makes V8 run full garbage
 * collections for the external memory (measured: ~30% of a download's CPU).
 *
 * One piece larger than the whole budget may still be taken when nothing else
 * is held, so a torrent with huge pieces can make progress (one at a time);
 * its buffer is kept for the next one like any other.
 */
import { EventEmitter } from 'node:events'

export class MemoryBudget extends EventEmitter {
  private used = 0
  /** Bytes of free buffers kept for reuse, by size. */
  private pooled = 0
  private readonly pool = new Map<number, Buffer[]>()
  private readonly waiters: { bytes: number; resolve: () => void }[] = []

  constructor(readonly capacity: number) {
    super()
    if (!Number.isSafeInteger(capacity) || capacity <= 0) throw new RangeError(`memory budget ${capacity} is not a positive number of bytes`)
  }

  get inUse(): number {
    return this.used
  }

  private fits(bytes: number): boolean {
    return this.used + bytes <= this.capacity || this.used === 0
  }

  /** Drop kept buffers until `bytes` more fit beside them. */
  private makeRoom(bytes: number): void {
    for (const [size, list] of this.pool) {
      while (list.length > 0 && this.used + this.pooled + bytes > this.capacity) {
        list.pop()
        this.pooled -= size
      }
      if (list.length === 0) this.pool.delete(size)
    }
  }

  /** Take `bytes` now if the budget allows (and nobody waits ahead); false otherwise. */
  tryTake(bytes: number): boolean {
    if (this.waiters.length > 0 || !this.fits(bytes)) return false
    this.makeRoom(bytes)
    this.used += bytes
    return true
  }

  /** Take `bytes`, waiting (first come, first served) until the budget allows. */
  take(bytes: number): Promise<void> {
    if (this.tryTake(bytes)) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push({ bytes, resolve }))
  }

  /** Give bytes back; wakes waiters, then tells listeners ('available') that room was made. */
  give(bytes: number): void {
    this.used -= bytes
    if (this.used < 0) throw new Error(`memory budget: gave back ${-this.used} bytes more than were taken`)
    while (this.waiters.length > 0 && this.fits(this.waiters[0].bytes)) {
      const w = this.waiters.shift()!
      this.makeRoom(w.bytes)
      this.used += w.bytes
      w.resolve()
    }
    if (this.waiters.length === 0) this.emit('available')
  }

  /** A buffer of `size` bytes if the budget allows (a kept one when there is one), else undefined. */
  tryAlloc(size: number): Buffer | undefined {
    const list = this.pool.get(size)
    if (list && list.length > 0 && this.waiters.length === 0 && this.fits(size)) {
      this.pooled -= size
      this.used += size
      return list.pop()!
    }
    return this.tryTake(size) ? Buffer.allocUnsafeSlow(size) : undefined
  }

  /** Return a buffer from tryAlloc (or its replacement after a worker round trip): kept for reuse if there is room. */
  free(buf: Buffer): void {
    const size = buf.length
    const whole = buf.byteOffset === 0 && buf.buffer.byteLength === size
    // giving `size` back and keeping the buffer leaves used + pooled unchanged; a piece
    // larger than the budget (held alone) is kept too, or every piece would be a new one
    const alone = this.used === size && this.pooled === 0
    if (whole && this.waiters.length === 0 && (this.used + this.pooled <= this.capacity || alone)) {
      const list = this.pool.get(size) ?? []
      list.push(buf)
      this.pool.set(size, list)
      this.pooled += size
    }
    this.give(size)
  }
}
