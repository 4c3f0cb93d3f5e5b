/**
 * Queue routing against a real Postgres: the worker runs each queue with the concurrency pipeline.yaml gives
 * it (embedding: 4 jobs at once, indexing: 1), the serial `indexing` queue stays one-at-a-time even with two
 * worker processes' worth of runners, and SQL users see the queue names in graphile_worker and apfa.jobs.
 */
import type { Task } from "graphile-worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobOptions } from "../../runtime/runs.ts";
import { startWorker, type WorkerHandle } from "../../runtime/worker.ts";
import { openTestPipeline, type TestPipeline } from "../helpers/pg.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Counts how many executions of a task overlap, and the most that ever did. */
function probe(holdMs: number) {
  const c = { active: 0, max: 0, done: 0, seenAt4: false };
  const task: Task = async () => {
    c.active++;
    c.max = Math.max(c.max, c.active);
    await sleep(holdMs);
    c.active--;
    c.done++;
  };
  return { c, task };
}

const ROUTES = { t_embed: "embedding", t_index: "indexing" };

describe("queues run with the concurrency from pipeline.yaml", () => {
  let tp: TestPipeline;
  const handles: WorkerHandle[] = [];

  beforeAll(async () => {
    tp = await openTestPipeline({ queues: { embedding: 4, indexing: 1, maintenance: 1 } });
  });
  afterAll(async () => {
    await Promise.all(handles.map((h) => h.stop("test done")));
    await tp?.close();
  });

  /** Enqueues test jobs the way the runtime does: a concurrency-1 queue gets graphile-worker's serial queue_name. */
  async function enqueue(task: "t_embed" | "t_index", n: number, batch: string): Promise<void> {
    const { serial } = jobOptions(tp.config, task === "t_embed" ? "embed_batch" : "build_index");
    for (let i = 0; i < n; i++) {
      await tp.db.pool.query("select graphile_worker.add_job($1, $2::json, queue_name := $3)", [task, JSON.stringify({ i, batch }), serial]);
    }
  }

  it("runs 4 embedding jobs at once and never 2 indexing jobs at once; SQL shows the queue names", async () => {
    const embed = probe(300);
    const index = probe(150);
    await enqueue("t_embed", 12, "a");
    await enqueue("t_index", 4, "a");

    // Before any worker picks them up, the jobs carry the queue names of pipeline.yaml.
    const gw = await tp.db.pool.query<{ task_identifier: string; queue_name: string | null; n: string }>(
      "select task_identifier, queue_name, count(*) as n from graphile_worker.jobs group by 1, 2 order by 1",
    );
    expect(gw.rows).toEqual([
      { task_identifier: "t_embed", queue_name: null, n: "12" }, // concurrency 4: not serialised
      { task_identifier: "t_index", queue_name: "indexing", n: "4" },
    ]);

    handles.push(await startWorker(tp.pipeline, { tasks: { t_embed: embed.task, t_index: index.task }, routes: ROUTES, cron: false }));
    const view = await tp.db.pool.query<{ task: string; queue: string; serial_queue: string | null; n: string }>(
      "select task, queue, serial_queue, count(*) as n from apfa.jobs group by 1, 2, 3 order by 1",
    );
    // The jobs are still there (each takes 150-300 ms); apfa.jobs names the apfa queue of every task.
    expect(view.rows.map((r) => [r.task, r.queue, r.serial_queue])).toEqual([
      ["t_embed", "embedding", null],
      ["t_index", "indexing", "indexing"],
    ]);
    const routes = await tp.db.pool.query<{ task: string; queue: string }>("select task, queue from apfa.task_queues order by task");
    expect(Object.fromEntries(routes.rows.map((r) => [r.task, r.queue]))).toMatchObject({
      embed_all: "embedding", embed_batch: "embedding", build_index: "indexing", cleanup: "maintenance", noop: "maintenance", ...ROUTES,
    });

    await waitFor(() => embed.c.done === 12 && index.c.done === 4, "all 16 jobs");
    expect(embed.c.max).toBe(4);
    expect(index.c.max).toBe(1);

    // job_history is written after each job completes (not awaited by graphile-worker), so wait for it.
    const hist = async () => (await tp.db.pool.query<{ task: string; queue: string; outcome: string; n: string }>(
      "select task, queue, outcome, count(*) as n from apfa.job_history where task like 't\\_%' group by 1, 2, 3 order by 1",
    )).rows;
    await waitFor(async () => (await hist()).reduce((a, r) => a + Number(r.n), 0) === 16, "job_history rows");
    expect(await hist()).toEqual([
      { task: "t_embed", queue: "embedding", outcome: "success", n: "12" },
      { task: "t_index", queue: "indexing", outcome: "success", n: "4" },
    ]);
    // graphile-worker deletes a job just after emitting job:complete.
    await waitFor(async () => (await tp.db.pool.query("select 1 from graphile_worker.jobs")).rowCount === 0, "the queue to drain");
  });

  it("keeps the serial indexing queue to one job across two workers, while embedding doubles", async () => {
    const embed = probe(300);
    const index = probe(150);
    await Promise.all(handles.splice(0).map((h) => h.stop("next test")));
    const tasks = { t_embed: embed.task, t_index: index.task };
    handles.push(await startWorker(tp.pipeline, { tasks, routes: ROUTES, cron: false }));
    handles.push(await startWorker(tp.pipeline, { tasks, routes: ROUTES, cron: false }));
    await enqueue("t_index", 6, "b");
    await enqueue("t_embed", 16, "b");
    await waitFor(() => embed.c.done === 16 && index.c.done === 6, "all 22 jobs");
    expect(index.c.max).toBe(1);
    // Two workers × embedding: 4; the second worker's runners may start polling a moment later, so > 4 is enough.
    expect(embed.c.max).toBeGreaterThan(4);
    expect(embed.c.max).toBeLessThanOrEqual(8);
  });
});
