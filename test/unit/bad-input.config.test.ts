/**
 * The malformed pipeline.yaml corpus (test/bad-input/config): every file gets located problems — the expected
 * path and message among them — and the loader never throws. A fuzz run feeds random documents to the loader.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import { stringify } from "yaml";
import { describe, expect, it } from "vitest";
import { formatProblem, loadConfig } from "../../runtime/config/load.ts";

const DIR = path.join(import.meta.dirname, "../bad-input/config");
const files = fs.readdirSync(DIR).filter((f) => f.endsWith(".yaml")).sort();

describe("bad pipeline.yaml corpus", () => {
  it("has at least 40 cases", () => expect(files.length).toBeGreaterThanOrEqual(40));

  for (const f of files) {
    it(f, async () => {
      const file = path.join(DIR, f);
      const text = fs.readFileSync(file, "utf8");
      const expectPath = /^# expect-path: ?(.*)$/m.exec(text)?.[1].trim() ?? "";
      const expectMessage = /^# expect-message: ?(.*)$/m.exec(text)?.[1].trim() ?? "";
      const r = await loadConfig(file, { env: {} });
      expect(r.config).toBeUndefined();
      expect(r.problems.length).toBeGreaterThan(0);
      for (const p of r.problems) {
        expect(p.line).toBeGreaterThanOrEqual(1);
        expect(p.col).toBeGreaterThanOrEqual(1);
        expect(p.message.length).toBeGreaterThan(3);
        expect(formatProblem(p)).toMatch(/^.+:\d+:\d+ {2}\S.* {2}\S/);
      }
      if (expectPath) {
        const hit = r.problems.find((p) => p.path === expectPath && p.message.includes(expectMessage));
        expect(hit, `expected ${expectPath}: ${expectMessage}\ngot:\n${r.problems.map(formatProblem).join("\n")}`).toBeDefined();
        // The location points into the file body, below the two expectation comments.
        expect(hit!.line).toBeGreaterThanOrEqual(3);
      } else if (expectMessage) {
        expect(r.problems.some((p) => p.message.includes(expectMessage))).toBe(true);
      } else {
        expect(r.problems[0].kind).toBe("syntax");
      }
    });
  }
});

describe("config loader fuzz", () => {
  const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
    leaf: fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constantFrom("${X}", "${HOME:-x}", "0 * * * *", "jsonl", "fs")),
    node: fc.oneof({ depthSize: "small" }, tie("leaf"), fc.array(tie("node"), { maxLength: 3 }), fc.dictionary(fc.constantFrom("plugin", "options", "cron", "task", "queue", "dir", "x"), tie("node"), { maxKeys: 3 })),
  })).node;
  const doc = fc.dictionary(
    fc.constantFrom("version", "name", "database", "store", "queues", "stages", "batch_size", "run", "schedules", "retention_days", "server", "bogus"),
    value,
    { maxKeys: 5 },
  );

  it("never throws on random documents; every problem is located", async () => {
    await fc.assert(
      fc.asyncProperty(doc, async (d) => {
        const r = await loadConfig("fuzz.yaml", { text: stringify(d), env: {} });
        expect(Boolean(r.config) !== r.problems.length > 0).toBe(true);
        for (const p of r.problems) expect(p.line).toBeGreaterThanOrEqual(1);
      }),
      { numRuns: 150 },
    );
  });

  it("never throws on random text", async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), async (t) => {
        const r = await loadConfig("fuzz.yaml", { text: t, env: {} });
        for (const p of r.problems) expect(p.line).toBeGreaterThanOrEqual(1);
      }),
      { numRuns: 200 },
    );
  });
});
