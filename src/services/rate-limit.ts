/**
 * A token bucket for the upload rate limit: `take(n)` says how long to wait
 * before sending n bytes so that the long-run rate stays at the limit. A rate
 * of 0 means no limit.
 */
export class TokenBucket {
  private tokens = 0
  private stamp: number

  constructor(
    private rate: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.stamp = now()
    this.tokens = this.burst()
  }

  get limit(): number {
    return this.rate
  }

  setRate(rate: number): void {
    if (rate === this.rate) return
    this.refill()
    this.rate = rate
    this.tokens = Math.min(this.tokens, this.burst())
  }

  /** Up to a quarter second of data may go out at once. */
  private burst(): number {
    return Math.max(this.rate / 4, 64 * 1024)
  }

  private refill(): void {
    const t = this.now()
    if (this.rate > 0) this.tokens = Math.min(this.burst(), this.tokens + ((t - this.stamp) * this.rate) / 1000)
    this.stamp = t
  }

  /** Account for `bytes` about to be sent; returns the milliseconds to wait first (0: send now). */
  take(bytes: number): number {
    if (this.rate <= 0) return 0
    this.refill()
    this.tokens -= bytes
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000
  }
}
