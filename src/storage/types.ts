/**
 * The storage boundary: the swarm asks for "piece i, bytes a..b" and hands in
 * "piece i, verified"; only storage knows that piece i is three extents at
 * three disk offsets, and only storage opens devices.
 */
import type { PieceLayout } from '../torrent/piece-map.js'

export interface PieceStore {
  /** The target path, for messages. */
  readonly target: string
  readonly layout: PieceLayout
  /**
   * Read bytes [offset, offset+length) of piece `index` (for seeding and for
   * the resume check), into the start of `into` when given (a reused buffer
   * of at least `length` bytes), else into a new buffer.
   */
  read(index: number, offset: number, length: number, into?: Buffer): Promise<Buffer>
  /** Write a whole piece whose SHA-1 has been verified. Never called with unverified data. */
  writePiece(index: number, data: Buffer): Promise<void>
  /** Zero the gaps when the torrent says they must be zero, then fdatasync: call before reporting finished. */
  finish(): Promise<void>
  /** Flush (fdatasync) what has been written so far. */
  flush(): Promise<void>
  close(): Promise<void>
  /**
   * Reject with a StorageError when the target is no longer what was opened
   * (deleted, replaced, shrunk). openStore's stores opened for writing have
   * it; a store without it (a memory target) has nothing to check.
   */
  verifyTarget?(): Promise<void>
}

/** An I/O failure on a target, naming the device, the offset and the errno. */
export class StorageError extends Error {
  constructor(
    message: string,
    readonly target: string,
    readonly offset?: number,
    readonly errno?: string,
    /** Pieces whose bytes may not be on the target (a failed writeback names those written since the last flush). */
    readonly pieces?: readonly number[],
  ) {
    super(message)
    this.name = 'StorageError'
  }
}

/**
 * Why a target was refused at open time, so that a caller can react (e.g. offer to create a missing image file).
 * 'locked': the target lock is held (another blockswarm writer, a seeder when writing, or another program's flock); --force does not override it.
 */
export type TargetProblem = 'missing' | 'too-small' | 'read-only' | 'in-use' | 'locked' | 'unusable'

/** A target refused before anything was written: missing, too small, read-only, mounted… */
export class TargetRefused extends StorageError {
  constructor(
    message: string,
    target: string,
    readonly problem: TargetProblem,
    errno?: string,
  ) {
    super(message, target, undefined, errno)
    this.name = 'TargetRefused'
  }
}
