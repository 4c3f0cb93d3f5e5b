/**
 * One LISTEN per worker process wakes only the runner that owns a new job (migrations/000007 names the queue
 * in a notification on `apfa_jobs`; the runners' own LISTEN on graphile-worker's `jobs:insert` is dropped).
 * The poll interval here is an hour, so a job that runs was found through a notification, and a runner that
 * fetched did so because it was woken; when the LISTEN connection is killed, the worker reconnects and wakes
 * every runner once, so a job added while it was down still runs.
 */
import type { Task } from "graphile-worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../runtime/log.ts";
import { startWorker, type WorkerHandle } from "../../runtime/worker.ts";
import { waitFor as waitForWithin } from "../conformance/notifier.ts";
import { openTestPipeline, type TestPipeline } from "../helpers/pg.ts";

/** What the worker logged and which fetches ran, newest last: a timeout's message carries them. */
const trail: string[] = [];
const waitFor = (pred: () => boolean, what: string) =>
  waitForWithin(pred, what, 30_000).catch((err: Error) => {
    throw new Error(`${err.message}; the worker's trail:\n${trail.slice(-40).join("\n")}`);
  });

const ROUTES = { t_embed: "embedding", t_index: "indexing", t_misc: "maintenance" };

describe("a new job wakes the runner that owns its queue", () => {
  let tp: TestPipeline;
  let handle: WorkerHandle;
  const done: string[] = [];
  const fetches = new Map<string, number>();

  beforeAll(async () => {
    const log = createLogger({}, { level: "debug", write: (l) => void trail.push(l.slice(0, 300)) });
    tp = await openTestPipeline({ queues: { embedding: 2, indexing: 1, maintenance: 1 }, workers: { poll_interval: "1h" } }, { log });
    const task = (name: string): Task => async () => void done.push(name);
    handle = await startWorker(tp.pipeline, { tasks: { t_embed: task("t_embed"), t_index: task("t_index"), t_misc: task("t_misc") }, routes: ROUTES, cron: false });
    let maintenanceIdle = false;
    for (const [q, r] of handle.runners) {
      fetches.set(q, 0);
      r.events.on("worker:getJob:start", () => {
        fetches.set(q, fetches.get(q)! + 1);
        trail.push(`${new Date().toISOString()} ${q}: fetch`);
      });
      r.events.on("worker:getJob:empty", () => {
        trail.push(`${new Date().toISOString()} ${q}: fetch came up empty`);
        if (q === "maintenance" && done.includes("t_misc")) maintenanceIdle = true;
      });
    }
    // A runner's first fetch can begin after startWorker returns (on a loaded machine it did, and counted as a
    // wake). A maintenance job puts that runner's first fetch behind it, and the empty fetch after the job leaves
    // it idle: from here on a maintenance fetch means it was woken.
    await add("t_misc");
    await waitFor(() => maintenanceIdle, "the maintenance runner to run a job and fetch once more");
    done.length = 0;
  });
  afterAll(async () => {
    await handle?.stop("test done");
    await tp?.close();
  });

  const add = (task: string, serial?: string) =>
    tp.db.pool.query("select graphile_worker.add_job($1, '{}'::json, queue_name := $2)", [task, serial ?? null]);

  it("the serial queue's job runs at once and no other runner fetches", async () => {
    const before = new Map(fetches);
    await add("t_index", "indexing");
    await waitFor(() => done.includes("t_index"), "t_index to run (the poll is an hour away)");
    await add("t_embed");
    await waitFor(() => done.includes("t_embed"), "t_embed to run");
    expect(fetches.get("maintenance")).toBe(before.get("maintenance"));
    expect(fetches.get("indexing")!).toBeGreaterThan(before.get("indexing")!);
    expect(fetches.get("embedding")!).toBeGreaterThan(before.get("embedding")!);
  });

  it("a task no queue claims wakes every runner", async () => {
    const before = new Map(fetches);
    await tp.db.pool.query("delete from apfa.task_queues where task = 't_misc'");
    await add("t_misc");
    await waitFor(() => done.includes("t_misc"), "t_misc to run");
    for (const q of handle.runners.keys()) expect(fetches.get(q)!).toBeGreaterThan(before.get(q)!);
  });

  it("after its LISTEN connection is killed, the worker reconnects and finds the job added meanwhile", async () => {
    const killed = await tp.db.pool.query(
      "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'apfa-worker' and datname = current_database()",
    );
    expect(killed.rowCount).toBe(1);
    done.length = 0;
    trail.push(`${new Date().toISOString()} test: LISTEN killed; adding t_index`);
    await add("t_index", "indexing");
    trail.push(`${new Date().toISOString()} test: t_index added`);
    await waitFor(() => done.includes("t_index"), "t_index to run after the reconnect");
    // And the new connection hears the next insert.
    await add("t_embed");
    await waitFor(() => done.includes("t_embed"), "t_embed to run");
  });
});
