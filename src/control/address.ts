/** Control API addresses: "host:port" or "unix:/absolute/path". */

export const DEFAULT_CONTROL_ADDRESS = '127.0.0.1:50051'

/** The filesystem path of a "unix:" address (unix:/p and unix:///p alike), or undefined for host:port. */
export function unixPath(address: string): string | undefined {
  if (!address.startsWith('unix:')) return undefined
  return address.slice('unix:'.length).replace(/^\/\/(?=\/)/, '')
}
