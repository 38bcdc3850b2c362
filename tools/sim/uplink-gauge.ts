/**
 * Whether this node's uplink is saturated, as far as it can tell without
 * being told its line rate: the bytes it put on its connections over the
 * last WINDOW_MS against the most it has put out in such a window lately
 * (the peak decays, halving every PEAK_HALF_LIFE_MS, so one burst does not
 * set the bar for good). Until a first window has been seen, the uplink
 * counts as saturated: nothing is gained by guessing.
 *
 * Depth-first serving (upload-turns.ts, `npm run sim -- --turns-measured`)
 * asks it whether one turn more is worth granting: only while the turns
 * held leave part of the uplink idle. It is what an engine could know of
 * its uplink (bytes counted once the receiver announced their piece), as
 * against the simulator's exact flow rates.
 */

/** The window over which the current rate is taken, ms (a tenth of it a slot). */
export const WINDOW_MS = 1000
/** The peak halves in this long without a window to renew it, ms. */
export const PEAK_HALF_LIFE_MS = 30_000
/** Saturated: the current rate is at least this share of the peak. */
export const SATURATED_SHARE = 0.9

const SLOTS = 10

export class UplinkGauge {
  private readonly slots = new Float64Array(SLOTS)
  private readonly slotMs: number
  private slot = -1
  private peak = 0
  private peakAt = 0
  /** A full window has passed since the first byte. */
  private warm = false
  private firstSlot = -1

  constructor(
    private readonly now: () => number = () => performance.now(),
    private readonly windowMs = WINDOW_MS,
  ) {
    this.slotMs = windowMs / SLOTS
  }

  private advance(t: number): void {
    const s = Math.floor(t / this.slotMs)
    if (s === this.slot) return
    if (this.slot >= 0) {
      // the window that ended with the slot just left: a candidate peak
      this.notePeak(this.sum() / (this.windowMs / 1000), t)
      if (s - this.slot >= SLOTS) this.slots.fill(0)
      else for (let k = this.slot + 1; k <= s; k++) this.slots[k % SLOTS] = 0
    }
    this.slot = s
    if (this.firstSlot >= 0 && s - this.firstSlot >= SLOTS) this.warm = true
  }

  private sum(): number {
    let x = 0
    for (const v of this.slots) x += v
    return x
  }

  private notePeak(rate: number, t: number): void {
    if (!this.warm) return
    const decayed = this.peakNow(t)
    if (rate >= decayed) {
      this.peak = rate
      this.peakAt = t
    }
  }

  private peakNow(t: number): number {
    return this.peak * 0.5 ** ((t - this.peakAt) / PEAK_HALF_LIFE_MS)
  }

  /** Bytes just put on a connection. */
  add(bytes: number): void {
    const t = this.now()
    this.advance(t)
    if (this.firstSlot < 0) this.firstSlot = this.slot
    this.slots[this.slot % SLOTS] += bytes
  }

  /** Bytes/s over the last window. */
  rate(): number {
    this.advance(this.now())
    return this.sum() / (this.windowMs / 1000)
  }

  /** Whether the uplink runs at SATURATED_SHARE of the most it has carried lately (true while that is unknown). */
  saturated(): boolean {
    const r = this.rate()
    const p = this.peakNow(this.now())
    return p === 0 || r >= SATURATED_SHARE * p
  }
}
