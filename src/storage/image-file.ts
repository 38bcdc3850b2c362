/** Creating an image file to deploy into: sparse, of the torrent's target size, never over an existing path. */
import { open } from 'node:fs/promises'
import { describeErrno } from './positioned-io.js'
import { StorageError } from './types.js'

/** Create a sparse file of `size` bytes at `path`; fails (EEXIST) rather than touch anything already there. */
export async function createImageFile(path: string, size: number): Promise<void> {
  if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`image size ${size} is not a positive number of bytes`)
  let fh
  try {
    fh = await open(path, 'wx', 0o644)
  } catch (err) {
    const { code, text } = describeErrno(err)
    const why = code === 'EEXIST' ? `${path} already exists` : `cannot create image file ${path}: ${text}`
    throw new StorageError(why, path, undefined, code)
  }
  try {
    await fh.truncate(size)
  } catch (err) {
    const { code, text } = describeErrno(err)
    await fh.close()
    throw new StorageError(`cannot size image file ${path} to ${size} bytes: ${text}`, path, undefined, code)
  }
  await fh.close()
}
