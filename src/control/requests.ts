/**
 * Checks on control requests before they reach the Session, each failing
 * with INVALID_ARGUMENT and a message naming the field and the value.
 */
import { isAbsolute } from 'node:path'
import { ServerError, Status } from 'nice-grpc-common'
import { webSeedUrlError } from '../swarm/web-seed.js'
import { type ExtentTorrent, isInfoHash, parseTorrent } from '../torrent/metainfo.js'

/** A v1 info-hash as 40 lowercase hex digits (upper case is accepted and folded). */
export function infoHashArg(value: string, field: string): string {
  const hash = value.trim().toLowerCase()
  if (!isInfoHash(hash)) {
    throw new ServerError(Status.INVALID_ARGUMENT, `${field} ${JSON.stringify(value)} is not an info-hash (40 hex digits)`)
  }
  return hash
}

/** The torrent bytes of an add request, parsed and validated. */
export function torrentArg(bytes: Uint8Array, field: string): ExtentTorrent {
  if (bytes.length === 0) throw new ServerError(Status.INVALID_ARGUMENT, `${field} is empty: send the raw bytes of a .torrent file`)
  try {
    return parseTorrent(bytes)
  } catch (err) {
    throw new ServerError(Status.INVALID_ARGUMENT, `${field} (${bytes.length} bytes) is not a usable torrent: ${(err as Error).message}`)
  }
}

/** The target path of an add request: must be given and absolute (the daemon's cwd is not the client's). */
export function targetArg(path: string, field: string): string {
  if (path === '') throw new ServerError(Status.INVALID_ARGUMENT, `${field} is empty: give the target device, file or directory`)
  if (!isAbsolute(path)) throw new ServerError(Status.INVALID_ARGUMENT, `${field} ${JSON.stringify(path)} is not an absolute path`)
  return path
}

/** Hashes of a filter, validated, duplicates dropped, order kept. */
export function infoHashList(values: readonly string[], field: string): string[] {
  return [...new Set(values.map((v) => infoHashArg(v, field)))]
}

/** Web seed URLs of an add request: http:// or https:// each, else INVALID_ARGUMENT naming the entry and the URL. */
export function webSeedUrls(values: readonly string[], field: string): string[] {
  values.forEach((url, i) => {
    const error = webSeedUrlError(url, `${field}[${i}]`)
    if (error !== undefined) throw new ServerError(Status.INVALID_ARGUMENT, error)
  })
  return [...values]
}
