/**
 * A read-only source (disk, partition or image file) for the image creator.
 * Opened O_RDONLY: the creator never writes its source.
 */
import { type FileHandle, open } from 'node:fs/promises'
import { targetInfo } from '../storage/device-size.js'

export class Source {
  private constructor(
    readonly path: string,
    readonly size: number,
    readonly kind: 'block' | 'file',
    private readonly fh: FileHandle,
  ) {}

  static async open(path: string): Promise<Source> {
    const info = await targetInfo(path)
    if (info.kind === 'directory') throw new Error(`${path} is a directory; a source is a block device or an image file`)
    const fh = await open(path, 'r')
    return new Source(path, info.size, info.kind, fh)
  }

  /** Read exactly `length` bytes at `offset` (zero-filled past the end of the source). */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into ?? Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done)
      if (bytesRead === 0) {
        buf.fill(0, done, length)
        break
      }
      done += bytesRead
    }
    return buf
  }

  close(): Promise<void> {
    return this.fh.close()
  }
}
