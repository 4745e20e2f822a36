import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    reporters: ['default', './test/setup/summary-reporter.ts'],
    globalSetup: ['test/setup/global-setup.ts'],
    // One PostgreSQL per run; each test file gets its own database cloned from a migrated template.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 120_000,
  },
});
