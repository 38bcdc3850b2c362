/**
 * Graceful stop on SIGINT/SIGTERM for the long-running commands: the first
 * signal runs the handler once (close the session, flush targets); a second
 * one exits at once.
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
