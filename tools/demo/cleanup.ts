/**
 * The demo's undo list: every process, loop device and directory it makes is
 * registered here as it is made, and undone once, newest first, whether the
 * demo succeeded, failed, timed out or was interrupted.
 */
export class Cleanup {
  private readonly actions: { what: string; undo: () => Promise<void> | void }[] = []
  private running?: Promise<string[]>

  /** Register how to undo `what`; the returned function drops it again (when it no longer needs undoing). */
  add(what: string, undo: () => Promise<void> | void): () => void {
    if (this.running) throw new Error(`cannot register ${what}: the cleanup already ran`)
    const action = { what, undo }
    this.actions.push(action)
    return () => {
      const at = this.actions.indexOf(action)
      if (at >= 0) this.actions.splice(at, 1)
    }
  }

  /** Undo everything (only the first call does the work); resolves to what could not be undone. */
  run(): Promise<string[]> {
    this.running ??= (async () => {
      const problems: string[] = []
      while (this.actions.length) {
        const { what, undo } = this.actions.pop()!
        try {
          await undo()
        } catch (err) {
          problems.push(`${what}: ${(err as Error).message}`)
        }
      }
      return problems
    })()
    return this.running
  }
}
