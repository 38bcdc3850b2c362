/**
 * Bytes per second over a short sliding window (1-second slots), for peer and
 * torrent rates. Cheap enough to call on every 16 KiB block.
 */
const SLOTS = 5

export class RateMeter {
  private readonly slots = new Float64Array(SLOTS)
  private slotSecond = 0
  /** All bytes ever counted. */
  total = 0
  /** Time (ms since the epoch) of the last count, 0 if never. */
  last = 0
  /** Time (ms since the epoch) of the first count, 0 if never. */
  first = 0

  constructor(private readonly now: () => number = Date.now) {}

  private advance(second: number): void {
    if (second - this.slotSecond >= SLOTS) this.slots.fill(0)
    else for (let s = this.slotSecond + 1; s <= second; s++) this.slots[s % SLOTS] = 0
    this.slotSecond = second
  }

  add(bytes: number): void {
    const t = this.now()
    const second = Math.floor(t / 1000)
    if (second !== this.slotSecond) this.advance(second)
    this.slots[second % SLOTS] += bytes
    this.total += bytes
    if (this.first === 0) this.first = t
    this.last = t
  }

  /** Average over the last full slots plus the current partial one, in bytes/s. */
  rate(): number {
    const t = this.now()
    const second = Math.floor(t / 1000)
    if (second !== this.slotSecond) this.advance(second)
    let sum = 0
    for (const v of this.slots) sum += v
    const span = SLOTS - 1 + (t % 1000) / 1000
    return sum / span
  }
}
