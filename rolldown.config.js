// `npm run build`, after tsc: the command line bundled from tsc's output into
// dist/bundle, the entry and one chunk per command (main.ts loads only the
// command being run) plus shared chunks. Loading a few files instead of
// dist/src's ~60 modules one by one saves ~0.05 s of CPU per process start
// (npm run bench:startup), which every node of a fleet pays at once.
// Node's builtins and the package's dependencies stay imports (anything else
// the output needs, such as a syntax helper of the bundler, is bundled);
// names are kept as written (error classes and stack traces read the same as
// from dist/src).
import { readFileSync } from 'node:fs'
import { builtinModules } from 'node:module'

const deps = Object.keys(JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')).dependencies ?? {})
const builtins = new Set(builtinModules)
const packageOf = (id) => id.split('/').slice(0, id.startsWith('@') ? 2 : 1).join('/')

export default {
  input: 'dist/src/cli/main.js',
  platform: 'node',
  external: (id) => id.startsWith('node:') || builtins.has(id) || deps.includes(packageOf(id)),
  output: { dir: 'dist/bundle', format: 'esm', cleanDir: true, keepNames: true },
}
