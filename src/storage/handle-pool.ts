/**
 * A bounded set of open file handles, keyed by a number (an extent index):
 * a directory target may hold a hundred thousand extent files, more than the
 * descriptor limit allows open at once. Least recently used handles that no
 * operation is using are closed first.
 */
import type { FileHandle } from 'node:fs/promises'

interface Entry {
  readonly handle: Promise<FileHandle>
  users: number
}

export class HandlePool {
  private readonly entries = new Map<number, Entry>()

  /**
   * @param openHandle opens the file for key `k`
   * @param retire called with a handle before it is closed (e.g. to fdatasync it); must not throw
   */
  constructor(
    private readonly openHandle: (k: number) => Promise<FileHandle>,
    private readonly limit: number,
    private readonly retire: (k: number, fh: FileHandle) => Promise<void>,
  ) {}

  /** Run `fn` with the handle for `k`, opening it if needed; the handle stays open for reuse. */
  async use<T>(k: number, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
    let entry = this.entries.get(k)
    if (entry) {
      this.entries.delete(k) // re-inserted below: Map order is the LRU order
    } else {
      entry = { handle: this.openHandle(k), users: 0 }
    }
    this.entries.set(k, entry)
    entry.users++
    try {
      let fh: FileHandle
      try {
        fh = await entry.handle
      } catch (err) {
        if (this.entries.get(k) === entry) this.entries.delete(k)
        throw err
      }
      return await fn(fh)
    } finally {
      entry.users--
      await this.evict()
    }
  }

  private async evict(): Promise<void> {
    for (const [k, entry] of this.entries) {
      if (this.entries.size <= this.limit) return
      if (entry.users > 0) continue
      this.entries.delete(k)
      await this.closeEntry(k, entry)
    }
  }

  private async closeEntry(k: number, entry: Entry): Promise<void> {
    let fh: FileHandle
    try {
      fh = await entry.handle
    } catch {
      return // never opened: nothing to close
    }
    await this.retire(k, fh)
    await fh.close().catch(() => undefined)
  }

  /** Retire and close every handle. */
  async closeAll(): Promise<void> {
    const all = [...this.entries]
    this.entries.clear()
    for (const [k, entry] of all) await this.closeEntry(k, entry)
  }
}
