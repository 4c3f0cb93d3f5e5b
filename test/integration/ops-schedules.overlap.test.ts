/**
 * Schedules become graphile-worker cron items whose payload carries the overlap policy; when such a fire runs
 * (`embed_all` without a run id) while a run of the pipeline is active, `skip` drops the fire, `queue` defers it
 * and `replace` cancels the active run and starts a new one. The fires are enqueued exactly as the crontab
 * would enqueue them (the cron item's task, payload and options), then a real worker runs them.
 */
import { parseCronItems } from "graphile-worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addJob, getRun } from "../../runtime/runs.ts";
import { cronItems } from "../../runtime/worker.ts";
import { testConfig } from "../helpers/pg.ts";
import { jobFinished, openOpsEnv, until, type OpsEnv } from "./ops-support.ts";

let env: OpsEnv;

beforeAll(async () => {
  env = await openOpsEnv({ overrides: { schedules: { rebuild: { enabled: true, cron: "*/30 * * * *" } } } });
  await env.startWorker();
});
afterAll(() => env?.close());

/** Enqueues one fire of the `rebuild` schedule as graphile-worker's crontab would, with `overlap` set. */
async function fire(overlap: "skip" | "queue" | "replace"): Promise<string> {
  const item = cronItems(env.pipeline).find((c) => c.identifier === "ops:rebuild")!;
  return addJob(env.db.pool, env.config, "embed_all", { ...item.payload, overlap });
}

/** An active run with no job behind it: it stays `embedding` until something changes it. */
async function activeRun(id: string): Promise<void> {
  await env.db.pool.query(
    `insert into apfa.runs (id, pipeline, status, trigger, batch_size, started_at, deadline_at)
     values ($1, 'ops', 'embedding', 'test', 10, now(), now() + interval '1 hour')`,
    [id],
  );
}

const runsBy = async (trigger: string) =>
  (await env.db.pool.query<{ id: string; status: string }>("select id, status from apfa.runs where trigger = $1 order by created_at", [trigger])).rows;

describe("cron items", () => {
  it("carry the task, the overlap policy and the trigger of each enabled schedule", async () => {
    const items = cronItems(env.pipeline);
    expect(items.map((i) => i.identifier)).toEqual(["ops:rebuild"]);
    expect(items[0]).toMatchObject({ task: "embed_all", match: "*/30 * * * *", payload: { trigger: "schedule:rebuild", overlap: "skip" } });
    expect(() => parseCronItems(items)).not.toThrow();
    const replace = await testConfig({ name: "x", schedules: { rebuild: { overlap: "replace" } } }, { checkPlugins: false });
    expect(replace.schedules.rebuild.overlap).toBe("replace");
  });
});

describe("overlap policy", () => {
  it("skip: a fire while a run is active creates no run and leaves the active one alone", async () => {
    await activeRun("r-active-skip");
    const job = await fire("skip");
    await jobFinished(env, job);
    expect(await runsBy("schedule:rebuild")).toEqual([]);
    expect((await getRun(env.db.pool, "r-active-skip"))?.status).toBe("embedding");
    const h = await env.db.pool.query("select outcome from apfa.job_history where job_id = $1", [job]);
    expect(h.rows).toEqual([{ outcome: "success" }]);
  });

  it("queue: a fire while a run is active is deferred by a minute, not run", async () => {
    const job = await fire("queue");
    await jobFinished(env, job);
    expect(await runsBy("schedule:rebuild")).toEqual([]);
    const deferred = await env.db.pool.query<{ id: string; in_s: number; payload: { overlap: string } }>(
      "select id, payload, extract(epoch from run_at - now())::float8 as in_s from apfa.jobs where task = 'embed_all' and id <> $1",
      [job],
    );
    expect(deferred.rows).toHaveLength(1);
    expect(deferred.rows[0].payload.overlap).toBe("queue");
    expect(deferred.rows[0].in_s).toBeGreaterThan(30);
    await env.db.pool.query("select graphile_worker.permanently_fail_jobs(array[$1::bigint], 'test cleanup')", [deferred.rows[0].id]);
    await env.db.pool.query("delete from graphile_worker._private_jobs where id = $1", [deferred.rows[0].id]);
  });

  it("replace: a fire cancels the active run and starts a new one that runs to the end", async () => {
    const job = await fire("replace");
    await jobFinished(env, job);
    const old = await getRun(env.db.pool, "r-active-skip");
    expect(old?.status).toBe("cancelled");
    expect(old?.error).toBe("replaced by a newer scheduled run");
    const created = await until("the replacing run", async () => (await runsBy("schedule:rebuild"))[0]);
    const done = await env.waitForRun(created.id);
    expect(done.status).toBe("succeeded");
    expect(Number(done.docs_embedded)).toBe(30);
  });

  it("skip with no active run starts a run", async () => {
    const job = await fire("skip");
    await jobFinished(env, job);
    const runs = await runsBy("schedule:rebuild");
    expect(runs).toHaveLength(2);
    expect((await env.waitForRun(runs[1].id)).status).toBe("succeeded");
  });
});
