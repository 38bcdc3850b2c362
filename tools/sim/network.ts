/**
 * The modelled network: every node has an uplink and a downlink of fixed
 * capacity (bytes/s) and nothing else is a bottleneck (a non-blocking switch,
 * as in the namespace harness's bridge). A flow is one connection's data in
 * one direction while it has something to send; it uses its sender's uplink
 * and its receiver's downlink.
 *
 * Rates are max-min fair (what TCP flows sharing links approach): progressive
 * filling — every flow's rate rises together until a link is full, the flows
 * through that link keep the rate they reached, and the rest go on rising.
 */
export interface Flow {
  readonly src: number
  readonly dst: number
  rate: number
  /** Position in the network's list of flows, -1 when not sending. */
  flowAt: number
}

export class Network {
  readonly flows: Flow[] = []
  /** Bytes/s of each node's uplink and downlink in use by its flows' current rates. */
  private readonly upUsed: Float64Array
  private readonly downUsed: Float64Array

  constructor(
    readonly up: Float64Array,
    readonly down: Float64Array,
  ) {
    this.upUsed = new Float64Array(up.length)
    this.downUsed = new Float64Array(down.length)
  }

  /**
   * A flow starts: until the next allocate() it gets what is left of its two
   * links (possibly nothing).
   */
  add(f: Flow): void {
    if (f.flowAt >= 0) return
    f.flowAt = this.flows.length
    this.flows.push(f)
    f.rate = Math.max(0, Math.min(this.up[f.src] - this.upUsed[f.src], this.down[f.dst] - this.downUsed[f.dst]))
    this.upUsed[f.src] += f.rate
    this.downUsed[f.dst] += f.rate
  }

  /** A flow ends: its share stays unused until the next allocate(). */
  remove(f: Flow): void {
    const at = f.flowAt
    if (at < 0) return
    const last = this.flows.pop()!
    if (last !== f) {
      this.flows[at] = last
      last.flowAt = at
    }
    f.flowAt = -1
    this.upUsed[f.src] -= f.rate
    this.downUsed[f.dst] -= f.rate
    f.rate = 0
  }

  /** Max-min fair rates for every flow (progressive filling over the 2 × nodes links). */
  allocate(): void {
    const flows = this.flows
    const F = flows.length
    const M = this.up.length
    // links 0..M-1 are uplinks, M..2M-1 downlinks
    const cap = new Float64Array(2 * M)
    const count = new Int32Array(2 * M)
    cap.set(this.up, 0)
    cap.set(this.down, M)
    for (const f of flows) {
      count[f.src]++
      count[M + f.dst]++
    }
    // flows by link (compressed rows)
    const start = new Int32Array(2 * M + 1)
    for (let l = 0; l < 2 * M; l++) start[l + 1] = start[l] + count[l]
    const fill = start.slice(0, 2 * M)
    const byLink = new Int32Array(2 * F)
    for (let i = 0; i < F; i++) {
      byLink[fill[flows[i].src]++] = i
      byLink[fill[M + flows[i].dst]++] = i
    }
    const done = new Uint8Array(F)
    const heap = new LinkHeap(2 * M)
    for (let l = 0; l < 2 * M; l++) if (count[l] > 0) heap.push(cap[l] / count[l], l)
    while (heap.size > 0) {
      const l = heap.popLink()
      if (l < 0 || count[l] === 0) continue
      const share = Math.max(0, cap[l] / count[l])
      for (let k = start[l]; k < start[l + 1]; k++) {
        const i = byLink[k]
        if (done[i]) continue
        done[i] = 1
        const f = flows[i]
        f.rate = share
        const other = l < M ? M + f.dst : f.src
        cap[other] -= share
        count[other]--
        if (count[other] > 0) heap.push(cap[other] / count[other], other)
      }
      count[l] = 0
    }
    this.upUsed.fill(0)
    this.downUsed.fill(0)
    for (const f of flows) {
      this.upUsed[f.src] += f.rate
      this.downUsed[f.dst] += f.rate
    }
  }
}

/**
 * Links by fair share, smallest first. A link's share only grows as other
 * links fill (their flows take less than it offered), so a stale entry is
 * recognised by being smaller than the link's current share and skipped.
 */
class LinkHeap {
  private keys: number[] = []
  private links: number[] = []
  /** The share each link was last pushed with (NaN: not in the heap). */
  private readonly latest: Float64Array

  constructor(links: number) {
    this.latest = new Float64Array(links).fill(NaN)
  }

  get size(): number {
    return this.keys.length
  }

  push(key: number, link: number): void {
    this.latest[link] = key
    const k = this.keys
    const v = this.links
    let i = k.length
    k.push(key)
    v.push(link)
    while (i > 0) {
      const p = (i - 1) >> 1
      if (k[p] <= key) break
      k[i] = k[p]
      v[i] = v[p]
      i = p
    }
    k[i] = key
    v[i] = link
  }

  /** The link of smallest current share (stale entries dropped), or -1 when none is left. */
  popLink(): number {
    while (this.keys.length > 0) {
      const key = this.keys[0]
      const link = this.links[0]
      this.removeTop()
      if (this.latest[link] === key) {
        this.latest[link] = NaN
        return link
      }
    }
    return -1
  }

  private removeTop(): void {
    const k = this.keys
    const v = this.links
    const lk = k.pop()!
    const lv = v.pop()!
    const n = k.length
    if (n === 0) return
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && k[r] < k[l] ? r : l
      if (k[c] >= lk) break
      k[i] = k[c]
      v[i] = v[c]
      i = c
    }
    k[i] = lk
    v[i] = lv
  }
}
