/** Control API addresses: "host:port" or "unix:/absolute/path". */
import { BlockList, isIPv4, isIPv6 } from 'node:net'

export const DEFAULT_CONTROL_ADDRESS = '127.0.0.1:50051'

/** The filesystem path of a "unix:" address (unix:/p and unix:///p alike), or undefined for host:port. */
export function unixPath(address: string): string | undefined {
  if (!address.startsWith('unix:')) return undefined
  return address.slice('unix:'.length).replace(/^\/\/(?=\/)/, '')
}

/** The host of a "host:port" address ("[::1]:50051" → "::1"), or undefined if it is not host:port. */
export function hostOf(address: string): string | undefined {
  const m = /^(.+):(\d+)$/.exec(address)
  if (!m) return undefined
  return m[1].replace(/^\[(.*)\]$/, '$1')
}

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/** True for 127.0.0.0/8, ::1 (any spelling, also ::ffff:127.x.y.z) and the name "localhost"; false for every other name or address. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase()
  if (h === 'localhost' || h === 'localhost.') return true
  if (isIPv4(h)) return LOOPBACK.check(h, 'ipv4')
  if (isIPv6(h)) return LOOPBACK.check(h, 'ipv6')
  return false
}

/**
 * True if only this machine can connect to `address`: a unix socket, or a
 * loopback host. 0.0.0.0, ::, a LAN address or any other host name is
 * reachable from elsewhere; so is anything that is not host:port.
 */
export function isLocalAddress(address: string): boolean {
  if (unixPath(address) !== undefined) return true
  const host = hostOf(address)
  return host !== undefined && isLoopbackHost(host)
}
