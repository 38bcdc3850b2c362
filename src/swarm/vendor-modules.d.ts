/**
 * Types for the two untyped webtorrent packages the swarm uses, limited to
 * the parts blockswarm calls.
 */
declare module 'bittorrent-protocol' {
  import { EventEmitter } from 'node:events'

  interface PeerPieces {
    get(index: number): boolean
  }

  interface PeerRequest {
    piece: number
    offset: number
    length: number
  }

  /** Peer wire protocol over any byte stream (a streamx Duplex). */
  export default class Wire extends EventEmitter {
    constructor(type?: string)
    peerId: string | null
    peerIdBuffer: Uint8Array | null
    amChoking: boolean
    amInterested: boolean
    peerChoking: boolean
    peerInterested: boolean
    peerPieces: PeerPieces
    peerRequests: PeerRequest[]
    requests: PeerRequest[]
    extendedHandshake: Record<string, unknown>
    peerExtendedHandshake: Record<string, unknown>
    destroyed: boolean
    write(chunk: Uint8Array): boolean
    destroy(): void
    setKeepAlive(enable: boolean): void
    setTimeout(ms: number, unref?: boolean): void
    handshake(infoHash: string | Uint8Array, peerId: string | Uint8Array, extensions?: { dht?: boolean; fast?: boolean }): void
    choke(): void
    unchoke(): void
    interested(): void
    uninterested(): void
    have(index: number): void
    bitfield(bitfield: Uint8Array): void
    request(index: number, offset: number, length: number, cb: (err: Error | null, block?: Uint8Array) => void): void
    cancel(index: number, offset: number, length: number): void
  }
}

declare module 'bittorrent-tracker' {
  import { EventEmitter } from 'node:events'

  export interface AnnounceOpts {
    uploaded?: number
    downloaded?: number
    left?: number
    numwant?: number
  }

  export interface TrackerUpdate {
    announce: string
    complete?: number
    incomplete?: number
  }

  /** Announces to HTTP/UDP trackers; emits 'peer' ("ip:port"), 'update', 'warning', 'error'. */
  export class Client extends EventEmitter {
    constructor(opts: {
      infoHash: string | Uint8Array
      peerId: string | Uint8Array
      announce: string[]
      port: number
      getAnnounceOpts?: () => AnnounceOpts
      userAgent?: string
    })
    start(opts?: AnnounceOpts): void
    stop(opts?: AnnounceOpts): void
    complete(opts?: AnnounceOpts): void
    update(opts?: AnnounceOpts): void
    setInterval(ms: number): void
    destroy(cb?: (err?: Error) => void): void
  }

  /** A tracker server (HTTP, UDP and/or WebSocket); emits 'listening', 'error', 'warning'. */
  export class Server extends EventEmitter {
    constructor(opts: {
      interval?: number
      http?: boolean | object
      udp?: boolean | object
      ws?: boolean | object
      stats?: boolean
      trustProxy?: boolean
      filter?: (infoHash: string, params: unknown, cb: (err?: Error | null) => void) => void
    })
    http: import('node:http').Server | null
    listen(port: number, hostname: string, onListening?: () => void): void
    close(cb?: () => void): void
  }
}
