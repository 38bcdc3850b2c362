/**
 * The resume check: which pieces does the target already hold? Each piece is
 * read back through the store and hashed; a piece that matches is kept and
 * never downloaded. Every buffer is taken from the memory budget; a few
 * pieces are read and hashed at once.
 *
 * Two ways to run it (TorrentSwarm chooses):
 * - beside the download (the default): a piece the downloader is about to
 *   start is checked first (hurry): a piece still unchecked is never fetched.
 *   It starts with a probe: as many pieces as probePieces() names, the
 *   hurried ones and the rest of those spread over the target. When none of
 *   them is intact the target is taken for a fresh disk and the check ends
 *   there: a fresh disk pays only the probe. Otherwise every piece is
 *   checked, in index order (sequential reads), hurried ones first.
 * - before the download (`--check-first`): every piece in index order, the
 *   torrent waits for all of them.
 */
import { createHash } from 'node:crypto'
import type { PieceStore } from '../storage/types.js'
import { type ExtentTorrent, pieceHash } from '../torrent/metainfo.js'
import { pieceSize } from '../torrent/piece-map.js'
import type { MemoryBudget } from '../services/memory-budget.js'
import type { PieceVerifier } from '../services/piece-verifier.js'

export interface CheckProgress {
  readonly checked: number
  readonly valid: number
  readonly bytesChecked: number
}

export interface CheckResult {
  /** Pieces read back and hashed. */
  readonly checked: number
  readonly valid: number
  readonly bytesChecked: number
  /** Bytes of pieces found intact (re-used, not downloaded). */
  readonly bytesValid: number
  /** The probe found nothing intact: the rest was not checked (a fresh disk). */
  readonly fresh: boolean
  readonly ms: number
}

export interface CheckOptions {
  /** Start with a probe, and stop after it when it finds nothing intact. */
  readonly probe: boolean
  /** A piece was read back and hashed (called in no particular order). */
  readonly onChecked?: (index: number, intact: boolean, size: number) => void
  readonly onProgress?: (p: CheckProgress) => void
  readonly cancelled?: () => boolean
}

/** Pieces read and hashed at once (the memory budget bounds this further). */
const PARALLEL = 4
/** The probe: this many pieces at most; of at most PROBE_BYTES or a hundredth of the torrent, whichever is more; at least PROBE_MIN pieces. */
export const PROBE_PIECES = 64
export const PROBE_BYTES = 16 * 1024 * 1024
const PROBE_MIN = 4
/** Hurried pieces queued at most (more are refused; the downloader asks again when it has nothing else). */
const URGENT_MAX = 2 * PARALLEL

/**
 * The probe's pieces: evenly spread over the torrent, in index order. Small
 * next to the download (16 MiB, or 1% of a large torrent), so that a fresh
 * disk pays little; enough pieces that a target holding part of the image is
 * seen: 64 of them miss a random 15% of the pieces (a deploy killed early)
 * with odds of 3 in 100,000, 16 (a 1.6 GB torrent of 1 MiB pieces) with 7 in
 * 100. What a miss costs is downloading that part again, never a wrong byte.
 */
export function probePieces(torrent: ExtentTorrent): number[] {
  const n = torrent.pieceCount
  const bytes = Math.max(PROBE_BYTES, torrent.totalLength / 100)
  const k = Math.min(n, Math.max(PROBE_MIN, Math.min(PROBE_PIECES, Math.floor(bytes / torrent.pieceLength))))
  const out: number[] = []
  for (let j = 0; j < k; j++) out.push(Math.min(n - 1, Math.floor(((j + 0.5) * n) / k)))
  return [...new Set(out)]
}

const UNCHECKED = 0
const TAKEN = 1

export class TargetCheck {
  private readonly state: Uint8Array
  private readonly probe: number[]
  private probeAt = 0
  /** The probe's verdict: undefined while it runs. */
  private used?: boolean
  /** Workers reading the probe's own pieces (see take). */
  private readonly probeWorkers: number
  private next = 0
  private readonly urgent: number[] = []
  private checked = 0
  private valid = 0
  private bytesChecked = 0
  private bytesValid = 0
  private fresh = false
  /** Pieces taken by a worker (read, or being read). */
  private claimed = 0
  /** Pieces being read or hashed. */
  private busy = 0
  private failed = false
  /** Workers waiting for work while others hash (the probe's verdict, or a hurry, may bring some). */
  private readonly waiters: (() => void)[] = []

  constructor(
    private readonly torrent: ExtentTorrent,
    private readonly store: PieceStore,
    private readonly verifier: PieceVerifier,
    private readonly budget: MemoryBudget,
    private readonly opts: CheckOptions,
  ) {
    this.state = new Uint8Array(torrent.pieceCount)
    this.probe = opts.probe ? probePieces(torrent) : []
    if (!opts.probe) this.used = true
    this.probeWorkers = Math.max(1, Math.min(PARALLEL, Math.floor(budget.capacity / 4 / torrent.pieceLength)))
  }

  /** Check this piece next (the downloader wants to start it). */
  hurry(index: number): void {
    if (this.mostlyThere) return
    // a few at a time: the probe (and its verdict) must not wait behind a queue of them
    if (this.state[index] !== UNCHECKED || this.fresh || this.urgent.length >= URGENT_MAX || this.urgent.includes(index)) return
    this.urgent.push(index)
    this.wakeAll()
  }

  /**
   * Most of what was checked is on the target (over 3/4 of at least 8
   * pieces): the download has little to do, and hurried pieces would only
   * turn sequential reads into random ones. The check reads in index order.
   */
  private get mostlyThere(): boolean {
    return this.used === true && this.checked >= 8 && this.valid * 4 > this.checked * 3
  }

  /** The probe is over and nothing was intact: the check stops. */
  get probedFresh(): boolean {
    return this.fresh
  }

  /**
   * The next piece for worker `w`: hurried ones first. Worker 0 takes only
   * hurried pieces (one is always free for them); while the probe runs, only
   * workers 1…probeWorkers read its pieces (a quarter of the memory budget:
   * the download needs the rest); after it, every worker reads.
   */
  private take(w: number): number | undefined {
    if (this.opts.cancelled?.() || this.fresh || this.failed) return undefined
    const n = this.torrent.pieceCount
    const claim = (i: number) => {
      this.claimed++
      this.state[i] = TAKEN
      return i
    }
    if (this.mostlyThere) this.urgent.length = 0
    while (this.urgent.length > 0) {
      const i = this.urgent.shift()!
      if (this.state[i] === UNCHECKED) return claim(i)
    }
    if (w === 0 || (this.used === undefined && w > this.probeWorkers)) return undefined
    if (this.used === undefined) {
      // hurried pieces count as probed ones (the picker's choice is as good a sample): the probe reads only what they leave
      if (this.checked + this.busy >= this.probe.length) return undefined
      while (this.probeAt < this.probe.length) {
        const i = this.probe[this.probeAt++]
        if (this.state[i] === UNCHECKED) return claim(i)
      }
      return undefined
    }
    while (this.next < n) {
      const i = this.next++
      if (this.state[i] === UNCHECKED) return claim(i)
    }
    return undefined
  }

  private async checkOne(index: number): Promise<void> {
    const size = pieceSize(this.torrent.layout, index)
    await this.budget.take(size)
    try {
      const data = await this.store.read(index, 0, size)
      // the probe's few pieces on this thread: the first downloads wait on them, not on a worker thread booting
      const digest = this.used === undefined ? createHash('sha1').update(data).digest() : (await this.verifier.hash(data)).digest
      const intact = digest.equals(pieceHash(this.torrent, index))
      this.checked++
      this.bytesChecked += size
      if (intact) {
        this.valid++
        this.bytesValid += size
      }
      if (this.used === undefined) {
        if (intact) this.used = true
        else if (this.checked >= this.probe.length) this.fresh = true
      }
      this.opts.onChecked?.(index, intact, size)
      this.opts.onProgress?.({ checked: this.checked, valid: this.valid, bytesChecked: this.bytesChecked })
    } finally {
      this.budget.give(size)
    }
  }

  /** One of PARALLEL + 1 workers (see take): check pieces until none is left (or the probe found the target fresh, or the check was cancelled or failed). */
  private async worker(w: number): Promise<void> {
    for (;;) {
      const index = this.take(w)
      if (index === undefined) {
        // pieces still being hashed may end the probe (then the rest comes), and a hurry may come meanwhile
        if ((this.busy === 0 && this.claimed === this.torrent.pieceCount) || this.fresh || this.failed || this.opts.cancelled?.()) return this.wakeAll()
        await new Promise<void>((resolve) => this.waiters.push(resolve))
        continue
      }
      this.busy++
      try {
        await this.checkOne(index)
      } catch (err) {
        this.failed = true
        throw err
      } finally {
        this.busy--
        this.wakeAll()
      }
    }
  }

  private wakeAll(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  async run(): Promise<CheckResult> {
    const started = performance.now()
    this.verifier.warm()
    const workers = Array.from({ length: PARALLEL + 1 }, (_, w) => this.worker(w))
    const results = await Promise.allSettled(workers)
    for (const r of results) if (r.status === 'rejected') throw r.reason
    return {
      checked: this.checked,
      valid: this.valid,
      bytesChecked: this.bytesChecked,
      bytesValid: this.bytesValid,
      fresh: this.fresh,
      ms: performance.now() - started,
    }
  }
}
