/**
 * test/programs.tsv must name every program the tests (and the code and
 * scripts they run) start, so that .ci/run installs it on a fresh machine:
 * every quoted word in those sources that is a command here, from a Debian
 * package that a minimal Debian lacks, must be in the list.
 */
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync, realpathSync } from 'node:fs'
import { join, relative } from 'node:path'
import { describe, expect, it } from 'vitest'
import { findProgram, missingPrograms, type RequiredProgram, requiredPrograms } from './setup/programs.js'

const ROOT = join(import.meta.dirname, '..')
const SCANNED = ['test', 'src', 'examples', 'tools/demo']
/** Quoted words that happen to be command names here but are used as plain words. */
const NOT_COMMANDS = new Set(['as', 'size', 'write', 'file'])

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = join(dir, d.name)
    if (d.isDirectory()) return sources(p)
    return /\.(ts|py|sh)$/.test(d.name) ? [p] : []
  })
}

/** Words that could name a command: quoted strings in code, every word in shell scripts. */
export function commandWords(text: string, shell: boolean): string[] {
  const re = shell ? /(?<![\w$.-])([a-z][a-z0-9._+-]{1,40})(?![\w.-])/g : /['"`]([a-z][a-z0-9._+-]{1,40})['"`]/g
  return [...text.matchAll(re)].map((m) => m[1])
}

/** The Debian package owning each file (usrmerge: /usr/bin/x may be recorded as /bin/x). */
function owners(paths: readonly string[]): Map<string, string> {
  const out = new Map<string, string>()
  const asked = paths.flatMap((p) => [p, p.replace(/^\/usr\//, '/')])
  const r = spawnSync('dpkg', ['-S', ...asked], { encoding: 'utf8' })
  for (const line of r.stdout.split('\n')) {
    const m = /^([^:,\s]+)(?::[a-z0-9]+)?(?:, [^:]+)*: (.+)$/.exec(line)
    if (!m) continue
    const file = m[2].trim()
    for (const p of paths) if (p === file || p.replace(/^\/usr\//, '/') === file) out.set(p, m[1])
  }
  return out
}

function priority(pkg: string): string {
  return spawnSync('dpkg-query', ['-W', '-f=${Priority}', pkg], { encoding: 'utf8' }).stdout.trim()
}

/** Programs named in `files` that come from a non-essential Debian package and are not in the list. */
export function unlisted(files: readonly { text: string; shell: boolean }[], listed: readonly RequiredProgram[]): string[] {
  const names = new Set(listed.map((l) => l.program))
  const pkgs = new Set(listed.map((l) => l.pkg))
  const found = new Map<string, string>()
  for (const f of files) {
    for (const w of commandWords(f.text, f.shell)) {
      if (names.has(w) || found.has(w) || NOT_COMMANDS.has(w)) continue
      const p = findProgram(w)
      if (p) found.set(w, realpathSync(p))
    }
  }
  const pkgOf = owners([...new Set(found.values())])
  const missing: string[] = []
  for (const [word, path] of found) {
    const pkg = pkgOf.get(path)
    if (!pkg || pkgs.has(pkg)) continue
    if (['required', 'important'].includes(priority(pkg))) continue
    missing.push(`${word} (Debian package ${pkg})`)
  }
  return missing.sort()
}

describe('test/programs.tsv, the one list of external programs', () => {
  it('names every program the tests start, so that .ci/run installs it', () => {
    const files = SCANNED.flatMap((d) => sources(join(ROOT, d))).map((f) => ({ text: readFileSync(f, 'utf8'), shell: f.endsWith('.sh'), f: relative(ROOT, f) }))
    expect(unlisted(files, requiredPrograms())).toEqual([])
  })

  it('the check itself finds a program that is not listed (aria2c, from a test source)', () => {
    const listed = requiredPrograms().filter((p) => p.pkg !== 'aria2')
    expect(unlisted([{ text: "await run('aria2c', ['--dir', d])", shell: false }], listed)).toEqual(['aria2c (Debian package aria2)'])
    expect(unlisted([{ text: 'aria2c --dir "$D" x.torrent\n', shell: true }], listed)).toEqual(['aria2c (Debian package aria2)'])
  })

  it('every listed program is installed (the global setup stops the suite otherwise)', () => {
    expect(missingPrograms()).toEqual([])
  })
})
