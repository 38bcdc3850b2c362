/**
 * How a command ends when it is told to or loses its reader. Graceful stop on
 * SIGINT/SIGTERM for the long-running commands: the first signal runs the
 * handler once (close the session, flush targets); a second one exits at
 * once. A closed stdout ends a command quietly, unless it has work left that
 * needs no reader.
 */
export function onStopSignal(handler: (signal: NodeJS.Signals) => void): () => void {
  let seen = false
  const listener = (signal: NodeJS.Signals) => {
    if (seen) {
      process.stderr.write(`blockswarm: ${signal} again, exiting without waiting\n`)
      process.exit(signal === 'SIGINT' ? 130 : 143)
    }
    seen = true
    handler(signal)
  }
  process.on('SIGINT', listener)
  process.on('SIGTERM', listener)
  return () => {
    process.off('SIGINT', listener)
    process.off('SIGTERM', listener)
  }
}

/** The conventional exit code for a process stopped by `signal`. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return signal === 'SIGINT' ? 130 : 143
}

/** Commands now finishing work that needs no reader of stdout (outliveClosedStdout). */
let outliving = 0

/**
 * A closed stdout (`blockswarm inspect X | head -1`) ends the command quietly:
 * nobody is left to read the rest. Its exit code stays what the command
 * decided: a deploy that failed or was stopped, whose reader went away before
 * its report (an orchestrator's pipe, a timeout that closed it), must not exit
 * 0. While a command outlives its stdout, the rest of its output is dropped
 * and it goes on.
 */
export function endQuietlyOnClosedStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (outliving > 0 && (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED')) return
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
    throw err
  })
}

/**
 * Keep running when stdout's reader goes away, until the returned function is
 * called: for what must happen after a report whether or not anyone reads it
 * (deploy's --then reboot|kexec, which otherwise a closed pipe would skip while
 * the exit code said success).
 */
export function outliveClosedStdout(): () => void {
  outliving++
  let done = false
  return () => {
    if (done) return
    done = true
    outliving--
  }
}
