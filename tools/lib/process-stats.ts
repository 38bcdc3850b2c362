/**
 * What a benchmark reads about its child processes from /proc: CPU seconds
 * (of a live process, or of the children reaped so far) and peak RSS.
 * Linux only; clock ticks of 1/100 s (USER_HZ).
 */
import { readFileSync } from 'node:fs'

/** The fields of /proc/PID/stat after the command name, 0-based from the state field. */
function statFields(pid: number | 'self'): string[] {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
}

/** CPU seconds of reaped children so far (cutime + cstime of /proc/self/stat). */
export function reapedCpu(): number {
  const f = statFields('self')
  return (Number(f[13]) + Number(f[14])) / 100
}

/** CPU seconds of a live process, all its threads (utime + stime). */
export function liveCpu(pid: number): number {
  const f = statFields(pid)
  return (Number(f[11]) + Number(f[12])) / 100
}

/** A process's peak RSS (VmHWM) and RssAnon now, bytes; undefined once it is gone. */
export function memoryOf(pid: number): { hwm: number; anon: number } | undefined {
  let status: string
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8')
  } catch {
    return undefined
  }
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024
  return { hwm: kb('VmHWM'), anon: kb('RssAnon') }
}

/** The process is gone or a zombie. */
export function processGone(pid: number): boolean {
  try {
    return statFields(pid)[0].startsWith('Z')
  } catch {
    return true
  }
}

/** A plain-text table: the first column left-aligned, the others right-aligned. */
export function textTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]) => cells.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ')
  return [line(header), ...rows.map(line)].join('\n')
}
