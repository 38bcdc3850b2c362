/**
 * The peer allow-list (`--allow-peers`): the networks peers may be in, as
 * IPv4 and IPv6 CIDRs. An empty list allows every address.
 *
 * Every address and network is compared in IPv6 form, an IPv4 one as its
 * IPv4-mapped address (10.0.0.5 is ::ffff:10.0.0.5, 10.0.0.0/8 is
 * ::ffff:10.0.0.0/104). So a dual-stack socket's view of an IPv4 peer
 * (::ffff:10.0.0.5) matches 10.0.0.0/8, 0.0.0.0/0 allows every IPv4 peer and
 * no IPv6 one, and ::/0 allows both.
 */
import { isIPv4, isIPv6 } from 'node:net'

interface Network {
  readonly bytes: Uint8Array
  /** Leading bits that must match, 0-128 (of the IPv6 form). */
  readonly bits: number
  /** As written by the user, for messages. */
  readonly text: string
}

/** The 16 bytes of an IP address in IPv6 form (IPv4 as IPv4-mapped), or undefined when the text is not an IP address. */
export function ipBytes(text: string): Uint8Array | undefined {
  const addr = text.replace(/%[^%]*$/, '') // an IPv6 zone ("fe80::1%eth0") says where, not who
  if (isIPv4(addr)) return Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...addr.split('.').map(Number)])
  if (!isIPv6(addr)) return undefined
  // a trailing dotted quad ("::ffff:1.2.3.4") stands for the last two groups
  let hex = addr
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(hex)
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number)
    hex = hex.slice(0, quad.index) + ((a << 8) | b).toString(16) + ':' + ((c << 8) | d).toString(16)
  }
  const [head, tail] = hex.split('::')
  const groups = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : [])
  const h = groups(head)
  const t = groups(tail)
  const all = tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t]
  const out = new Uint8Array(16)
  all.forEach((g, i) => {
    out[2 * i] = g >> 8
    out[2 * i + 1] = g & 0xff
  })
  return out
}

function parseNetwork(spec: string): Network {
  const m = /^([^/\s]+)(?:\/(\d{1,3}))?$/.exec(spec)
  const bad = (why: string) => new Error(`${JSON.stringify(spec)} is not a network: ${why} (write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8)`)
  if (!m) throw bad('expected ADDRESS or ADDRESS/PREFIX')
  const bytes = ipBytes(m[1])
  if (!bytes || m[1].includes('%')) throw bad(`${JSON.stringify(m[1])} is not an IPv4 or IPv6 address`)
  const v4 = isIPv4(m[1])
  const max = v4 ? 32 : 128
  const prefix = m[2] === undefined ? max : Number(m[2])
  if (prefix > max) throw bad(`the prefix of an ${v4 ? 'IPv4' : 'IPv6'} network is 0-${max}, not ${prefix}`)
  return { bytes, bits: v4 ? prefix + 96 : prefix, text: spec }
}

function contains(n: Network, addr: Uint8Array): boolean {
  const whole = n.bits >> 3
  for (let i = 0; i < whole; i++) if (n.bytes[i] !== addr[i]) return false
  const rest = n.bits & 7
  if (rest === 0) return true
  const mask = (0xff << (8 - rest)) & 0xff
  return (n.bytes[whole] & mask) === (addr[whole] & mask)
}

export class PeerFilter {
  private constructor(private readonly networks: readonly Network[]) {}

  /** The filter that allows every address. */
  static readonly any = new PeerFilter([])

  /** Networks from a list of specs, each one or several separated by commas; throws naming the bad one. */
  static parse(specs: readonly string[]): PeerFilter {
    const items = specs.flatMap((s) => s.split(',')).map((s) => s.trim())
    if (items.some((s) => s === '')) throw new Error(`an empty network in ${JSON.stringify(specs.join(','))} (write e.g. 10.0.0.0/8,fd00::/8)`)
    return new PeerFilter(items.map(parseNetwork))
  }

  /** Whether only some addresses are allowed. */
  get restricted(): boolean {
    return this.networks.length > 0
  }

  /** Whether a peer at `ip` may connect or be connected to. Text that is not an IP address (a host name) never matches a restricted filter. */
  allows(ip: string): boolean {
    if (!this.restricted) return true
    const addr = ipBytes(ip)
    return addr !== undefined && this.networks.some((n) => contains(n, addr))
  }

  toString(): string {
    return this.restricted ? this.networks.map((n) => n.text).join(',') : 'any'
  }
}
