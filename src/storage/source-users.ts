/**
 * A source that may change while it is read (imaged by `create`, served by
 * `seed`): a block device mounted read-write (itself, a partition or a device
 * stacked on it) or used as swap. The torrent would match no state of it, and
 * its seed would fail the peers' piece checks.
 */
import { type DeviceUser, deviceUsers } from './device-usage.js'

/** The users of block device `devno` that can change its content while it is read: read-write mounts and swap. */
export async function changingSourceUsers(devno: string): Promise<DeviceUser[]> {
  return (await deviceUsers(devno)).filter((u) => !u.readOnly)
}

/** How to stop such a source from changing while it is read, for the messages refusing one. */
export function stableSourceFixes(users: readonly DeviceUser[]): string {
  const fixes: string[] = []
  const mounts = [...new Set(users.filter((u) => u.kind === 'mount').map((u) => u.where))]
  if (mounts.length > 0) {
    const each = (cmd: string) => mounts.map((m) => `${cmd} ${m}`).join(' and ')
    fixes.push(`unmount it, remount it read-only (${each('mount -o remount,ro')}), or freeze it with ${each('fsfreeze -f')} (and ${each('fsfreeze -u')} when done)`)
  }
  for (const u of users) if (u.kind === 'swap') fixes.push(`swapoff ${u.device}`)
  return fixes.join('; ')
}
