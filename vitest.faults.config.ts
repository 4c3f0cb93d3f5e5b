import { defineConfig } from "vitest/config";

// `npm run test:faults`: real processes and services, killed and restarted on purpose; one file at a time.
export default defineConfig({
  test: {
    include: ["test/faults/**/*.test.ts"],
    // One temporary folder per run, removed at its end (test/helpers/tmpdir-setup.ts).
    globalSetup: ["test/helpers/tmpdir-setup.ts"],
    testTimeout: 300_000,
    hookTimeout: 120_000,
    maxWorkers: 1,
    fileParallelism: false,
  },
});
