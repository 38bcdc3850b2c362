/**
 * Positioned reads and writes that finish the job: loop on short transfers,
 * treat end-of-file as an error (never as zeros), and turn every failure into a
 * StorageError that names the file, the byte offset and the errno.
 */
import type { FileHandle } from 'node:fs/promises'
import { getSystemErrorMap } from 'node:util'
import { StorageError } from './types.js'

/** "ENOSPC (no space left on device)" from a Node system error. */
export function describeErrno(err: unknown): { code: string; text: string } {
  const e = err as NodeJS.ErrnoException
  const code = e.code ?? 'EIO'
  const known = typeof e.errno === 'number' ? getSystemErrorMap().get(e.errno) : undefined
  return { code, text: known ? `${code} (${known[1]})` : e.message }
}

const hex = (n: number): string => `0x${n.toString(16)}`

/** Write all of `data` at `position`; a short write is continued, an error names the offset it happened at. */
export async function writeFully(fh: FileHandle, data: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0
  while (done < data.length) {
    let n: number
    try {
      n = (await fh.write(data, done, data.length - done, position + done)).bytesWritten
    } catch (err) {
      const { code, text } = describeErrno(err)
      const at = position + done
      throw new StorageError(`write of ${data.length - done} bytes at offset ${hex(at)} on ${path} failed: ${text}`, path, at, code)
    }
    if (n === 0) {
      const at = position + done
      throw new StorageError(`write at offset ${hex(at)} on ${path} made no progress (0 bytes written)`, path, at, 'EIO')
    }
    done += n
  }
}

/** Read exactly `into.length` bytes at `position`; the end of the file before that is an error. */
export async function readFully(fh: FileHandle, into: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0
  while (done < into.length) {
    let n: number
    const at = position + done
    try {
      n = (await fh.read(into, done, into.length - done, position + done)).bytesRead
    } catch (err) {
      const { code, text } = describeErrno(err)
      throw new StorageError(`read of ${into.length - done} bytes at offset ${hex(at)} on ${path} failed: ${text}`, path, at, code)
    }
    if (n === 0) {
      throw new StorageError(`${path} ends at offset ${hex(at)}, before the ${into.length - done} bytes asked for there`, path, at)
    }
    done += n
  }
}
