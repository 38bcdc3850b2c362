/**
 * An emulated datacenter for the swarm benchmark: one network namespace per
 * node, all joined by a bridge that lives in a namespace of its own, every
 * link shaped with `tc tbf` to the same rate in both directions.
 *
 * Addresses (10.77.0.0/16) exist only inside these namespaces; nothing is
 * sent from the root namespace. `destroy()` removes every namespace (which
 * takes the veth links and qdiscs with it) and is safe to call twice.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'

export interface TopologyOptions {
  /** Number of nodes (node 0 is the seeder). */
  readonly nodes: number
  /** Link rate for tc, e.g. "100mbit". */
  readonly rate: string
  /** Rate of node 0's link (the seeder), default `rate`. */
  readonly seederRate?: string
  /** Unique prefix for names; default derived from the PID. */
  readonly prefix?: string
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

/** tbf burst big enough for the rate at a 1 ms timer, and a queue bound of 20 ms. */
function tbfArgs(rate: string): string[] {
  return ['root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '50ms']
}

export class Topology {
  readonly prefix: string
  readonly bridgeNs: string
  readonly nodeNs: string[] = []
  private destroyed = false
  private readonly children = new Set<ChildProcess>()

  private constructor(readonly opts: TopologyOptions) {
    this.prefix = opts.prefix ?? `bsw${process.pid}`
    this.bridgeNs = `${this.prefix}-br`
  }

  /** The address of node `i` inside the emulated network. */
  static address(i: number): string {
    return `10.77.${Math.floor((i + 1) / 250)}.${((i + 1) % 250) + 1}`
  }

  static create(opts: TopologyOptions): Topology {
    const t = new Topology(opts)
    try {
      t.build()
    } catch (err) {
      t.destroy()
      throw err
    }
    return t
  }

  private build(): void {
    const br = this.bridgeNs
    ip(['netns', 'add', br])
    ip(['-n', br, 'link', 'set', 'lo', 'up'])
    ip(['-n', br, 'link', 'add', 'br0', 'type', 'bridge'])
    ip(['-n', br, 'link', 'set', 'br0', 'up'])
    for (let i = 0; i < this.opts.nodes; i++) {
      const ns = `${this.prefix}-n${i}`
      ip(['netns', 'add', ns])
      this.nodeNs.push(ns)
      ip(['-n', ns, 'link', 'set', 'lo', 'up'])
      // The veth pair is made inside the node namespace, then one end moves to the bridge's.
      ip(['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${i}`])
      ip(['-n', ns, 'link', 'set', `p${i}`, 'netns', br])
      ip(['-n', ns, 'addr', 'add', `${Topology.address(i)}/16`, 'dev', 'eth0'])
      ip(['-n', ns, 'link', 'set', 'eth0', 'up'])
      ip(['-n', br, 'link', 'set', `p${i}`, 'master', 'br0'])
      ip(['-n', br, 'link', 'set', `p${i}`, 'up'])
      // Shape both directions: node upload on its eth0, node download on the bridge port.
      const rate = i === 0 && this.opts.seederRate ? this.opts.seederRate : this.opts.rate
      execFileSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'eth0', ...tbfArgs(rate)])
      execFileSync('ip', ['netns', 'exec', br, 'tc', 'qdisc', 'add', 'dev', `p${i}`, ...tbfArgs(rate)])
    }
  }

  /** Start a process inside node `i`'s namespace; killed by destroy() if still running. */
  spawn(i: number, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.nodeNs[i], cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    return child
  }

  /** Kill every process started here, then delete every namespace. Idempotent. */
  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
    for (const ns of [...this.nodeNs, this.bridgeNs]) {
      try {
        // Processes inside a namespace we made (started through `ip netns exec`) are ours.
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean)
        for (const pid of pids) {
          try {
            process.kill(Number(pid), 'SIGKILL')
          } catch {
            // already gone
          }
        }
        ip(['netns', 'del', ns])
      } catch {
        // not created, or already removed
      }
    }
  }
}
