/**
 * Our peer id, and a readable client name from a peer's id (Azureus-style
 * "-TR3000-…", aria2's "A2-1-37-0-…"), for the peer list in status.
 */
import { randomBytes } from 'node:crypto'
import { VERSION } from '../version.js'

const CLIENTS: Record<string, string> = {
  BS: 'blockswarm',
  TR: 'Transmission',
  LT: 'libtorrent',
  lt: 'rTorrent',
  qB: 'qBittorrent',
  DE: 'Deluge',
  UT: 'µTorrent',
  WW: 'WebTorrent',
  AZ: 'Vuze',
  BT: 'BitTorrent',
}

/** Our client code in the Azureus style, and its bytes in hex (what a peer id read from the wire starts with). */
const OUR_CODE = '-BS'
const OUR_CODE_HEX = Buffer.from(OUR_CODE, 'latin1').toString('hex')

/** "-BS0100-" + 12 random bytes: 20 bytes, the version in the Azureus style. */
export function makePeerId(): Buffer {
  const [major, minor] = VERSION.split('.').map((n) => Number(n) || 0)
  const tag = `${OUR_CODE}${String(major % 100).padStart(2, '0')}${String(minor % 100).padStart(2, '0')}-`
  return Buffer.concat([Buffer.from(tag, 'latin1'), randomBytes(12)])
}

/** Whether a peer id (hex) is blockswarm's own ("-BS" + version + "-"): a sender that answers requests as soon as its uplink allows. */
export function isOurClient(peerIdHex: string): boolean {
  return peerIdHex.startsWith(OUR_CODE_HEX)
}

/** A client name and version from a peer id (hex), or undefined when the id follows no known style. */
export function clientName(peerIdHex: string): string | undefined {
  const id = Buffer.from(peerIdHex, 'hex').toString('latin1')
  const az = /^-([A-Za-z]{2})([0-9A-Za-z]{4})-/.exec(id)
  if (az) {
    const name = CLIENTS[az[1]] ?? az[1]
    return `${name} ${az[2]}`
  }
  const a2 = /^A2-(\d+)-(\d+)-(\d+)-/.exec(id)
  if (a2) return `aria2 ${a2[1]}.${a2[2]}.${a2[3]}`
  const mainline = /^M(\d+)-(\d+)-(\d+)-/.exec(id)
  if (mainline) return `BitTorrent ${mainline[1]}.${mainline[2]}.${mainline[3]}`
  return undefined
}
