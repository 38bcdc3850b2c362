/**
 * What the control services share: the Session they drive, the daemon facts
 * they report, a signal that fires when the daemon is shutting down (ending
 * watch streams), and the way to ask for that shutdown.
 */
import type { Logger } from 'pino'
import type { Session } from '../session/session.js'

/** Limits the daemon started its Session with (the SessionOptions fields of the same names; absent = the Session's default). */
export interface DaemonFacts {
  /** Default unchoke slots per torrent. */
  maxUploads?: number
  /** Default peer connections per torrent. */
  maxConnections?: number
  /** Piece buffer budget in bytes. */
  memory?: number
  /** Upload rate limit in bytes/s (0 = none). */
  uploadRate?: number
  /** The daemon exits by itself once every torrent is done. */
  exitWhenDone?: boolean
  /** What it does then: exit, reboot, kexec or command (default exit). */
  thenAction?: string
}

export interface ControlContext {
  readonly session: Session
  readonly log?: Logger
  /** Control addresses, as listened on (ports resolved). */
  readonly addresses: () => string[]
  readonly facts: DaemonFacts
  readonly startedAt: number
  /** Aborted when the control server closes. */
  readonly closing: AbortSignal
  /** Shut the daemon down gracefully, after the current call has been answered. */
  readonly requestShutdown: () => void
}
