/**
 * When a complete torrent has seeded enough ("done": it then stops serving): uploaded ≥ ratio × size, or no
 * upload for `idle` seconds, or every peer it knows of is a seed too (nobody
 * left to serve). Any one rule suffices; with neither a ratio nor an idle
 * time given it seeds until told to stop.
 */
export interface DonePolicy {
  /** Stop after uploading this many times the torrent's size. */
  readonly seedRatio?: number
  /** Stop after this many seconds without uploading a byte. */
  readonly seedIdle?: number
}

export interface SeedingState {
  readonly now: number
  readonly size: number
  /** Payload bytes uploaded since the torrent was added. */
  readonly uploaded: number
  /** When the current seeding run began (the torrent became complete, or was resumed), ms. */
  readonly seedingSince: number
  /** Last upload, ms; undefined if none since. */
  readonly lastUpload?: number
  /** Peers seen to be seeds (connected now or before). */
  readonly seeds: number
  /** Peers connected or known by address that are not known to be seeds. */
  readonly leechers: number
  /** Leechers the tracker reports, when known. */
  readonly trackerLeechers?: number
}

/** Why the torrent is done, or undefined while it should keep seeding. */
export function doneReason(policy: DonePolicy, s: SeedingState): string | undefined {
  if (policy.seedRatio !== undefined && s.uploaded >= policy.seedRatio * s.size) {
    return `uploaded ${s.uploaded} bytes, ${(s.uploaded / s.size).toFixed(2)} × the size (seed ratio ${policy.seedRatio})`
  }
  if (policy.seedIdle !== undefined) {
    const since = Math.max(s.seedingSince, s.lastUpload ?? 0)
    if (s.now - since >= policy.seedIdle * 1000) return `no upload for ${policy.seedIdle} s (seed idle)`
  }
  if ((policy.seedRatio !== undefined || policy.seedIdle !== undefined) && s.seeds > 0 && s.leechers === 0 && (s.trackerLeechers ?? 0) === 0) {
    return `every known peer (${s.seeds}) is a seed`
  }
  return undefined
}
