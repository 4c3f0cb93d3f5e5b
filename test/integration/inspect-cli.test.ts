/**
 * `apfa inspect` and `apfa index list|rollback` against a live system (fresh Postgres, a worker that ran two
 * runs with the hash test embedder): the commands run through `cli()` in process, as `bin/apfa.mjs` calls it,
 * with stdout/stderr captured; the last test runs the real binary once for its exit code.
 * @module
 */
import { spawnSync } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { SwapEvent } from "../../runtime/contracts.ts";
import { cli } from "../../runtime/cli.ts";
import { loadQuerySamples } from "../../runtime/query-samples.ts";
import { embedderKey } from "../../runtime/stages/identity.ts";
import type { RunRow } from "../../runtime/runs.ts";
import { readLatest } from "../../runtime/versions.ts";
import { openOpsSystem, until, type OpsSystem } from "../fixtures/ops-system.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
let sys: OpsSystem;
let first: RunRow;
let second: RunRow;

beforeAll(async () => {
  sys = await openOpsSystem({
    docs: 30,
    overrides: { schedules: { rebuild: { enabled: true, cron: "*/15 * * * *" }, stats: { enabled: true } } },
  });
  await sys.startWorker();
  first = await sys.runToEnd();
  await sys.writeCorpus(40, "second");
  second = await sys.runToEnd();
  expect([first.status, second.status]).toEqual(["succeeded", "succeeded"]);
});
afterAll(() => sys?.close());

/** Runs `apfa <args> -c <pipeline.yaml>` in process; returns the exit code and what it printed. */
async function apfa(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  const error = vi.spyOn(console, "error").mockImplementation((...a: unknown[]) => void err.push(a.join(" ")));
  try {
    const code = await cli([...args, "-c", sys.file]);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}
const json = async (...args: string[]) => {
  const r = await apfa(...args, "--json");
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out);
};

describe("apfa inspect", () => {
  it("workers: the live worker answers the ping (exit 0)", async () => {
    const workers = await json("inspect", "workers");
    expect(workers).toEqual([expect.objectContaining({ id: sys.worker!.id, status: "online", online: true, queues: { embedding: 4, indexing: 1, maintenance: 1 } })]);
    const text = await apfa("inspect", "workers");
    expect(text.out).toMatch(new RegExp(`${sys.worker!.id} +online +\\d+s ago +embedding:4,indexing:1,maintenance:1 +-`));
  });

  it("active: the running job and the worker holding it", async () => {
    expect(await json("inspect", "active")).toEqual([]);
    const job = await sys.addJob("hold");
    try {
      const active = await until("the hold job to be running", async () => {
        const rows = await json("inspect", "active");
        return rows.length ? rows : undefined;
      });
      expect(active).toEqual([expect.objectContaining({ id: job, task: "hold", queue: "maintenance", state: "running", worker_id: sys.worker!.id })]);
    } finally {
      sys.releaseHolds();
    }
  });

  it("scheduled: the next three fires of each enabled schedule, soonest first, from pipeline.yaml", async () => {
    const t0 = Date.now();
    const s = await json("inspect", "scheduled");
    expect(s.map((x: { name: string }) => x.name).sort()).toEqual(["rebuild", "stats"]);
    const byName = Object.fromEntries(s.map((x: { name: string }) => [x.name, x]));
    expect(byName.rebuild).toMatchObject({ cron: "*/15 * * * *", task: "embed_all", queue: "embedding", overlap: "skip" });
    expect(byName.stats).toMatchObject({ cron: "*/5 * * * *", task: "compute_index_stats", queue: "maintenance" });
    for (const [name, step] of [["rebuild", 15], ["stats", 5]] as const) {
      const fires = (byName[name].next as string[]).map((d) => new Date(d));
      expect(fires).toHaveLength(3);
      expect(fires[0].getTime()).toBeGreaterThan(t0 - 1000);
      expect(fires[0].getTime() - t0).toBeLessThanOrEqual(step * 60_000);
      for (const f of fires) expect([f.getUTCMinutes() % step, f.getUTCSeconds()]).toEqual([0, 0]);
      expect(fires[1].getTime() - fires[0].getTime()).toBe(step * 60_000);
    }
    expect(Date.parse(s[0].next[0])).toBeLessThanOrEqual(Date.parse(s[1].next[0]));
    expect((await apfa("inspect", "scheduled")).out).toContain("embed_all → embedding");
  });

  it("queues: depth and the last hour's outcomes per queue", async () => {
    const { rows: [h] } = await sys.db.pool.query<{ n: number }>("select count(*)::int as n from apfa.job_history where queue = 'embedding' and outcome = 'success'");
    // embed_all + 2 batches (30 docs / 20), then embed_all + 2 batches (40 docs).
    expect(h.n).toBe(6);
    const q = await json("inspect", "queues");
    expect(q.map((x: { queue: string }) => x.queue)).toEqual(["embedding", "indexing", "maintenance"]);
    expect(q[0]).toMatchObject({ queue: "embedding", concurrency: 4, depth: 0, running: 0, completed_1h: 6, failed_1h: 0, rate_per_min: 1.2 });
    expect(q[1]).toMatchObject({ queue: "indexing", completed_1h: 2 });
  });

  it("runs: newest first with progress, as JSON and as a table", async () => {
    const runs = await json("inspect", "runs");
    expect(runs.map((r: { id: string }) => r.id)).toEqual([second.id, first.id]);
    expect(runs[0]).toMatchObject({ status: "succeeded", progress: 1, batches_total: 2, docs_embedded: 40, index_version: second.index_version });
    expect((await json("inspect", "runs", "--limit", "1"))).toHaveLength(1);
    const text = await apfa("inspect", "runs");
    expect(text.out).toMatch(new RegExp(`${second.id} +succeeded +test +100% \\(2/2\\) +40 `));
  });

  it("usage errors exit 2 and name the subcommands", async () => {
    for (const args of [["inspect"], ["inspect", "bogus"], ["inspect", "runs", "extra"], ["inspect", "runs", "--limit", "0"]]) {
      const r = await apfa(...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err).toMatch(/expected one of workers, active, scheduled, queues, runs|--limit must be/);
    }
  });
});

describe("apfa index", () => {
  it("list: every version, the current one marked", async () => {
    const l = await json("index", "list");
    expect(l.current).toBe(second.index_version);
    expect(l.versions.map((v: { version: string; current: boolean }) => [v.version, v.current])).toEqual([[second.index_version, true], [first.index_version, false]]);
    const text = await apfa("index", "list");
    expect(text.out.split("\n")[0]).toMatch(new RegExp(`^\\* ${second.index_version} +40 docs +64d +flat`));
  });

  it("rollback re-publishes an older version: latest moves back and a swap event goes out", async () => {
    const events: SwapEvent[] = [];
    const unsubscribe = await (await sys.pipeline.notifier()).subscribe((e) => events.push(e));
    try {
      const r = await apfa("index", "rollback", first.index_version!);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toBe(`rolled back: latest is now ${first.index_version} (was ${second.index_version}); servers swap on the event or their next check`);
      expect((await readLatest(sys.pipeline.store))?.version).toBe(first.index_version);
      await until("the swap event", () => events.find((e) => e.version === first.index_version));
      expect((await json("index", "list")).current).toBe(first.index_version);
    } finally {
      await unsubscribe();
    }
  });

  it("rollback refuses unknown, deleted and incomplete versions (exit 1) and leaves latest alone", async () => {
    const unknown = await apfa("index", "rollback", "cd".repeat(32));
    expect(unknown.code).toBe(1);
    expect(unknown.err).toBe(`apfa index rollback: refused: index version ${"cd".repeat(32)} is not in apfa.index_versions; \`apfa index list\` shows the versions you can roll back to`);

    await sys.db.pool.query("update apfa.index_versions set deleted_at = now() where version = $1", [second.index_version]);
    const deleted = await apfa("index", "rollback", second.index_version!, "--json");
    expect(deleted.code).toBe(1);
    expect(deleted.err).toContain("was deleted at");
    expect(JSON.parse(deleted.out)).toMatchObject({ error: "deleted_version" });
    await sys.db.pool.query("update apfa.index_versions set deleted_at = null where version = $1", [second.index_version]);

    await fsp.rm(path.join(sys.dir, "store", "indexes", second.index_version!, "docs.jsonl"));
    const incomplete = await apfa("index", "rollback", second.index_version!);
    expect(incomplete.code).toBe(1);
    expect(incomplete.err).toContain("files missing or truncated in the store: docs.jsonl");

    expect((await readLatest(sys.pipeline.store))?.version).toBe(first.index_version);
  });

  it("rollback rejects what is not a version (exit 2) and needs exactly one", async () => {
    const bad = await apfa("index", "rollback", "abc");
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('"abc" is not an index version (64 lowercase hex characters)');
    expect((await apfa("index", "rollback")).code).toBe(2);
    expect((await apfa("index", "frobnicate")).code).toBe(2);
  });
});

describe("apfa index queries", () => {
  it("embeds example questions as the server embeds a query and stores their vectors for the next build's check", async () => {
    const file = path.join(sys.dir, "questions.txt");
    await fsp.writeFile(file, "# example questions\nwhich loan for a 650 credit score?\n\n  cheapest car loan  \nrefinance my mortgage\n");
    const r = await json("index", "queries", file);
    const key = await embedderKey(sys.config);
    expect(r).toMatchObject({ questions: 3, stored: 3, model_key: key, build_sample: 500 });
    const embedder = await sys.pipeline.embedder();
    const stored = await loadQuerySamples(sys.db.pool, key, embedder.dims, 10);
    // Newest first, each what the embedder gives for the question's text.
    expect(Array.from(stored.subarray(0, embedder.dims))).toEqual(Array.from(await embedder.embed(["refinance my mortgage"])));
    expect(Array.from(stored.subarray(2 * embedder.dims, 3 * embedder.dims))).toEqual(Array.from(await embedder.embed(["which loan for a 650 credit score?"])));
    const text = await apfa("index", "queries", file);
    expect(text.code, text.err).toBe(0);
    expect(text.out).toMatch(/^stored 3 question vectors for embedder .+ \(64-d\)\nthe next build's recall check measures on this embedder's newest 500 query samples/);
  });

  it("names the file and line of a bad question, an empty file or a missing one (exit 2), and stores nothing", async () => {
    const key = await embedderKey(sys.config);
    const before = (await sys.db.pool.query("select count(*)::int as n from apfa.query_samples where model_key = $1", [key])).rows[0].n;
    const bad = path.join(sys.dir, "bad.jsonl");
    await fsp.writeFile(bad, '{"text": "ok"}\n\n{"question": "no text field"}\n');
    const r = await apfa("index", "queries", bad);
    expect(r.code).toBe(2);
    expect(r.err).toBe(`apfa index queries: ${bad}:3: expected an object with a non-empty string "text"`);
    const empty = path.join(sys.dir, "empty.txt");
    await fsp.writeFile(empty, "# nothing here\n\n");
    expect((await apfa("index", "queries", empty)).err).toContain("holds no questions");
    const missing = await apfa("index", "queries", path.join(sys.dir, "nope.txt"));
    expect([missing.code, missing.err]).toEqual([2, `apfa index queries: cannot read ${path.join(sys.dir, "nope.txt")}: ENOENT`]);
    expect((await apfa("index", "queries")).code).toBe(2);
    expect((await sys.db.pool.query("select count(*)::int as n from apfa.query_samples where model_key = $1", [key])).rows[0].n).toBe(before);
  });
});

describe("apfa inspect workers from the real binary", () => {
  it("exits 1 once no worker is online, showing the stopped one", async () => {
    await sys.worker!.stop("test");
    const r = spawnSync(process.execPath, ["bin/apfa.mjs", "inspect", "workers", "-c", sys.file], {
      cwd: ROOT, encoding: "utf8", timeout: 60_000, env: { ...process.env, APFA_CONFIG: undefined, DATABASE_URL: undefined },
    });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`${sys.worker!.id} +stopped `));
  });
});
