import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Every external program the suite starts must be installed: stop at once, naming it and its Debian package.
    globalSetup: ['test/setup/programs.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Tests use real loop devices, processes and ports: keep files serial to bound load on 2 cores.
    fileParallelism: false,
    // The JSON report lets .ci/run print a plain "N passed, N failed" closing line.
    reporters: ['default', 'json'],
    outputFile: { json: 'dist/vitest-report.json' },
  },
})
