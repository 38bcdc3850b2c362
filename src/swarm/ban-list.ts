/**
 * Peers banned for sending data that failed a piece hash. A peer is known by
 * its address and port together with its peer id, never by IP alone: in a
 * datacenter many nodes may sit behind one address (NAT, a shared gateway),
 * and one bad node must not cut off its neighbours.
 *
 * A connection matches a ban when it comes from the banned IP and either the
 * same port (the peer's listen port: a reconnect or a re-dial) or the same
 * peer id (the same process connecting from a new ephemeral port).
 */
export interface PeerIdentity {
  readonly ip: string
  readonly port: number
  /** 40 hex digits, when known (after the handshake). */
  readonly peerId?: string
}

export interface Ban {
  /** "ip:port" plus the peer id, for status and logs. */
  readonly peer: string
  readonly reason: string
  readonly at: number
}

interface Entry extends PeerIdentity, Ban {}

export function describePeer(p: PeerIdentity): string {
  const addr = p.ip.includes(':') ? `[${p.ip}]:${p.port}` : `${p.ip}:${p.port}`
  return p.peerId ? `${addr} ${peerIdText(p.peerId)}` : addr
}

/** A peer id for people: the printable prefix (client tag) and the rest in hex. */
export function peerIdText(hex: string): string {
  const raw = Buffer.from(hex, 'hex')
  let n = 0
  while (n < raw.length && n < 8 && raw[n] >= 0x20 && raw[n] < 0x7f) n++
  return raw.subarray(0, n).toString('latin1') + raw.subarray(n).toString('hex')
}

export class BanList {
  private readonly entries: Entry[] = []

  ban(p: PeerIdentity, reason: string, at = Date.now()): Ban {
    const existing = this.entries.find((e) => e.ip === p.ip && e.port === p.port && e.peerId === p.peerId)
    if (existing) return existing
    const entry: Entry = { ip: p.ip, port: p.port, peerId: p.peerId, peer: describePeer(p), reason, at }
    this.entries.push(entry)
    return entry
  }

  isBanned(p: PeerIdentity): boolean {
    return this.entries.some((e) => e.ip === p.ip && (e.port === p.port || (p.peerId !== undefined && e.peerId === p.peerId)))
  }

  list(): Ban[] {
    return this.entries.map(({ peer, reason, at }) => ({ peer, reason, at }))
  }

  get size(): number {
    return this.entries.length
  }
}
