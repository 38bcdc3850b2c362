/**
 * The simulator's clock: a queue of timed actions (messages in flight, ticks,
 * joins, deaths), in time order and, at equal times, in the order they were
 * scheduled, so that a run with the same seed is the same run.
 */
interface Entry {
  readonly t: number
  readonly seq: number
  readonly run: () => void
  /** Run only if this is still alive then (a message to a node that may die meanwhile). */
  readonly onlyIf?: { readonly alive: boolean }
}

const before = (a: Entry, b: Entry) => a.t < b.t || (a.t === b.t && a.seq < b.seq)

export class EventQueue {
  private readonly heap: Entry[] = []
  private seq = 0

  get size(): number {
    return this.heap.length
  }

  /** Time of the earliest action, Infinity when none is left. */
  peekTime(): number {
    return this.heap.length > 0 ? this.heap[0].t : Infinity
  }

  at(t: number, run: () => void, onlyIf?: { readonly alive: boolean }): void {
    const h = this.heap
    const e: Entry = { t, seq: this.seq++, run, onlyIf }
    let i = h.length
    h.push(e)
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!before(e, h[p])) break
      h[i] = h[p]
      i = p
    }
    h[i] = e
  }

  /** Remove the earliest action and run it (unless its node is no longer alive). */
  runNext(): void {
    const h = this.heap
    const top = h[0]
    const last = h.pop()!
    if (h.length > 0) {
      let i = 0
      const n = h.length
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        const c = r < n && before(h[r], h[l]) ? r : l
        if (!before(h[c], last)) break
        h[i] = h[c]
        i = c
      }
      h[i] = last
    }
    if (top.onlyIf === undefined || top.onlyIf.alive) top.run()
  }
}

/** Something with a due time that moves (a transfer whose rate changes): kept in an indexed heap, updated in place. */
export interface Timed {
  due: number
  /** Position in the heap, -1 when not in it. */
  heapAt: number
}

export class TimedHeap<T extends Timed> {
  private readonly heap: T[] = []

  peekTime(): number {
    return this.heap.length > 0 ? this.heap[0].due : Infinity
  }

  /** Put `x` in at its `due`, or move it there if it is in already. */
  set(x: T, due: number): void {
    x.due = due
    if (x.heapAt < 0) {
      x.heapAt = this.heap.length
      this.heap.push(x)
      this.up(x.heapAt)
    } else {
      this.up(x.heapAt)
      this.down(x.heapAt)
    }
  }

  remove(x: T): void {
    const at = x.heapAt
    if (at < 0) return
    const last = this.heap.pop()!
    x.heapAt = -1
    if (last === x) return
    this.heap[at] = last
    last.heapAt = at
    this.up(at)
    this.down(at)
  }

  pop(): T {
    const top = this.heap[0]
    this.remove(top)
    return top
  }

  private swap(i: number, j: number): void {
    const h = this.heap
    const a = h[i]
    h[i] = h[j]
    h[j] = a
    h[i].heapAt = i
    h[j].heapAt = j
  }

  private up(i: number): void {
    while (i > 0) {
      const p = (i - 1) >> 1
      if (this.heap[p].due <= this.heap[i].due) return
      this.swap(i, p)
      i = p
    }
  }

  private down(i: number): void {
    const h = this.heap
    for (;;) {
      const l = 2 * i + 1
      if (l >= h.length) return
      const r = l + 1
      const c = r < h.length && h[r].due < h[l].due ? r : l
      if (h[i].due <= h[c].due) return
      this.swap(i, c)
      i = c
    }
  }
}
