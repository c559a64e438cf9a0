import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

// Most test files spend their time waiting on sockets, child processes and browsers, not on the
// CPU: half again as many workers as cores keeps the cores busy (on 2 cores, 3 workers cut the
// SQLite pass from 313 s to 212 s with every test passing).
const workers = Math.max(2, Math.ceil(availableParallelism() * 1.5));

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A test that starts several `gatehouse` processes (the CLI and doctor suites) took over 30 s
    // with the workers above and another suite sharing 2 cores; a hang still fails within a minute.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    globalSetup: ['test/support/global-setup.ts'],
    maxWorkers: workers,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
  },
});
