/**
 * The worker writes one `apfa.job_history` row per finished attempt (graphile-worker's `job:complete`): the
 * task, its apfa queue, the run id from the payload, the graphile worker that ran it, attempt / max_attempts,
 * the outcome (`success`, `retry`, `failed`), the error and the duration.
 */
import type { Task } from "graphile-worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobFinished, openOpsEnv, type OpsEnv } from "./ops-support.ts";

let env: OpsEnv;
const calls = { flaky: 0 };

const tasks: Record<string, Task> = {
  ops_ok: async () => {
    await new Promise((r) => setTimeout(r, 80));
  },
  ops_flaky: async () => {
    if (++calls.flaky === 1) throw new Error("ops_flaky: first attempt fails on purpose");
  },
  ops_broken: async () => {
    throw new Error("ops_broken: always fails");
  },
};

beforeAll(async () => {
  env = await openOpsEnv();
  await env.startWorker({ tasks, routes: { ops_ok: "indexing" } });
});
afterAll(() => env?.close());

async function add(task: string, maxAttempts: number): Promise<string> {
  const r = await env.db.pool.query<{ id: string }>(
    "select id::text from graphile_worker.add_job($1, $2::json, max_attempts := $3)",
    [task, JSON.stringify({ run_id: "r-history" }), maxAttempts],
  );
  return r.rows[0].id;
}

interface Row {
  job_id: string; task: string; queue: string; run_id: string; worker_id: string; attempt: number; max_attempts: number;
  outcome: string; error: string | null; duration_ms: number; started_at: Date; finished_at: Date;
}
const history = async (job: string) =>
  (await env.db.pool.query<Row>("select * from apfa.job_history where job_id = $1 order by attempt", [job])).rows;

describe("apfa.job_history", () => {
  it("records a success with its queue, run, worker and duration", async () => {
    const job = await add("ops_ok", 1);
    await jobFinished(env, job);
    const rows = await history(job);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ task: "ops_ok", queue: "indexing", run_id: "r-history", attempt: 1, max_attempts: 1, outcome: "success", error: null });
    expect(rows[0].duration_ms).toBeGreaterThanOrEqual(70);
    expect(rows[0].started_at.getTime()).toBeLessThanOrEqual(rows[0].finished_at.getTime());
    const w = await env.db.pool.query("select 1 from apfa.workers where $1 = any(graphile_worker_ids)", [rows[0].worker_id]);
    expect(w.rowCount, "worker_id is one of the worker's recorded graphile worker ids").toBe(1);
  });

  it("records a retry, then the success of the next attempt", async () => {
    const job = await add("ops_flaky", 3);
    await jobFinished(env, job);
    const rows = await history(job);
    expect(rows.map((r) => [r.attempt, r.outcome, r.queue])).toEqual([[1, "retry", "maintenance"], [2, "success", "maintenance"]]);
    expect(rows[0].error).toBe("ops_flaky: first attempt fails on purpose");
    expect(rows[1].error).toBeNull();
  });

  it("records the last failed attempt as failed", async () => {
    const job = await add("ops_broken", 2);
    await jobFinished(env, job);
    const rows = await history(job);
    expect(rows.map((r) => [r.attempt, r.max_attempts, r.outcome])).toEqual([[1, 2, "retry"], [2, 2, "failed"]]);
    expect(rows.every((r) => r.error === "ops_broken: always fails")).toBe(true);
  });

  // The rows are written by Postgres in the outcome's own transaction, so they are tested at that level: a lock
  // released without an outcome (a crashed worker reaped) writes nothing, a committed outcome writes its row.
  it("records committed outcomes only, in the transaction that commits them", async () => {
    const r = await env.db.pool.query<{ id: string }>(
      "select id::text from graphile_worker.add_job('ops_ok', '{\"run_id\":\"r-sql\"}'::json, run_at := now() + interval '1 hour', max_attempts := 3)",
    );
    const job = r.rows[0].id;
    const lock = (pool: string) => env.db.pool.query(
      "update graphile_worker._private_jobs set locked_by = $2, locked_at = now(), attempts = attempts + 1 where id = $1", [job, pool]);
    await lock("pool-crashed");
    await env.db.pool.query("update graphile_worker._private_jobs set locked_by = null, locked_at = null where id = $1", [job]); // reaped
    expect(await history(job)).toEqual([]);

    await lock("pool-b");
    const c = await env.db.pool.connect();
    try {
      await c.query("begin");
      await c.query("update graphile_worker._private_jobs set locked_by = null, locked_at = null, last_error = 'boom', run_at = run_at + interval '2 s' where id = $1", [job]);
      await c.query("rollback"); // the failure never committed
      expect(await history(job)).toEqual([]);
      await c.query("begin");
      await c.query("update graphile_worker._private_jobs set locked_by = null, locked_at = null, last_error = 'boom', run_at = run_at + interval '2 s' where id = $1", [job]);
      expect(await history(job), "not visible before the outcome commits").toEqual([]);
      await c.query("commit");
    } finally {
      c.release();
    }
    await lock("pool-c");
    await env.db.pool.query("delete from graphile_worker._private_jobs where id = $1", [job]);
    const rows = await history(job);
    expect(rows.map((x) => [x.attempt, x.outcome, x.worker_id, x.error, x.run_id, x.queue])).toEqual([
      [2, "retry", "pool-b", "boom", "r-sql", "indexing"],
      [3, "success", "pool-c", null, "r-sql", "indexing"],
    ]);
  });
});
