/**
 * The per-torrent web seed flags of `deploy` and `add`, in a module of their
 * own: `add` is a thin gRPC client and must not load the swarm engine (which
 * options.ts, the swarm flags, brings) to declare them.
 */
import type { Command } from 'commander'

/** --web-seed and --web-seed-image as parsed: every URL given, in order. */
export interface WebSeedFlags {
  webSeed: string[]
  webSeedImage: string[]
}

/** A repeatable option's values, in the order given. */
export const collect = (value: string, previous: string[]): string[] => [...previous, value]

/** Add --web-seed and --web-seed-image (repeatable) to a command that adds a torrent. */
export function addWebSeedOptions(cmd: Command): Command {
  return cmd
    .option('--web-seed <url>', 'a web seed the torrent does not carry: an HTTP server over an extents directory, URL/NAME/<offset> (BEP 19; repeatable)', collect, [])
    .option('--web-seed-image <url>', 'a raw disk image over HTTP holding the source: the extents are read at their offsets (repeatable)', collect, [])
}
