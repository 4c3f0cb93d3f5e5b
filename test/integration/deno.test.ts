/**
 * apfa under Deno: the deno.json tasks run the same sources as Node (runtime/main.ts instead of bin/apfa.mjs),
 * with the npm-installed node_modules. Skipped only where the deno binary (the `deno` devDependency) is absent.
 * @module
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withTestDatabase, type TestDatabase } from "../helpers/pg.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DENO = path.join(ROOT, "node_modules", ".bin", "deno");
const hasDeno = fs.existsSync(DENO);

// DATABASE_URL from the test environment would change what plan prints; each test sets what it needs.
const baseEnv = { ...process.env, NO_COLOR: "1", DATABASE_URL: undefined, APFA_CONFIG: undefined };

/** `deno task -q <args>` in the repository root, as a user runs it. */
function denoTask(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(DENO, ["task", "-q", ...args], { cwd: ROOT, env: baseEnv, encoding: "utf8", timeout: 90_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(!hasDeno)("deno task lint", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-deno-lint-"));
  });
  afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

  it("exits 0 on the shipped pipeline.yaml", () => {
    const r = denoTask(["lint"]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain("pipeline.yaml: ok");
    expect(r.code).toBe(0);
  });

  it("exits 1 and prints every problem with line:col and path", async () => {
    const file = path.join(dir, "broken.yaml");
    await fsp.writeFile(file, [
      "version: 1",
      "name: broken",
      "store:",
      "  plugin: fs",
      "  optons: { dir: store }",
      "queues:",
      "  embedding: many",
      "stages:",
      "  source: { plugin: jsonl, options: { path: corpus.jsonl } }",
      "  index: { plugin: nope }",
      "",
    ].join("\n"));
    const r = denoTask(["lint", file]);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/broken\.yaml:5:3 +store\.optons +unknown key "optons"; allowed: plugin, options/);
    expect(lines[1]).toMatch(/broken\.yaml:7:14 +queues\.embedding +expected number/);
    expect(lines[2]).toMatch(/broken\.yaml:10:20 +stages\.index\.plugin +unknown index plugin "nope"; installed: .*flat/);
    expect(r.stderr).toContain("3 problems in");
    expect(r.code).toBe(1);
  });

  // The Node side of this is test/integration/plugins-anywhere.test.ts; under Deno, `apfa` resolves through
  // deno.json's import map, which also applies to a module outside the project.
  for (const ext of [".ts", ".mjs"]) {
    it(`loads a ${ext} plugin from a third folder that imports apfa, and checks its options`, async () => {
      const third = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-deno-third-"));
      try {
        const typed = ext === ".ts";
        await fsp.writeFile(path.join(third, `plugin${ext}`), `import { definePlugin, z${typed ? ", type Source" : ""} } from "apfa";
export default definePlugin({
  kind: "source", name: "third", description: "numbered documents",
  options: z.strictObject({ count: z.number().int().min(1).default(2) }),
  create: (o)${typed ? ": Source" : ""} => ({ async *pages() { yield [{ id: "d" + o.count, text: "doc" }]; } }),
});
`);
        const file = path.join(dir, `third${ext}.yaml`);
        const yaml = (options: string) => `version: 1\nname: anywhere\nstages:\n  source:\n    plugin: "${path.join(third, `plugin${ext}`)}"\n    options: ${options}\n`;
        await fsp.writeFile(file, yaml("{ count: 3 }"));
        const ok = denoTask(["lint", file]);
        expect(ok.stdout + ok.stderr).toContain(": ok");
        expect(ok.code).toBe(0);
        await fsp.writeFile(file, yaml("{ count: 0, colour: blue }"));
        const bad = denoTask(["lint", file]);
        expect(bad.stdout).toMatch(/:6:23 +stages\.source\.options\.count +must be >=1/);
        expect(bad.stdout).toMatch(/:6:26 +stages\.source\.options\.colour +unknown key "colour"; allowed: count/);
        expect(bad.code).toBe(1);
      } finally {
        await fsp.rm(third, { recursive: true, force: true });
      }
    });
  }
});

describe.skipIf(!hasDeno)("deno task plan --json", () => {
  it("loads every stage plugin, usearch's native addon included, and matches Node's plan", () => {
    const r = denoTask(["plan", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout) as { stages: Array<{ stage: string; plugin: string }>; schedules: Array<{ next: string[] }> };
    expect(plan.stages.find((s) => s.stage === "index")?.plugin).toBe("flat");

    // Under `deno task test:deno` this file itself runs in Deno, whose execPath is not Node.
    const nodeBin = "Deno" in globalThis ? "node" : process.execPath;
    const node = spawnSync(nodeBin, ["bin/apfa.mjs", "plan", "--json"], { cwd: ROOT, env: baseEnv, encoding: "utf8", timeout: 90_000 });
    expect(node.status).toBe(0);
    // Next cron fires can cross a minute between the two runs; everything else must be identical.
    const stable = (p: typeof plan) => ({ ...p, schedules: p.schedules.map((s) => ({ ...s, next: s.next.length })) });
    expect(stable(plan)).toEqual(stable(JSON.parse(node.stdout)));
  });
});

describe.skipIf(!hasDeno)("deno task worker", () => {
  let db: TestDatabase;
  let dir: string;
  let pid: number | undefined;
  beforeAll(async () => {
    db = await withTestDatabase({ prefix: "apfa_deno" });
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-deno-worker-"));
    await fsp.writeFile(path.join(dir, "pipeline.yaml"), [
      "version: 1",
      "name: deno-worker",
      "database:",
      "  url: ${DATABASE_URL}",
      "store: { plugin: fs, options: { dir: store } }",
      "stages: { source: { plugin: jsonl, options: { path: corpus.jsonl } } }",
      "",
    ].join("\n"));
  });
  afterAll(async () => {
    // The task runner and its deno child share a process group; never leave either behind.
    if (pid) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    await db?.drop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it("runs a noop job against Postgres and exits 0 on SIGTERM", async () => {
    const child = spawn(DENO, ["task", "-q", "worker", "-c", path.join(dir, "pipeline.yaml"), "--no-cron"], {
      cwd: ROOT,
      env: { ...baseEnv, DATABASE_URL: db.url, APFA_LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    pid = child.pid;
    let stderr = "";
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    child.stdout.resume();
    let code: number | null | undefined;
    const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve((code = c))));

    await until("the worker to be ready", () => {
      if (code !== undefined) throw new Error(`worker exited with ${code} before it was ready:\n${stderr}`);
      return stderr.includes('"msg":"worker ready"');
    }, 60_000);

    const { rows: [job] } = await db.pool.query<{ id: string }>(`select (graphile_worker.add_job('noop', '{}'::json)).id`);
    await until("the noop job to finish", async () => {
      const { rows: [r] } = await db.pool.query<{ queued: number; ok: number }>(
        `select (select count(*)::int from graphile_worker.jobs where id = $1) as queued,
                (select count(*)::int from apfa.job_history where job_id = $1 and task = 'noop' and outcome = 'success') as ok`,
        [job.id],
      );
      return r.queued === 0 && r.ok === 1;
    });

    // process.kill, not child.kill: Deno's child_process reports a child it signalled as killed even when it exits 0.
    process.kill(child.pid!, "SIGTERM");
    expect(await exited).toBe(0);
    pid = undefined;
    expect(stderr).toContain('"msg":"worker stopped"');
    const { rows: [w] } = await db.pool.query<{ stopped: boolean }>("select stopped_at is not null as stopped from apfa.workers");
    expect(w.stopped).toBe(true);
  });
});
