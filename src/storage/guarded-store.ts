/**
 * The one guard around every PieceStore (the idea of anacrolix/torrent's
 * storage wrapper). What every backend must refuse is refused here, once:
 * - a piece index out of range, a read outside its piece, a write whose
 *   length is not the piece's;
 * - a second write of a piece: the resume check only reads, and a download
 *   writes each piece once, after its hash passed, so a piece written twice
 *   is a bug upstream;
 * - a write to a store opened for reading (seeding);
 * - any use after close (close itself may be called again);
 * - everything after the first failed write or writeback: the failure is
 *   latched, because bytes that may not be on the target must never read
 *   as written, and finish() keeps failing with that same error.
 * A backend (device-store.ts, dir-store.ts, memory-store.ts) holds only its
 * own I/O and is called only with arguments checked here.
 */
import { type PieceLayout, pieceSize } from '../torrent/piece-map.js'
import { type PieceStore, StorageError } from './types.js'

/** One kind of target's I/O, behind the guard. */
export interface StoreBackend extends PieceStore {
  /** A failure met outside any call (a background flush, a sync of a handle the backend closed on its own), latched by the guard before the next call. */
  readonly failure?: Error
}

export interface GuardOptions {
  /** 'read': seeding from the target (writes refused, flush and finish do nothing); 'write': deploying onto it. */
  readonly mode: 'read' | 'write'
  /** Runs once after the backend closed (e.g. releasing the target lock). */
  readonly onClose?: () => Promise<void>
  /** The store's verifyTarget: is the target still what was opened? */
  readonly verifyTarget?: () => Promise<void>
}

const isCount = (n: number): boolean => Number.isSafeInteger(n) && n >= 0

export class GuardedStore implements PieceStore {
  readonly target: string
  readonly layout: PieceLayout
  readonly verifyTarget?: () => Promise<void>
  /** 1 for each piece written through this store. */
  private readonly written: Uint8Array
  /** The first failed write or writeback. */
  private failure?: Error
  private closing?: Promise<void>

  constructor(
    private readonly backend: StoreBackend,
    private readonly opts: GuardOptions,
  ) {
    this.target = backend.target
    this.layout = backend.layout
    this.written = new Uint8Array(backend.layout.pieceCount)
    if (opts.verifyTarget) this.verifyTarget = opts.verifyTarget
  }

  async read(index: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.checkOpen()
    const size = this.checkPiece(index)
    if (!isCount(offset) || !isCount(length) || length === 0 || offset + length > size) {
      throw new RangeError(`bytes ${offset}+${length} are not inside piece ${index} of ${this.target} (${size} bytes)`)
    }
    if (into && into.length < length) throw new RangeError(`a read of ${length} bytes into a buffer of ${into.length}`)
    // after a failed write the page cache may hold bytes that never reached the target: serve nothing
    this.checkFailure()
    return this.backend.read(index, offset, length, into)
  }

  async writePiece(index: number, data: Buffer): Promise<void> {
    this.checkWritable()
    const size = this.checkPiece(index)
    if (data.length !== size) throw new RangeError(`piece ${index} is ${size} bytes, got ${data.length}`)
    if (this.written[index]) throw new StorageError(`piece ${index} of ${this.target} was already written: a piece is written once, after its hash passed`, this.target)
    this.written[index] = 1
    await this.latch(this.backend.writePiece(index, data))
  }

  async flush(): Promise<void> {
    if (this.opts.mode === 'read') return
    this.checkWritable()
    await this.latch(this.backend.flush())
  }

  async finish(): Promise<void> {
    if (this.opts.mode === 'read') return
    this.checkWritable()
    await this.latch(this.backend.finish())
  }

  close(): Promise<void> {
    this.closing ??= this.backend.close().finally(() => this.opts.onClose?.())
    return this.closing
  }

  /** Run a write or flush of the backend; its first failure stays. */
  private async latch(op: Promise<void>): Promise<void> {
    try {
      await op
    } catch (err) {
      this.failure ??= err as Error
      throw err
    }
  }

  /** The size of piece `index`, or a RangeError. */
  private checkPiece(index: number): number {
    const n = this.layout.pieceCount
    if (!Number.isSafeInteger(index) || index < 0 || index >= n) throw new RangeError(`piece ${index} of ${this.target} is out of range (it has ${n})`)
    return pieceSize(this.layout, index)
  }

  private checkFailure(): void {
    this.failure ??= this.backend.failure
    if (this.failure) throw this.failure
  }

  private checkOpen(): void {
    if (this.closing) throw new StorageError(`${this.target} is closed`, this.target)
  }

  private checkWritable(): void {
    this.checkOpen()
    if (this.opts.mode === 'read') throw new StorageError(`${this.target} was opened for reading (seeding), not writing`, this.target)
    this.checkFailure()
  }
}
