/**
 * Slow start (as EZIO's --slow-start): the upload cap starts at one step and
 * grows by a step every period, so a seeder does not flood a network (or a
 * switch) the moment hundreds of nodes connect; after `steps` periods the
 * ramp ends and only the plain upload limit (if any) remains.
 */
export interface SlowStart {
  /** Cap growth per period, bytes/s (default 10 MiB/s). */
  readonly step: number
  /** Period length, ms (default 10 s). */
  readonly period: number
  /** Periods until the ramp ends (default 10). */
  readonly steps: number
}

export const DEFAULT_SLOW_START: SlowStart = { step: 10 * 1024 * 1024, period: 10_000, steps: 10 }

/** The ramp's cap `elapsed` ms after it began, bytes/s; 0 once the ramp is over (no cap). */
export function slowStartCap(s: SlowStart, elapsed: number): number {
  const k = Math.floor(Math.max(0, elapsed) / s.period)
  return k >= s.steps ? 0 : s.step * (k + 1)
}

/** The tighter of two limits where 0 means "no limit". */
export function tighterLimit(a: number, b: number): number {
  if (a <= 0) return b
  if (b <= 0) return a
  return Math.min(a, b)
}
