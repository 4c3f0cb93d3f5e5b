/**
 * pipeline.yaml loading and `apfa lint`: every problem in one run with its line:col and path, env
 * interpolation, the defaults merge, and the CLI surface (lint, schema, plan --json, --help).
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig, type Problem } from "../../runtime/config/load.ts";
import { DEFAULT_SCHEDULES, TASKS } from "../../runtime/config/schema.ts";
import { builtinPlugins } from "../../runtime/plugins.ts";
import { testConfig } from "../helpers/pg.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = path.join(ROOT, "bin/apfa.mjs");
const SOURCE = "stages:\n  source: { plugin: jsonl, options: { path: docs.jsonl } }\n";

/** Five distinct mistakes, one per line noted on the right (line numbers are 1-based). */
const FIVE_MISTAKES = [
  "version: 1", //                                                   1
  "name: lint-me", //                                                2
  "batch_sise: 100", //                                              3  unknown key
  "queues:", //                                                      4
  "  embedding: four", //                                            5  wrong type
  "schedules:", //                                                   6
  '  nightly: { cron: "0 25 * * *", task: embed_all }', //           7  bad cron (hour)
  "stages:", //                                                      8
  "  source: { plugin: jsonl, options: { path: docs.jsonl } }", //   9
  "  embedder:", //                                                  10
  "    plugin: nope", //                                             11 unknown plugin
  "database:", //                                                    12
  "  url: ${APFA_LINT_DB_URL}", //                                   13 missing env var
  "",
].join("\n");

const lintText = (text: string, env: Record<string, string | undefined> = {}) =>
  loadConfig(path.join(process.cwd(), "lint-fixture.yaml"), { text, env });

const brief = (ps: Problem[]) => ps.map((p) => ({ at: `${p.line}:${p.col}`, path: p.path, kind: p.kind }));

describe("loadConfig collects every problem with its location", () => {
  it("reports exactly the 5 mistakes of a file, each with line:col, path and a helpful message", async () => {
    const r = await lintText(FIVE_MISTAKES);
    expect(r.config).toBeUndefined();
    expect(brief(r.problems)).toEqual([
      { at: "3:1", path: "batch_sise", kind: "unknown" },
      { at: "5:14", path: "queues.embedding", kind: "type" },
      { at: "7:20", path: "schedules.nightly.cron", kind: "value" },
      { at: "11:13", path: "stages.embedder.plugin", kind: "plugin" },
      { at: "13:8", path: "database.url", kind: "env" },
    ]);
    const [unknown, type, cron, plugin, env] = r.problems;
    expect(unknown.message).toMatch(/^unknown key "batch_sise"; allowed: version, name, database, store, queues, stages, batch_size, run,/);
    expect(type.message).toBe("expected number, got string");
    expect(cron.message).toBe("hour: 25 is out of range 0-23");
    expect(plugin.message).toBe(`unknown embedder plugin "nope"; installed: ${builtinPlugins("embedder").join(", ")}; no package "nope" is installed either (npm install it next to apfa, or give a path: ./my-plugin.ts)`);
    expect(builtinPlugins("embedder")).toContain("use-lite");
    expect(env.message).toMatch(/environment variable APFA_LINT_DB_URL is not set; set it or write \$\{APFA_LINT_DB_URL:-default\}/);
    for (const p of r.problems) expect(p.file).toBe("lint-fixture.yaml");
  });

  it("names the cron field that is wrong", async () => {
    const cron = async (expr: string) =>
      (await lintText(`${SOURCE}schedules:\n  x: { cron: "${expr}", task: noop }\n`)).problems.map((p) => p.message);
    expect(await cron("61 * * * *")).toEqual(["minute: 61 is out of range 0-59"]);
    expect(await cron("* * 0 * *")).toEqual(["day-of-month: 0 is out of range 1-31"]);
    expect(await cron("* * * 1-13 *")).toEqual(["month: range 1-13 is outside 1-12"]);
    expect(await cron("* * * * MON")).toEqual(['day-of-week: "MON" is not a number, range (a-b), step (*/n) or *']);
    expect(await cron("* * *")).toEqual(["cron expression has 3 fields; expected 5: minute hour day-of-month month day-of-week"]);
  });

  it("a plugin whose options are not a zod schema is a located problem, not a crash", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-lint-plugin-"));
    try {
      await fsp.writeFile(path.join(dir, "bad.mjs"), 'export default { kind: "source", name: "bad", description: "x", options: {}, create() {} };\n');
      const r = await loadConfig(path.join(dir, "pipeline.yaml"), { text: "stages:\n  source:\n    plugin: ./bad.mjs\n", env: {} });
      expect(brief(r.problems)).toEqual([{ at: "3:13", path: "stages.source.plugin", kind: "plugin" }]);
      expect(r.problems[0].message).toMatch(/source plugin "\.\/bad\.mjs": `options` must be a zod schema/);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it("locates a YAML syntax error and stops there", async () => {
    const r = await lintText('name: ok\nbatch_size: 10\nqueues: { embedding: 2\nretention_days: 3\n');
    expect(r.problems.length).toBeGreaterThanOrEqual(1);
    expect(r.problems[0]).toMatchObject({ kind: "syntax", line: 4, path: "" });
    expect(r.problems.every((p) => p.kind === "syntax")).toBe(true);
    const dup = await lintText("name: a\nname: b\n");
    expect(dup.problems).toMatchObject([{ kind: "syntax", line: 2, col: 1 }]);
    expect(dup.problems[0].message).toMatch(/unique/i);
  });

  it("interpolates ${VAR} and ${VAR:-default}, typing whole-value numbers and booleans", async () => {
    const text = `${SOURCE}batch_size: \${APFA_BATCH:-300}\nretention_days: \${APFA_RETENTION}\n` +
      "database:\n  url: postgres://\${PGUSER:-app}@db:\${PGPORT:-5432}/apfa\n" +
      "server:\n  port: \${APFA_PORT:-8081}\n  auth:\n    jwt_secret: \${APFA_SECRET:-}\n" +
      "schedules:\n  stats:\n    enabled: \${APFA_STATS:-false}\n";
    const a = await testConfig(text, { env: { APFA_RETENTION: "2.5" } });
    expect(a.batch_size).toBe(300);
    expect(a.retention_days).toBe(2.5);
    expect(a.database.url).toBe("postgres://app@db:5432/apfa");
    expect(a.server.port).toBe(8081);
    expect(a.server.auth.jwt_secret).toBeUndefined();
    expect(a.schedules.stats.enabled).toBe(false);

    const b = await testConfig(text, { env: { APFA_RETENTION: "1", APFA_BATCH: "42", PGUSER: "bob", PGPORT: "6543", APFA_PORT: "", APFA_SECRET: "s3", APFA_STATS: "true" } });
    expect(b.batch_size).toBe(42);
    expect(b.database.url).toBe("postgres://bob@db:6543/apfa");
    expect(b.server.port).toBe(8081); // an empty variable counts as unset
    expect(b.server.auth.jwt_secret).toBe("s3");
    expect(b.schedules.stats.enabled).toBe(true);

    const c = await lintText(text, {});
    expect(brief(c.problems)).toEqual([{ at: "4:17", path: "retention_days", kind: "env" }]);
  });

  it("merges defaults: named queues keep the others, default schedules stay, enabled: false drops one", async () => {
    const c = await testConfig(`${SOURCE}queues:\n  embedding: 8\nschedules:\n  stats: { enabled: false }\n  hourly: { cron: "5 * * * *", task: noop }\n`);
    expect(c.queues).toEqual({ embedding: 8, indexing: 1, maintenance: 1 });
    expect(Object.keys(c.schedules).sort()).toEqual(["cleanup", "hourly", "rebuild", "stats"]);
    expect(c.schedules.rebuild).toMatchObject({ ...DEFAULT_SCHEDULES.rebuild, enabled: true, overlap: "skip" });
    expect(c.schedules.cleanup).toMatchObject({ ...DEFAULT_SCHEDULES.cleanup, enabled: true });
    expect(c.schedules.stats).toMatchObject({ ...DEFAULT_SCHEDULES.stats, enabled: false });
    expect(c.schedules.hourly).toMatchObject({ cron: "5 * * * *", task: "noop", enabled: true });
    expect(c.batch_size).toBe(1000);
    expect(c.stages.embedder.plugin).toBe("use-lite");
    expect(c.run).toEqual({ timeout: "1h", max_attempts: 5, missing_batch_threshold: 0 });
  });

  it("reports a schedule routed to an undeclared queue, listing the declared ones", async () => {
    const r = await lintText(`${SOURCE}schedules:\n  x: { cron: "* * * * *", task: noop, queue: fast }\n`);
    expect(r.problems).toMatchObject([{ path: "schedules.x.queue", kind: "value", line: 4, message: 'queue "fast" is not declared; declared: embedding, indexing, maintenance' }]);
  });
});

// ---------------------------------------------------------------- the CLI

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function apfa(args: string[], opts: { cwd?: string; env?: Record<string, string | undefined> } = {}): Promise<Ran> {
  const env = { ...process.env, APFA_LINT_DB_URL: undefined, APFA_CONFIG: undefined, ...opts.env } as NodeJS.ProcessEnv;
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? ROOT, env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe("apfa CLI", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-lint-"));
    await fsp.writeFile(path.join(dir, "bad.yaml"), FIVE_MISTAKES);
  });
  afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

  it("lint prints every problem as `file:LINE:COL  path  message` and exits 1", async () => {
    const r = await apfa(["lint", "bad.yaml"], { cwd: dir });
    expect(r.code).toBe(1);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(5);
    for (const l of lines) expect(l).toMatch(/^bad\.yaml:\d+:\d+  \S+  \S.*$/);
    expect(lines.map((l) => l.split("  ").slice(0, 2).join(" "))).toEqual([
      "bad.yaml:3:1 batch_sise",
      "bad.yaml:5:14 queues.embedding",
      "bad.yaml:7:20 schedules.nightly.cron",
      "bad.yaml:11:13 stages.embedder.plugin",
      "bad.yaml:13:8 database.url",
    ]);
    expect(r.stderr).toContain("5 problems in bad.yaml");
  });

  it("loads a .ts plugin by path from a folder with no package.json, and checks its options", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-ts-plugin-"));
    try {
      await fsp.symlink(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
      await fsp.writeFile(path.join(dir, "my-source.ts"), [
        'import { z } from "zod";',
        "const options = z.strictObject({ folder: z.string() });",
        'export default { kind: "source" as const, name: "mine", description: "t", options, create: () => ({ async *pages() {} }) };',
      ].join("\n"));
      await fsp.writeFile(path.join(dir, "pipeline.yaml"), "stages:\n  source:\n    plugin: ./my-source.ts\n    options: { folder: 3 }\n");
      const r = await apfa(["lint", "pipeline.yaml"], { cwd: dir });
      expect(r.stdout).toBe("pipeline.yaml:4:24  stages.source.options.folder  expected string, got number\n");
      expect(r.code).toBe(1);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it("lint exits 0 and says ok for the shipped pipeline.yaml", async () => {
    const r = await apfa(["lint", "pipeline.yaml"]);
    expect(r.stderr).toBe("");
    expect(r).toMatchObject({ code: 0, stdout: "pipeline.yaml: ok\n" });
  });

  it("schema prints exactly the committed pipeline.schema.json (regenerate with `npm run schema`)", async () => {
    const r = await apfa(["schema"]);
    expect(r.code).toBe(0);
    const committed = fs.readFileSync(path.join(ROOT, "pipeline.schema.json"), "utf8");
    expect(r.stdout, "pipeline.schema.json is stale: run `npm run schema`").toBe(committed);
    const schema = JSON.parse(committed) as { properties: Record<string, unknown> };
    expect(Object.keys(schema.properties)).toEqual(expect.arrayContaining(["queues", "stages", "schedules", "batch_size"]));
  });

  it("plan --json lists the queues with their tasks and the next 3 fires of every schedule", async () => {
    const before = Date.now();
    const r = await apfa(["plan", "--json"]);
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout) as {
      queues: Array<{ name: string; concurrency: number; serial: boolean; tasks: string[] }>;
      schedules: Array<{ name: string; cron: string; task: string; queue: string; next: string[] }>;
      batch_size: number;
    };
    expect(plan.batch_size).toBe(250);
    expect(plan.queues).toEqual([
      { name: "embedding", concurrency: 4, serial: false, tasks: ["embed_all", "embed_batch"] },
      { name: "indexing", concurrency: 1, serial: true, tasks: ["build_index"] },
      { name: "maintenance", concurrency: 1, serial: true, tasks: ["cleanup", "compute_index_stats", "noop"] },
    ]);
    expect(plan.queues.flatMap((q) => q.tasks).sort()).toEqual([...TASKS].sort());
    expect(plan.schedules.map((s) => [s.name, s.task, s.queue])).toEqual([
      ["rebuild", "embed_all", "embedding"],
      ["cleanup", "cleanup", "maintenance"],
      ["stats", "compute_index_stats", "maintenance"],
    ]);
    const gap = { rebuild: 3_600_000, cleanup: 86_400_000, stats: 300_000 } as Record<string, number>;
    for (const s of plan.schedules) {
      expect(s.next).toHaveLength(3);
      const t = s.next.map((x) => Date.parse(x));
      expect(t[0]).toBeGreaterThan(before - 1000);
      expect(t[0] - before).toBeLessThanOrEqual(gap[s.name]);
      expect([t[1] - t[0], t[2] - t[1]]).toEqual([gap[s.name], gap[s.name]]);
    }
  });

  it("--help works for every command listed by `apfa --help`", async () => {
    const top = await apfa(["--help"]);
    expect(top.code).toBe(0);
    const section = top.stdout.split("Commands:\n")[1].split("\n\n")[0];
    const names = section.split("\n").map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
    expect(names).toEqual(expect.arrayContaining(["lint", "schema", "plan", "migrate", "worker", "run", "main"]));
    for (let i = 0; i < names.length; i += 2) {
      const out = await Promise.all(names.slice(i, i + 2).map((n) => apfa([n, "--help"]).then((r) => ({ n, ...r }))));
      for (const r of out) {
        expect(r.code, `${r.n} --help: ${r.stderr}`).toBe(0);
        expect(r.stdout, r.n).toMatch(new RegExp(`apfa ${r.n}[\\s\\S]*Options:[\\s\\S]*--help`));
      }
    }
    const unknown = await apfa(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"; commands: lint, schema, plan/);
  }, 180_000);
});
