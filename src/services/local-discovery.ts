/**
 * Local Service Discovery (BEP 14): finding the peers of a torrent on the
 * LAN without a tracker. Each torrent that is online is announced to the
 * IPv4 multicast group 239.192.152.143:6771 when it comes online and every 5
 * minutes after; an announce heard from another client for a torrent of
 * ours hands its sender (source address, announced port) to that torrent,
 * which dials it. Several info-hashes share one packet (at most 1400 bytes);
 * our own announces, looped back to us, are known by their cookie.
 *
 * One receiving socket per session (bound to port 6771, shared with other
 * clients on the host), joined to the group on each LAN interface, and one
 * sending socket per interface (its source address is the one peers dial), so
 * that announces leave on every interface with an IPv4 address, routes or not
 * — or only on --bind's. TTL 1: the announce stays on the local network.
 *
 * It is off unless asked for (--lsd): a datacenter may not want multicast.
 */
import { randomBytes } from 'node:crypto'
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { isIPv4 } from 'node:net'
import { networkInterfaces } from 'node:os'
import type { Logger } from 'pino'
import { isInfoHash } from '../torrent/metainfo.js'
import type { PeerAddress } from '../swarm/peer-dialer.js'

export const LSD_GROUP = '239.192.152.143'
export const LSD_PORT = 6771
/** Announces keep under this size (BEP 14: avoid fragmentation). */
const MAX_PACKET = 1400
/** Each online torrent is announced again after this long. */
const ANNOUNCE_INTERVAL_MS = 5 * 60_000
/** How often to look for torrents that are due (a torrent that comes online is announced within this). */
const TICK_MS = 1000
const TTL = 1
const REQUEST_LINE = 'BT-SEARCH * HTTP/1.1'

export interface Announce {
  readonly port: number
  readonly infoHashes: readonly string[]
  readonly cookie?: string
}

/** The announce packets for these info-hashes: as few as fit in MAX_PACKET bytes each. */
export function announcePackets(infoHashes: readonly string[], port: number, cookie: string): Buffer[] {
  const head = `${REQUEST_LINE}\r\nHost: ${LSD_GROUP}:${LSD_PORT}\r\nPort: ${port}\r\n`
  const tail = `cookie: ${cookie}\r\n\r\n\r\n`
  const perHash = `Infohash: ${'0'.repeat(40)}\r\n`.length
  const fit = Math.max(1, Math.floor((MAX_PACKET - head.length - tail.length) / perHash))
  const packets: Buffer[] = []
  for (let i = 0; i < infoHashes.length; i += fit) {
    const lines = infoHashes.slice(i, i + fit).map((h) => `Infohash: ${h}\r\n`)
    packets.push(Buffer.from(head + lines.join('') + tail, 'latin1'))
  }
  return packets
}

/** An announce from the network, read leniently (header names in any case, unknown headers skipped); undefined if it is not one. */
export function parseAnnounce(packet: Buffer): Announce | undefined {
  const lines = packet.toString('latin1').split(/\r?\n/)
  if (lines[0].trim() !== REQUEST_LINE) return undefined
  let port: number | undefined
  let cookie: string | undefined
  const hashes = new Set<string>()
  for (const line of lines.slice(1)) {
    if (line.trim() === '') break
    const colon = line.indexOf(':')
    if (colon <= 0) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (name === 'port') port = /^\d{1,5}$/.test(value) && Number(value) >= 1 && Number(value) <= 65535 ? Number(value) : undefined
    else if (name === 'infohash' && isInfoHash(value.toLowerCase())) hashes.add(value.toLowerCase())
    else if (name === 'cookie') cookie = value
  }
  if (port === undefined || hashes.size === 0) return undefined
  return { port, infoHashes: [...hashes], cookie }
}

/** The IPv4 addresses to announce on: --bind's, else every non-loopback interface's. */
function lanAddresses(bind: string | undefined): string[] {
  if (bind !== undefined && bind !== '0.0.0.0' && bind !== '::') return isIPv4(bind) ? [bind] : []
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => a.family === 'IPv4' && !a.internal)
    .map((a) => a.address)
}

function bindSocket(socket: Socket, port: number, address?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.bind({ port, address }, () => {
      socket.off('error', reject)
      resolve()
    })
  })
}

export interface LocalDiscoveryOptions {
  /** Our BitTorrent listen port (what announces say). */
  readonly port: () => number
  /** Announce on this address's interface only (--bind). */
  readonly bind?: string
  /** Info-hashes of the torrents to announce now (those online). */
  readonly torrents: () => Iterable<string>
  /** Another client announced a torrent of ours. */
  readonly onPeer: (infoHash: string, peer: PeerAddress) => void
  readonly log: Logger
}

export class LocalDiscovery {
  private readonly cookie = randomBytes(8).toString('hex')
  /** One sending socket per interface address. */
  private readonly senders = new Map<string, Socket>()
  /** Interface addresses the receiving socket joined the group on. */
  private readonly joined = new Set<string>()
  /** When each torrent was last announced (dropped while it is offline, so that it is announced again when it is back). */
  private readonly announcedAt = new Map<string, number>()
  private readonly timer: NodeJS.Timeout
  private closed = false
  private warnedNoInterface = false

  private constructor(
    private readonly receiver: Socket,
    private readonly opts: LocalDiscoveryOptions,
  ) {
    receiver.on('message', (msg, rinfo) => this.heard(msg, rinfo))
    receiver.on('error', (err) => opts.log.warn({ err: err.message }, 'local service discovery: receive error'))
    this.timer = setInterval(() => this.tick(), TICK_MS)
    this.timer.unref()
  }

  /** Listen on port 6771 and start announcing. Throws a clear error when the socket cannot be had. */
  static async start(opts: LocalDiscoveryOptions): Promise<LocalDiscovery> {
    const receiver = createSocket({ type: 'udp4', reuseAddr: true })
    try {
      await bindSocket(receiver, LSD_PORT)
    } catch (err) {
      receiver.close()
      throw new Error(`local service discovery (--lsd): cannot listen on UDP port ${LSD_PORT}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    const lsd = new LocalDiscovery(receiver, opts)
    await lsd.refreshInterfaces()
    opts.log.info({ group: `${LSD_GROUP}:${LSD_PORT}`, interfaces: [...lsd.senders.keys()] }, 'local service discovery on')
    lsd.tick()
    return lsd
  }

  /** Announce the torrents that came online or are due again. */
  private tick(): void {
    if (this.closed) return
    const now = Date.now()
    const online = new Set(this.opts.torrents())
    for (const h of this.announcedAt.keys()) if (!online.has(h)) this.announcedAt.delete(h)
    const due = [...online].filter((h) => now - (this.announcedAt.get(h) ?? -Infinity) >= ANNOUNCE_INTERVAL_MS)
    if (due.length > 0) void this.announce(due, now)
  }

  private async announce(hashes: string[], now: number): Promise<void> {
    for (const h of hashes) this.announcedAt.set(h, now)
    await this.refreshInterfaces()
    if (this.closed) return
    if (this.senders.size === 0) {
      // no interface yet (the network may come up later): try again at the next tick
      for (const h of hashes) this.announcedAt.delete(h)
      if (!this.warnedNoInterface) this.opts.log.warn({ bind: this.opts.bind ?? null }, 'local service discovery: no IPv4 network interface to announce on yet')
      this.warnedNoInterface = true
      return
    }
    const packets = announcePackets(hashes, this.opts.port(), this.cookie)
    for (const [address, socket] of this.senders) {
      for (const p of packets) {
        socket.send(p, LSD_PORT, LSD_GROUP, (err) => {
          if (err) this.opts.log.debug({ interface: address, err: err.message }, 'local service discovery: announce not sent')
        })
      }
    }
    this.opts.log.debug({ torrents: hashes.length, interfaces: [...this.senders.keys()] }, 'local service discovery: announced')
  }

  /** Join the group and open a sender on every interface that has appeared since the last look. */
  private async refreshInterfaces(): Promise<void> {
    for (const address of lanAddresses(this.opts.bind)) {
      if (this.closed) return
      if (!this.joined.has(address)) {
        try {
          this.receiver.addMembership(LSD_GROUP, address)
          this.joined.add(address)
        } catch (err) {
          this.opts.log.debug({ interface: address, err: (err as Error).message }, 'local service discovery: cannot join the group here')
        }
      }
      if (this.senders.has(address)) continue
      const socket = createSocket({ type: 'udp4' })
      socket.on('error', (err) => this.opts.log.debug({ interface: address, err: err.message }, 'local service discovery: send error'))
      try {
        await bindSocket(socket, 0, address)
        socket.setMulticastInterface(address)
        socket.setMulticastTTL(TTL)
        socket.setMulticastLoopback(true)
      } catch (err) {
        socket.close()
        this.opts.log.debug({ interface: address, err: (err as Error).message }, 'local service discovery: cannot send from here')
        continue
      }
      if (this.closed) {
        socket.close()
        return
      }
      this.senders.set(address, socket)
    }
  }

  private heard(msg: Buffer, from: RemoteInfo): void {
    if (this.closed) return
    const a = parseAnnounce(msg)
    if (!a || a.cookie === this.cookie) return
    const peer = { host: from.address, port: a.port }
    for (const h of a.infoHashes) this.opts.onPeer(h, peer)
  }

  /** Stop announcing and close every socket. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    const sockets = [this.receiver, ...this.senders.values()]
    this.senders.clear()
    await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
  }
}
