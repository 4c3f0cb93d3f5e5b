import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    exclude: ["test/faults/**", "node_modules/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Suites share one Postgres and Redis; files isolate themselves by schema/prefix, but 2 cores is the limit.
    maxWorkers: 2,
  },
});
