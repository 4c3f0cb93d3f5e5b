/**
 * `cleanup` with retention 0 and keep_versions 1 leaves exactly the current version, the previous published
 * one and the batches of the runs they were built from — plus whatever belongs to a run still active — and
 * deletes every other version directory (recorded or not), batch directory, job_history row and all but the
 * newest index_stats row. A dry run reports the same plan and deletes nothing; the default retention (7 days)
 * deletes nothing this young.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addJob } from "../../runtime/runs.ts";
import { planCleanup, runCleanup } from "../../runtime/tasks/cleanup.ts";
import { readLatest } from "../../runtime/versions.ts";
import { jobFinished, openOpsEnv, type OpsEnv } from "./ops-support.ts";

let env: OpsEnv;
const runs: Array<{ id: string; version: string }> = [];
const ORPHAN_VERSION = "f".repeat(64);
const enc = (s: string) => new TextEncoder().encode(s);

async function storeKeys(prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const st of env.pipeline.store.list(prefix)) out.push(st.key);
  return out;
}
const dirs = (keys: string[]) => [...new Set(keys.map((k) => k.split("/").slice(0, 2).join("/")))].sort();

beforeAll(async () => {
  env = await openOpsEnv();
  await env.startWorker();
  for (const tag of ["one", "two", "three"]) {
    await env.writeCorpus(25, tag);
    const r = await env.runToEnd();
    expect(r.status).toBe("succeeded");
    runs.push({ id: r.id, version: r.index_version! });
  }
  const s = env.pipeline.store;
  // Leftovers cleanup must find from the store alone, and what a failed run and a running one left behind.
  await s.put(`indexes/${ORPHAN_VERSION}/index.faiss`, enc("half-written"));
  await s.put("batches/r-unknown/000000.input.jsonl", enc("{}\n"));
  await env.db.pool.query(
    `insert into apfa.runs (id, pipeline, status, trigger, batch_size, deadline_at, finished_at) values
       ('r-failed', 'ops', 'failed', 'test', 10, now(), now() - interval '1 minute'),
       ('r-running', 'ops', 'embedding', 'test', 10, now() + interval '1 hour', null)`,
  );
  await s.put("batches/r-failed/000000.input.jsonl", enc("{}\n"));
  await s.put("batches/r-running/000000.input.jsonl", enc("{}\n"));
  await env.db.pool.query(
    `insert into apfa.index_stats (pipeline, version, count, computed_at) values
       ('ops', $1, 25, now() - interval '2 hours'), ('ops', $1, 25, now() - interval '1 hour'), ('ops', $1, 25, now() - interval '1 second')`,
    [runs[2].version],
  );
}, 120_000);
afterAll(() => env?.close());

describe("cleanup", () => {
  it("the fixture has three distinct published versions, the last one current", async () => {
    expect(new Set(runs.map((r) => r.version)).size).toBe(3);
    expect((await readLatest(env.pipeline.store))?.version).toBe(runs[2].version);
  });

  it("with the default retention (7 days) deletes nothing this young", async () => {
    const plan = await planCleanup(env.pipeline);
    expect(plan.versions).toEqual([]);
    expect(plan.batches).toEqual([]);
    expect(plan.job_history_rows).toBe(0);
  });

  it("deletes sampled query vectors older than the retention, and only those", async () => {
    await env.db.pool.query(
      `insert into apfa.query_samples (at, model_key, dims, vector) values (now() - interval '30 days', 'm', 1, '\\x0000803f'), (now(), 'm', 1, '\\x00000040')`,
    );
    expect((await planCleanup(env.pipeline)).query_sample_rows).toBe(1);
    const r = await runCleanup(env.pipeline);
    expect(r.query_sample_rows).toBe(1);
    expect(r.versions).toEqual([]);
    const left = await env.db.pool.query<{ n: number }>("select count(*)::int as n from apfa.query_samples where at > now() - interval '1 day'");
    expect(left.rows[0].n).toBe(1);
    expect((await env.db.pool.query("select 1 from apfa.query_samples")).rowCount).toBe(1);
  });

  it("dry_run lists what retention 0 / keep 1 would delete, and deletes nothing", async () => {
    const before = [...(await storeKeys("indexes/")), ...(await storeKeys("batches/"))];
    const r = await runCleanup(env.pipeline, { dry_run: true, retention_days: 0, keep_versions: 1 });
    expect(r.dry_run).toBe(true);
    expect(r.current).toBe(runs[2].version);
    expect(r.versions.map((v) => v.id).sort()).toEqual([runs[0].version, ORPHAN_VERSION].sort());
    expect(r.batches.map((b) => b.id).sort()).toEqual([runs[0].id, "r-failed", "r-unknown"].sort());
    expect(r.protected_versions.sort()).toEqual([runs[1].version, runs[2].version].sort());
    expect(r.protected_runs).toEqual(expect.arrayContaining([runs[1].id, runs[2].id, "r-running"]));
    expect(r.job_history_rows).toBeGreaterThan(0);
    expect(r.index_stats_rows).toBe(2);
    expect(r.keys_deleted).toBe(0);
    expect([...(await storeKeys("indexes/")), ...(await storeKeys("batches/"))]).toEqual(before);
    const marked = await env.db.pool.query("select 1 from apfa.index_versions where deleted_at is not null");
    expect(marked.rowCount).toBe(0);
  });

  it("as a job with retention 0 and keep_versions 1 leaves exactly current + previous and their batches", async () => {
    const job = await addJob(env.db.pool, env.config, "cleanup", { retention_days: 0, keep_versions: 1 });
    await jobFinished(env, job);

    expect(dirs(await storeKeys("indexes/"))).toEqual(["indexes/latest", `indexes/${runs[1].version}`, `indexes/${runs[2].version}`].sort());
    expect(dirs(await storeKeys("batches/"))).toEqual([`batches/${runs[1].id}`, `batches/${runs[2].id}`, "batches/r-running"].sort());
    // The kept versions are whole: every file of their manifests is still there.
    for (const r of runs.slice(1)) {
      const m = await env.db.pool.query<{ manifest: { files: Record<string, unknown> } }>("select manifest from apfa.index_versions where version = $1", [r.version]);
      const keys = await storeKeys(`indexes/${r.version}/`);
      for (const f of Object.keys(m.rows[0].manifest.files)) expect(keys).toContain(`indexes/${r.version}/${f}`);
    }
    const versions = await env.db.pool.query<{ version: string; deleted: boolean }>("select version, deleted_at is not null as deleted from apfa.index_versions");
    expect(Object.fromEntries(versions.rows.map((v) => [v.version, v.deleted]))).toEqual({
      [runs[0].version]: true, [runs[1].version]: false, [runs[2].version]: false,
    });
    // History older than the cutoff is gone; only rows written after the job started (its own) remain.
    const h = await env.db.pool.query<{ job_id: string }>("select job_id::text from apfa.job_history");
    expect(h.rows.map((r) => r.job_id)).toEqual([job]);
    const stats = await env.db.pool.query<{ age_s: number }>("select extract(epoch from now() - computed_at)::float8 as age_s from apfa.index_stats");
    expect(stats.rows).toHaveLength(1);
    expect(stats.rows[0].age_s).toBeLessThan(60);
  });

  it("a second pass finds nothing left to delete", async () => {
    const r = await runCleanup(env.pipeline, { retention_days: 0, keep_versions: 1 });
    expect(r.versions).toEqual([]);
    expect(r.batches).toEqual([]);
    expect(r.keys_deleted).toBe(0);
  });
});
