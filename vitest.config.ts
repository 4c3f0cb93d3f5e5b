import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));

export default defineConfig({
  // The package's public entries, as tests and examples import them, resolve to the sources (not dist/).
  resolve: {
    alias: [
      { find: /^apfa$/, replacement: src("./runtime/index.ts") },
      { find: /^apfa\/testing$/, replacement: src("./runtime/testing.ts") },
      { find: /^apfa\/server$/, replacement: src("./server/index.ts") },
    ],
  },
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    exclude: ["test/faults/**", "node_modules/**"],
    // One temporary folder per run, removed at its end (test/helpers/tmpdir-setup.ts).
    globalSetup: ["test/helpers/tmpdir-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Suites share one Postgres and Redis; files isolate themselves by schema/prefix, but 2 cores is the limit.
    maxWorkers: 2,
  },
});
