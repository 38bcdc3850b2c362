/**
 * blockswarm as a library: the public surface. Everything else under src/ is
 * internal and may change.
 *
 *   import { Session, createTorrent, parseTorrent } from 'blockswarm'
 *
 * - Session: many torrents, each onto its own target (block device, image
 *   file, extents directory), downloading, verifying, writing and seeding.
 * - createTorrent: an extent torrent of the used blocks of a disk, partition
 *   or image (ext2/3/4, FAT, NTFS, partition tables, zero-scan, partclone).
 * - parseTorrent / buildTorrent: the extent torrent format, strictly.
 * - openStore: a target as a PieceStore (what a Session writes through);
 *   SessionOptions.openStore takes any other, e.g. MemoryStore (a Buffer as
 *   the target); GuardedStore puts the checks every store makes around a
 *   backend of one's own.
 */
export { Session, SessionError, DEFAULT_PORT, DEFAULT_MEMORY, DEFAULT_MAX_UPLOADS, DEFAULT_MAX_CONNECTIONS } from './session/session.js'
export type { SessionOptions, AddOptions, DonePolicy, StoreOpener } from './session/session.js'
export { deploySucceeded, etaSeconds } from './session/outcome.js'
export type { TorrentStatus, TorrentState, PeerStatus, BanStatus, UnreachablePeer } from './swarm/status.js'
export { createTorrent } from './create/create.js'
export type { CreateOptions, CreateResult } from './create/create.js'
export { parseTorrent, buildTorrent, isInfoHash, TorrentError, DEFAULT_PIECE_LENGTH } from './torrent/metainfo.js'
export type { ExtentTorrent, BlockswarmMeta, GapPolicy, BuildInput, ParseOptions } from './torrent/metainfo.js'
export type { Extent } from './torrent/extents.js'
export { openStore, createImageFile } from './storage/store.js'
export type { OpenStoreOptions } from './storage/store.js'
export { MemoryStore } from './storage/memory-store.js'
export type { MemoryStoreOptions } from './storage/memory-store.js'
export { GuardedStore } from './storage/guarded-store.js'
export type { StoreBackend, GuardOptions } from './storage/guarded-store.js'
export { StorageError, TargetRefused } from './storage/types.js'
export type { PieceStore, TargetProblem } from './storage/types.js'
export { VERSION } from './version.js'
