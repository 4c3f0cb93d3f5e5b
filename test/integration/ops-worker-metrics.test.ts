/**
 * `startWorker({ metricsPort })` (what `apfa worker --metrics-port` passes) serves Prometheus metrics: per-worker
 * counters of batches, documents and jobs, the task histogram by task and queue, and the cluster-wide gauges
 * read from Postgres at scrape time (queue depth by queue, workers online).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createWorkerMetrics, serveWorkerMetrics } from "../../runtime/worker-metrics.ts";
import type { WorkerHandle } from "../../runtime/worker.ts";
import { openOpsEnv, parseMetrics, until, type OpsEnv } from "./ops-support.ts";

let env: OpsEnv;
let worker: WorkerHandle;
const scrape = async () => {
  const res = await fetch(worker.metricsUrl!);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
  return parseMetrics(await res.text());
};

beforeAll(async () => {
  env = await openOpsEnv({ docs: 35 });
  worker = await env.startWorker({ metricsPort: 0 });
}, 60_000);
afterAll(() => env?.close());

describe("worker /metrics", () => {
  it("is served on the port recorded in apfa.workers", async () => {
    expect(worker.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const r = await env.db.pool.query<{ metrics_port: number }>("select metrics_port from apfa.workers where id = $1", [worker.id]);
    expect(worker.metricsUrl).toBe(`http://127.0.0.1:${r.rows[0].metrics_port}/metrics`);
  });

  it("starts every task's series at zero and reports this worker online", async () => {
    const m = await scrape();
    expect(m.get('apfa_jobs_total{task="embed_batch",queue="embedding",outcome="success"}')).toBe(0);
    expect(m.get('apfa_task_execution_seconds_count{task="build_index",queue="indexing"}')).toBe(0);
    expect(m.get('apfa_embedding_batches_total{outcome="failed"}')).toBe(0);
    expect(m.get("apfa_workers_online")).toBe(1);
    for (const q of ["embedding", "indexing", "maintenance"]) expect(m.get(`apfa_queue_depth{queue="${q}"}`)).toBe(0);
  });

  it("counts the batches, documents and tasks of a run", async () => {
    const run = await env.runToEnd();
    expect(run.status).toBe("succeeded");
    // Job metrics are recorded right after job:complete; give the last one a moment.
    const m = await until("build_index to be counted", async () => {
      const x = await scrape();
      return x.get('apfa_task_execution_seconds_count{task="build_index",queue="indexing"}') === 1 ? x : undefined;
    }, 10_000);
    expect(m.get('apfa_embedding_batches_total{outcome="success"}')).toBe(4);
    expect(m.get("apfa_embedding_documents_total")).toBe(35);
    expect(m.get('apfa_task_execution_seconds_count{task="embed_batch",queue="embedding"}')).toBe(4);
    expect(m.get('apfa_task_execution_seconds_count{task="embed_all",queue="embedding"}')).toBe(1);
    expect(m.get('apfa_jobs_total{task="embed_batch",queue="embedding",outcome="success"}')).toBe(4);
    expect(m.get('apfa_task_execution_seconds_bucket{le="+Inf",task="embed_batch",queue="embedding"}')).toBe(4);
    expect(m.get('apfa_task_execution_seconds_sum{task="embed_batch",queue="embedding"}')).toBeGreaterThan(0);
    // The run's own document counts arrive once its build succeeded: a first run embeds all, reuses none.
    const d = await until("the run's documents to be counted", async () => {
      const x = await scrape();
      return x.get("apfa_documents_embedded_total") === 35 ? x : undefined;
    }, 10_000);
    expect([d.get("apfa_documents_reused_total"), d.get("apfa_documents_removed_total")]).toEqual([0, 0]);
  });

  it("reports waiting jobs per queue, including ones scheduled for later, but not running or dead ones", async () => {
    await env.db.pool.query(
      `select graphile_worker.add_job('noop', '{}'::json, queue_name := 'maintenance', run_at := now() + interval '1 hour') from generate_series(1, 4);
       select graphile_worker.add_job('embed_batch', '{"run_id":"none","n":0}'::json, run_at := now() + interval '1 hour');
       select graphile_worker.add_job('noop', '{}'::json, max_attempts := 1, run_at := now() + interval '1 hour');`,
    );
    await env.db.pool.query("update graphile_worker._private_jobs set attempts = max_attempts where max_attempts = 1");
    // One maintenance job "running" on some worker.
    await env.db.pool.query(
      `update graphile_worker._private_jobs set locked_at = now(), locked_by = 'elsewhere'
        where id = (select id from apfa.jobs where queue = 'maintenance' and task = 'noop' order by id limit 1)`,
    );
    // The cluster gauges cache one read per second: wait for a read that sees the new jobs.
    const m = await until("the gauges to read the new jobs", async () => {
      const x = await scrape();
      return x.get('apfa_queue_depth{queue="embedding"}') === 1 ? x : undefined;
    }, 15_000);
    expect(m.get('apfa_queue_depth{queue="maintenance"}')).toBe(3);
    expect(m.get('apfa_queue_depth{queue="embedding"}')).toBe(1);
    expect(m.get('apfa_queue_depth{queue="indexing"}')).toBe(0);
  });

  it("counts only workers with a fresh heartbeat as online", async () => {
    await env.db.pool.query(
      `insert into apfa.workers (id, pipeline, hostname, pid, queues, last_heartbeat_at) values
         ('w-silent', 'ops', 'h', 1, '{}', now() - interval '5 minutes'),
         ('w-other-pipeline', 'other', 'h', 2, '{}', now()),
         ('w-fresh', 'ops', 'h', 3, '{}', now())`,
    );
    const m = createWorkerMetrics({ pool: env.db.pool, pipeline: "ops", heartbeatTimeoutMs: 60_000 });
    expect(parseMetrics(await m.registry.metrics()).get("apfa_workers_online")).toBe(2);
    await env.db.pool.query("update apfa.workers set stopped_at = now() where id = 'w-fresh'");
    const again = createWorkerMetrics({ pool: env.db.pool, pipeline: "ops", heartbeatTimeoutMs: 60_000 });
    expect(parseMetrics(await again.registry.metrics()).get("apfa_workers_online")).toBe(1);
  });

  it("rejects a malformed --metrics-port value with a message naming the expected form", async () => {
    await expect(serveWorkerMetrics(createWorkerMetrics(), "localhost:http")).rejects.toThrow(/--metrics-port must be PORT or HOST:PORT/);
  });
});
