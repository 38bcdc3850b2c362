/**
 * Vitest global setup: before any test runs, check that every external
 * program the suite starts (test/programs.tsv, the one list .ci/run installs
 * from) is here. A missing one stops the whole run at once with the program
 * and its Debian package, instead of an ENOENT deep inside some test.
 */
import { spawnSync } from 'node:child_process'
import { accessSync, constants, readFileSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface RequiredProgram {
  /** A command name, an absolute path, or "python3:MODULE". */
  readonly program: string
  readonly pkg: string
  /** On every fresh machine of this kind: checked, not installed by .ci/run. */
  readonly base: boolean
}

const LIST = join(dirname(fileURLToPath(import.meta.url)), '..', 'programs.tsv')
const PYTHON = '/usr/bin/python3'

export function requiredPrograms(): RequiredProgram[] {
  return readFileSync(LIST, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const [program, pkg, flag] = l.split(/\t+/)
      if (!program || !pkg || (flag !== undefined && flag !== 'base')) throw new Error(`${LIST}: a line needs "program<TAB>package[<TAB>base]": ${JSON.stringify(l)}`)
      return { program, pkg, base: flag === 'base' }
    })
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** Where `name` is found on PATH (with the sbin directories root has), or undefined. */
export function findProgram(name: string): string | undefined {
  if (name.includes('/')) return executable(name) ? name : undefined
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin']
  for (const d of dirs) if (d && executable(join(d, name))) return join(d, name)
  return undefined
}

/** Python modules that Debian's python3 cannot import (all of them when python3 itself is missing). */
function missingModules(modules: readonly string[]): string[] {
  if (modules.length === 0) return []
  if (!executable(PYTHON)) return [...modules]
  const probe = `import importlib,sys\nfor m in sys.argv[1:]:\n    try: importlib.import_module(m)\n    except Exception: print(m)`
  const r = spawnSync(PYTHON, ['-c', probe, ...modules], { encoding: 'utf8' })
  return r.stdout.split('\n').filter(Boolean)
}

export function missingPrograms(): string[] {
  const all = requiredPrograms()
  const py = all.filter((p) => p.program.startsWith('python3:'))
  const noModule = new Set(missingModules(py.map((p) => p.program.slice('python3:'.length))))
  const lines: string[] = []
  for (const p of all) {
    if (p.program.startsWith('python3:')) {
      const m = p.program.slice('python3:'.length)
      if (noModule.has(m)) lines.push(`missing Python module ${m} (for ${PYTHON}): install Debian package ${p.pkg}`)
    } else if (!findProgram(p.program)) {
      lines.push(`missing program ${p.program}: install Debian package ${p.pkg}`)
    }
  }
  return lines
}

export default function setup(): void {
  const missing = missingPrograms()
  if (missing.length === 0) return
  const pkgs = [...new Set(requiredPrograms().map((p) => p.pkg))].join(' ')
  throw new Error(
    `${missing.join('\n')}\n\nThe test suite needs these (the list is test/programs.tsv). On Debian: bash .ci/run installs them all, ` +
      `or apt-get install --no-install-recommends ${pkgs}`,
  )
}
