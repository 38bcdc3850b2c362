#!/usr/bin/env -S node --max-semi-space-size=1
// --max-semi-space-size=1: V8's young generation otherwise grows to 2 × 16 MiB
// under a download's allocation rate; measured at 1 GiB over loopback: peak
// RSS 25-30 MiB lower, CPU the same.
import { existsSync, statSync } from 'node:fs'

// The bundle `npm run build` makes (rolldown.config.js), unless tsc alone ran
// after it (dist/src newer): then dist/src, so a stale bundle is never run.
const bundle = new URL('../dist/bundle/main.js', import.meta.url)
const modules = new URL('../dist/src/cli/main.js', import.meta.url)
const main = existsSync(bundle) && (!existsSync(modules) || statSync(bundle).mtimeMs >= statSync(modules).mtimeMs) ? bundle : modules
if (!existsSync(main)) {
  process.stderr.write('blockswarm: not built yet (dist/ is missing): run `npm run build` in the checkout (npm ci and npm install do it)\n')
  process.exit(1)
}
const { runCli } = await import(main.href)
runCli(process.argv)
