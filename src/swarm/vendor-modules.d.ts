/**
 * Types for the untyped webtorrent package bittorrent-tracker, limited to the
 * parts blockswarm calls: its Server is `seed --tracker-embedded`; its Client
 * serves only tests (the swarm announces with tracker-client.ts).
 */
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
    /** hostname undefined: every interface (like net.Server). */
    listen(port: number, hostname: string | undefined, onListening?: () => void): void
    close(cb?: () => void): void
  }
}

/** The tracker server alone (no client, no WebRTC): the package's `./server` export. */
declare module 'bittorrent-tracker/server' {
  export { Server as default } from 'bittorrent-tracker'
}
