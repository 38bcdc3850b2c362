/**
 * Where to connect: addresses from the static list (`--peer host:port`, for
 * trackerless networks), from trackers and from local service discovery
 * (lsd). Each address is dialed at most once at a time; after a failure it
 * waits with exponential backoff. Static peers are retried forever (a node
 * may boot late); tracker and lsd peers are forgotten after repeated failures
 * (the tracker lists them again, or they announce again, if they come back).
 */
export type PeerSource = 'static' | 'tracker' | 'lsd'

export interface PeerAddress {
  readonly host: string
  readonly port: number
}

interface Entry extends PeerAddress {
  source: PeerSource
  failures: number
  nextAt: number
  busy: boolean
  /** This address is us (our own listener, seen through a tracker): never dial. */
  self: boolean
  /** Known to be a seed (skipped once we have everything too). */
  seed: boolean
  /** Why the last dial failed, while it keeps failing. */
  error?: string
}

const BACKOFF_MIN_MS = 1000
const BACKOFF_MAX_MS = 30_000
/** Failed dials in a row after which a tracker or lsd peer is forgotten. */
const FOUND_PEER_MAX_FAILURES = 5

/** Parse "host:port" or "[v6]:port"; throws with the offending text. */
export function parsePeerAddress(text: string): PeerAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text.trim())
  const port = m ? Number(m[3]) : NaN
  if (!m || port < 1 || port > 65535) throw new Error(`peer address ${JSON.stringify(text)} is not HOST:PORT (e.g. 10.0.0.5:6881 or [fd00::5]:6881)`)
  return { host: m[1] ?? m[2], port }
}

export function addressKey(a: PeerAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`
}

export class PeerDialer {
  private readonly entries = new Map<string, Entry>()

  constructor(private readonly now: () => number = Date.now) {}

  get size(): number {
    return this.entries.size
  }

  add(address: PeerAddress, source: PeerSource): void {
    const key = addressKey(address)
    const e = this.entries.get(key)
    if (e) {
      if (source === 'static') e.source = 'static'
      // a peer announcing itself on the LAN is there now, whatever it was (a node deploying again at the same address)
      else if (source === 'lsd' && !e.busy) {
        e.nextAt = 0
        e.seed = false
      }
      return
    }
    this.entries.set(key, { ...address, source, failures: 0, nextAt: 0, busy: false, self: false, seed: false })
  }

  /** Addresses to dial now, at most `room`; each is marked busy until `closed`. */
  due(room: number, skip: (a: PeerAddress & { seed: boolean }) => boolean): PeerAddress[] {
    const out: PeerAddress[] = []
    const t = this.now()
    for (const e of this.entries.values()) {
      if (out.length >= room) break
      if (e.busy || e.self || e.nextAt > t || skip(e)) continue
      e.busy = true
      out.push({ host: e.host, port: e.port })
    }
    return out
  }

  /** Mark an address as connected (by us or by it) so it is not dialed again meanwhile. */
  connected(address: PeerAddress): void {
    const e = this.entries.get(addressKey(address))
    if (e) {
      e.busy = true
      e.failures = 0
      e.error = undefined
    }
  }

  /** A dial failed (saying why, when known), or a connection ended: back off before the next try. */
  closed(address: PeerAddress, failed: boolean, error?: string): void {
    const key = addressKey(address)
    const e = this.entries.get(key)
    if (!e) return
    e.busy = false
    if (failed) {
      e.failures++
      e.error = error ?? e.error
    }
    if (e.source !== 'static' && e.failures >= FOUND_PEER_MAX_FAILURES) {
      this.entries.delete(key)
      return
    }
    e.nextAt = this.now() + Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.max(0, e.failures - (failed ? 1 : 0)))
  }

  /** Addresses whose dials keep failing (being retried or waiting to be), with the last reason: for a status that says why no peer is connected. */
  failing(): { address: string; error: string; failures: number }[] {
    const out = []
    for (const e of this.entries.values()) {
      if (e.failures > 0) out.push({ address: addressKey(e), error: e.error ?? 'connection failed', failures: e.failures })
    }
    return out
  }

  markSelf(address: PeerAddress): void {
    const e = this.entries.get(addressKey(address))
    if (e) e.self = true
  }

  /** Addresses not known to be seeds (and not ourselves). */
  get unfinished(): number {
    let n = 0
    for (const e of this.entries.values()) if (!e.seed && !e.self) n++
    return n
  }

  markSeed(address: PeerAddress): void {
    const e = this.entries.get(addressKey(address))
    if (e) e.seed = true
  }

  /** Forget an address (its peer was banned), whatever its source. */
  remove(address: PeerAddress): void {
    this.entries.delete(addressKey(address))
  }
}
