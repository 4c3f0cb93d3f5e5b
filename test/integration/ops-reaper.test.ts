/**
 * The reaper in process: which workers count as dead (silent past the timeout, same pipeline, not stopped, not
 * itself), that their locked jobs are released and they are marked `reaped_at`, that only one reaper acts at a
 * time (advisory lock), and that a worker which finds itself reaped stops instead of running jobs twice.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createReaper, REAPER_LOCK } from "../../runtime/reaper.ts";
import { silentLogger } from "../../runtime/log.ts";
import { openOpsEnv, until, type OpsEnv } from "./ops-support.ts";

let env: OpsEnv;

beforeAll(async () => {
  env = await openOpsEnv();
});
afterAll(() => env?.close());

async function worker(id: string, silentS: number, o: { pipeline?: string; stopped?: boolean; gw?: string[] } = {}): Promise<void> {
  await env.db.pool.query(
    `insert into apfa.workers (id, pipeline, hostname, pid, queues, graphile_worker_ids, last_heartbeat_at, stopped_at)
     values ($1, $2, 'host', 1, '{}', $3, now() - make_interval(secs => $4), case when $5 then now() end)`,
    [id, o.pipeline ?? "ops", o.gw ?? [`gw-${id}`], silentS, o.stopped ?? false],
  );
}
async function lockedJob(by: string): Promise<string> {
  const r = await env.db.pool.query<{ id: string }>("select id::text from graphile_worker.add_job('noop', '{}'::json, run_at := now() + interval '1 hour')");
  await env.db.pool.query("update graphile_worker._private_jobs set locked_by = $2, locked_at = now() where id = $1", [r.rows[0].id, by]);
  return r.rows[0].id;
}
const lockOf = async (job: string) => (await env.db.pool.query<{ locked_by: string | null }>("select locked_by from graphile_worker._private_jobs where id = $1", [job])).rows[0].locked_by;
const reapedAt = async (id: string) => (await env.db.pool.query<{ reaped: boolean }>("select reaped_at is not null as reaped from apfa.workers where id = $1", [id])).rows[0].reaped;

describe("reapDeadWorkers", () => {
  it("reaps only silent, unstopped workers of this pipeline other than itself, releasing their jobs", async () => {
    await worker("dead", 120, { gw: ["gw-dead-1", "gw-dead-2"] });
    await worker("alive", 5);
    await worker("stopped", 120, { stopped: true });
    await worker("other", 120, { pipeline: "other" });
    await worker("self", 120);
    const jobs = { dead1: await lockedJob("gw-dead-1"), dead2: await lockedJob("gw-dead-2"), alive: await lockedJob("gw-alive"), other: await lockedJob("gw-other") };

    const reaper = createReaper({ pool: env.db.pool, pipeline: "ops", timeoutMs: 60_000, log: silentLogger, selfId: "self" });
    try {
      const reaped = await reaper.reap();
      expect(reaped.map((w) => [w.id, w.jobs.sort()])).toEqual([["dead", [jobs.dead1, jobs.dead2].sort()]]);
      expect(reaped[0].silent_s).toBeGreaterThan(100);
      expect([await lockOf(jobs.dead1), await lockOf(jobs.dead2)]).toEqual([null, null]);
      expect([await lockOf(jobs.alive), await lockOf(jobs.other)]).toEqual(["gw-alive", "gw-other"]);
      expect(await reapedAt("dead")).toBe(true);
      for (const id of ["alive", "stopped", "other", "self"]) expect(await reapedAt(id), id).toBe(false);
      expect(await reaper.reap(), "a reaped worker is not reaped twice").toEqual([]);
    } finally {
      await reaper.release();
    }
  });

  it("does nothing while another worker holds the reaper lock", async () => {
    await worker("dead-2", 120);
    const job = await lockedJob("gw-dead-2");
    const other = new pg.Client({ connectionString: env.db.url });
    await other.connect();
    const reaper = createReaper({ pool: env.db.pool, pipeline: "ops", timeoutMs: 60_000, log: silentLogger, selfId: "self" });
    try {
      await other.query("select pg_advisory_lock($1)", [REAPER_LOCK]);
      expect(await reaper.reap()).toEqual([]);
      expect(await lockOf(job)).toBe("gw-dead-2");
      await other.query("select pg_advisory_unlock($1)", [REAPER_LOCK]);
      expect((await reaper.reap()).map((w) => w.id)).toEqual(["dead-2"]);
      expect(await lockOf(job)).toBeNull();
    } finally {
      await reaper.release();
      await other.end();
    }
  });
});

describe("a worker that finds itself reaped", () => {
  it("stops, so the jobs handed to others are not run twice", async () => {
    const w = await env.startWorker({ heartbeatMs: 200 });
    let stopped = false;
    void w.promise.then(() => (stopped = true));
    // Two heartbeats written: the worker is alive and checking in, and has not stopped on its own.
    const beat = async () => (await env.db.pool.query<{ at: Date }>("select last_heartbeat_at as at from apfa.workers where id = $1", [w.id])).rows[0].at.getTime();
    const first = await beat();
    let beats = 0;
    let last = first;
    await until("two heartbeats", async () => {
      const at = await beat();
      if (at !== last) (beats++, (last = at));
      return beats >= 2;
    }, 15_000);
    expect(stopped).toBe(false);
    await env.db.pool.query("update apfa.workers set reaped_at = now() where id = $1", [w.id]);
    await until("the reaped worker to stop", () => stopped, 15_000);
    const r = await env.db.pool.query<{ stopped: boolean }>("select stopped_at is not null as stopped from apfa.workers where id = $1", [w.id]);
    expect(r.rows[0].stopped).toBe(true);
  });
});
