/**
 * Making byte ranges of a target read as zeros (the gaps of a "zero" torrent).
 * Large ranges are handed to the kernel — `blkdiscard -z` (BLKZEROOUT) on a
 * block device, `fallocate --punch-hole` on a file — and checked; small ones,
 * unaligned edges and anything the tools refuse get written zeros from one
 * shared buffer, in bounded chunks.
 */
import { execFile } from 'node:child_process'
import type { FileHandle } from 'node:fs/promises'
import type { ByteRange } from '../torrent/extents.js'
import { readFully, writeFully } from './positioned-io.js'

/** Below this, spawning a tool costs more than writing the zeros. */
export const OFFLOAD_MIN = 4 * 1024 * 1024
/** Ranges handed to blkdiscard start and end on this boundary (a multiple of every logical block size). */
const BLOCK_ALIGN = 4096
const ZEROS = Buffer.alloc(1024 * 1024)

export interface ZeroTarget {
  readonly fh: FileHandle
  readonly path: string
  readonly kind: 'block' | 'file'
}

export interface ZeroReport {
  /** Bytes zeroed by blkdiscard -z / fallocate --punch-hole. */
  offloaded: number
  /** Bytes zeroed by writing zeros. */
  written: number
  /** Why offloading was given up, if it was (tool missing, refused, or left data behind). */
  offloadFailure?: string
}

function runTool(cmd: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(cmd, args, (err, _stdout, stderr) => {
      resolve(err ? `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}` : undefined)
    })
  })
}

async function writeZeros(t: ZeroTarget, r: ByteRange): Promise<void> {
  for (let done = 0; done < r.length; done += ZEROS.length) {
    await writeFully(t.fh, ZEROS.subarray(0, Math.min(ZEROS.length, r.length - done)), r.offset + done, t.path)
  }
}

/** Does the range read back as zeros at both ends? (A tool that silently did nothing fails this.) */
async function readsZero(t: ZeroTarget, r: ByteRange): Promise<boolean> {
  const probe = Buffer.alloc(Math.min(BLOCK_ALIGN, r.length))
  for (const at of [r.offset, r.offset + r.length - probe.length]) {
    await readFully(t.fh, probe, at, t.path)
    if (!probe.equals(ZEROS.subarray(0, probe.length))) return false
  }
  return true
}

/** Zero `r` with the kernel's help; undefined on success, else why not. */
async function offload(t: ZeroTarget, r: ByteRange): Promise<string | undefined> {
  const range = ['-o', String(r.offset), '-l', String(r.length)]
  // -f: the store holds the device open with O_EXCL, which blkdiscard's own exclusive open would trip over.
  const failure = t.kind === 'block' ? await runTool('blkdiscard', ['-f', '-z', ...range, t.path]) : await runTool('fallocate', ['-p', ...range, t.path])
  if (failure) return failure
  return (await readsZero(t, r)) ? undefined : `zeroing 0x${r.offset.toString(16)}+${r.length} on ${t.path} left non-zero bytes`
}

/**
 * Make every range read as zeros. Call with no dirty data pending on `t.fh`
 * (fdatasync first); the caller syncs afterwards.
 */
export async function zeroRanges(t: ZeroTarget, ranges: readonly ByteRange[]): Promise<ZeroReport> {
  const report: ZeroReport = { offloaded: 0, written: 0 }
  for (const r of ranges) {
    const align = t.kind === 'block' ? BLOCK_ALIGN : 1
    const start = Math.ceil(r.offset / align) * align
    const end = Math.floor((r.offset + r.length) / align) * align
    if (report.offloadFailure === undefined && end - start >= OFFLOAD_MIN) {
      const failure = await offload(t, { offset: start, length: end - start })
      if (failure === undefined) {
        report.offloaded += end - start
        const edges = [
          { offset: r.offset, length: start - r.offset },
          { offset: end, length: r.offset + r.length - end },
        ]
        for (const e of edges) if (e.length > 0) await writeZeros(t, e)
        report.written += r.length - (end - start)
        continue
      }
      report.offloadFailure = failure
    }
    await writeZeros(t, r)
    report.written += r.length
  }
  return report
}
