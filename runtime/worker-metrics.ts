/**
 * Prometheus metrics of `apfa worker` (prom-client), served on `--metrics-port` at `/metrics`. Counters and the
 * task histogram count what this process did; `apfa_queue_depth`, `apfa_workers_online` and the
 * `apfa_index_stats_*` gauges are cluster-wide values read from Postgres at scrape time, so every worker
 * reports the same numbers (aggregate them with `max`, not `sum`). Every metric is documented in docs/metrics.md.
 * @module
 */
import { H3, serve } from "h3";
import type { Job } from "graphile-worker";
import type pg from "pg";
import client from "prom-client";
import type { Logger } from "./contracts.ts";
import { errorMessage } from "./errors.ts";

export interface WorkerMetricsOptions {
  /** Where the cluster-wide gauges are read from; without it they stay empty (tests of the registry). */
  pool?: pg.Pool;
  pipeline?: string;
  /** Queues reported by `apfa_queue_depth` even when empty. */
  queues?: string[];
  /** Workers silent longer than this are not counted online. @defaultValue 60000 */
  heartbeatTimeoutMs?: number;
  log?: Logger;
}

export type JobOutcome = "success" | "retry" | "failed";

/** Seconds buckets for task durations: from a no-op to a long index build. */
const TASK_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

export function createWorkerMetrics(opts: WorkerMetricsOptions = {}) {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "apfa_process_" });
  const reg = { registers: [registry] };

  // One database round trip per scrape feeds every cluster-wide gauge.
  let snapshot: Promise<void> | undefined;
  let snapshotAt = 0;
  const refresh = (): Promise<void> => {
    if (!opts.pool) return Promise.resolve();
    if (!snapshot || Date.now() - snapshotAt > 1000) {
      snapshotAt = Date.now();
      snapshot = _readCluster(opts.pool, opts, m).catch((err) => opts.log?.warn("worker metrics: cluster gauges not refreshed", { error: errorMessage(err) }));
    }
    return snapshot;
  };

  const m = {
    registry,
    batches: new client.Counter({ name: "apfa_embedding_batches_total", help: "embed_batch attempts finished by this worker, by outcome (success, retry, failed)", labelNames: ["outcome"], ...reg }),
    documents: new client.Counter({ name: "apfa_embedding_documents_total", help: "Documents embedded and stored by this worker", ...reg }),
    runDocs: {
      embedded: new client.Counter({ name: "apfa_documents_embedded_total", help: "Documents embedded by the runs whose build this worker finished (new and changed documents)", ...reg }),
      reused: new client.Counter({ name: "apfa_documents_reused_total", help: "Documents whose vectors the runs built by this worker carried over from the previous version", ...reg }),
      removed: new client.Counter({ name: "apfa_documents_removed_total", help: "Documents of the previous version the runs built by this worker dropped (gone from the source)", ...reg }),
    },
    taskSeconds: new client.Histogram({ name: "apfa_task_execution_seconds", help: "Job execution time by task and queue (every outcome)", labelNames: ["task", "queue"], buckets: TASK_BUCKETS, ...reg }),
    jobs: new client.Counter({ name: "apfa_jobs_total", help: "Jobs finished by this worker, by task, queue and outcome (success, retry, failed)", labelNames: ["task", "queue", "outcome"], ...reg }),
    reaped: new client.Counter({ name: "apfa_workers_reaped_total", help: "Dead workers whose jobs this worker released", ...reg }),
    queueDepth: new client.Gauge({ name: "apfa_queue_depth", help: "Jobs waiting in each queue (not running, not permanently failed; includes retries scheduled for later), cluster-wide", labelNames: ["queue"], collect: refresh, ...reg }),
    workersOnline: new client.Gauge({ name: "apfa_workers_online", help: "Workers of the pipeline with a heartbeat within workers.heartbeat_timeout, cluster-wide", collect: refresh, ...reg }),
    statsVectors: new client.Gauge({ name: "apfa_index_stats_vectors", help: "Vectors in the current index version (compute_index_stats)", labelNames: ["engine"], collect: refresh, ...reg }),
    statsDims: new client.Gauge({ name: "apfa_index_stats_dims", help: "Dimensions of the current index version", labelNames: ["engine"], collect: refresh, ...reg }),
    statsMemory: new client.Gauge({ name: "apfa_index_stats_memory_bytes", help: "Estimated bytes a server holds in memory for the current version (count×dims×4 + documents)", labelNames: ["engine"], collect: refresh, ...reg }),
    statsStore: new client.Gauge({ name: "apfa_index_stats_store_bytes", help: "Bytes of the current version's files in the store", labelNames: ["engine"], collect: refresh, ...reg }),
    statsP95: new client.Gauge({ name: "apfa_index_stats_search_p95_seconds", help: "Vector search p95 scraped from the servers' apfa_faiss_search_seconds (absent when no server was reachable)", labelNames: ["engine"], collect: refresh, ...reg }),
    statsUrgency: new client.Gauge({ name: "apfa_index_stats_migration_urgency", help: "0..1: how urgently the index should move from exact (flat) to approximate search; see docs/metrics.md", labelNames: ["engine", "recommendation"], collect: refresh, ...reg }),
    statsTime: new client.Gauge({ name: "apfa_index_stats_timestamp_seconds", help: "Unix time the index stats were computed", labelNames: ["engine"], collect: refresh, ...reg }),
    /** Records one finished job (call from graphile-worker's `job:complete`). */
    async observeJob(job: Job, queue: string, outcome: JobOutcome, startedAt: number): Promise<void> {
      m.taskSeconds.observe({ task: job.task_identifier, queue }, (Date.now() - startedAt) / 1000);
      m.jobs.inc({ task: job.task_identifier, queue, outcome });
      if (job.task_identifier === "build_index") return m.observeRun(job, outcome);
      if (job.task_identifier !== "embed_batch") return;
      m.batches.inc({ outcome });
      const { run_id, n } = (job.payload ?? {}) as { run_id?: string; n?: number };
      if (outcome !== "success" || !opts.pool || run_id === undefined || n === undefined) return;
      // A re-run of a batch that was already done is a no-op: count documents only when this attempt finished it.
      const r = await opts.pool.query<{ embedded: number }>(
        "select embedded from apfa.batches where run_id = $1 and n = $2 and status = 'done' and finished_at >= to_timestamp($3 / 1000.0)",
        [run_id, n, startedAt - 1000],
      );
      if (r.rows[0]) m.documents.inc(r.rows[0].embedded ?? 0);
    },
    /** Counts a run's documents once, when the build that finished it succeeds. */
    async observeRun(job: Job, outcome: JobOutcome): Promise<void> {
      const { run_id } = (job.payload ?? {}) as { run_id?: string };
      if (outcome !== "success" || !opts.pool || run_id === undefined) return;
      const r = await opts.pool.query<{ e: string; u: string; d: string }>(
        "select docs_embedded as e, docs_reused as u, docs_removed as d from apfa.runs where id = $1 and status = 'succeeded'",
        [run_id],
      );
      if (!r.rows[0]) return;
      m.runDocs.embedded.inc(Number(r.rows[0].e));
      m.runDocs.reused.inc(Number(r.rows[0].u));
      m.runDocs.removed.inc(Number(r.rows[0].d));
    },
    /** Starts label sets at zero so rate() works from the first scrape. */
    zero(tasks: Array<{ task: string; queue: string }>): void {
      for (const o of ["success", "retry", "failed"]) m.batches.inc({ outcome: o }, 0);
      for (const t of tasks) {
        m.taskSeconds.zero(t);
        for (const o of ["success", "retry", "failed"]) m.jobs.inc({ ...t, outcome: o }, 0);
      }
    },
  };
  return m;
}

export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;

async function _readCluster(pool: pg.Pool, opts: WorkerMetricsOptions, m: WorkerMetrics): Promise<void> {
  const r = await pool.query<{ depth: Record<string, number> | null; online: number; stats: Record<string, unknown> | null }>(
    `select
       (select jsonb_object_agg(q, n) from (select coalesce(tq.queue, 'unrouted') as q, count(*)::int as n
          from graphile_worker._private_jobs j
          join graphile_worker._private_tasks t on t.id = j.task_id
          left join apfa.task_queues tq on tq.task = t.identifier
         where j.locked_at is null and j.attempts < j.max_attempts group by 1) d) as depth,
       (select count(*)::int from apfa.workers where pipeline = $1 and stopped_at is null and reaped_at is null
           and last_heartbeat_at > now() - make_interval(secs => $2)) as online,
       (select to_jsonb(s) from (select engine, version, count, dims, bytes_memory, bytes_store, search_p95_ms, urgency,
               recommendation, extract(epoch from computed_at)::float8 as at
          from apfa.index_stats where pipeline = $1 order by computed_at desc, id desc limit 1) s) as stats`,
    [opts.pipeline ?? "default", (opts.heartbeatTimeoutMs ?? 60_000) / 1000],
  );
  const row = r.rows[0];
  m.queueDepth.reset();
  for (const q of opts.queues ?? []) m.queueDepth.set({ queue: q }, 0);
  for (const [q, n] of Object.entries(row.depth ?? {})) m.queueDepth.set({ queue: q }, n);
  m.workersOnline.set(row.online);
  for (const g of [m.statsVectors, m.statsDims, m.statsMemory, m.statsStore, m.statsP95, m.statsUrgency, m.statsTime]) g.reset();
  const s = row.stats as { engine: string | null; count: string | null; dims: number | null; bytes_memory: string | null; bytes_store: string | null; search_p95_ms: number | null; urgency: number | null; recommendation: string | null; at: number } | null;
  if (!s) return;
  const l = { engine: s.engine ?? "none" };
  if (s.count !== null) m.statsVectors.set(l, Number(s.count));
  if (s.dims !== null) m.statsDims.set(l, s.dims);
  if (s.bytes_memory !== null) m.statsMemory.set(l, Number(s.bytes_memory));
  if (s.bytes_store !== null) m.statsStore.set(l, Number(s.bytes_store));
  if (s.search_p95_ms !== null) m.statsP95.set(l, s.search_p95_ms / 1000);
  if (s.urgency !== null) m.statsUrgency.set({ ...l, recommendation: s.recommendation ?? "" }, s.urgency);
  m.statsTime.set(l, s.at);
}

export interface MetricsEndpoint {
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` for a worker. `listen` is `PORT` or `HOST:PORT` (default host 127.0.0.1; use
 * `0.0.0.0:9464` when Prometheus scrapes from another host; port 0 picks a free one).
 */
export async function serveWorkerMetrics(m: WorkerMetrics, listen: string | number): Promise<MetricsEndpoint> {
  const s = String(listen);
  const i = s.lastIndexOf(":");
  const host = i >= 0 ? s.slice(0, i) : "127.0.0.1";
  const port = Number(i >= 0 ? s.slice(i + 1) : s);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`[apfa] [worker] --metrics-port must be PORT or HOST:PORT with PORT 0-65535 (got ${JSON.stringify(s)})`);
  }
  const app = new H3();
  app.get("/metrics", async () => new Response(await m.registry.metrics(), { headers: { "content-type": m.registry.contentType } }));
  app.get("/health", () => new Response("ok\n"));
  const server = serve(app, { port, hostname: host, silent: true, gracefulShutdown: false });
  await server.ready();
  const addr = (server.node?.server?.address?.() ?? null) as { port: number } | null;
  const actual = addr?.port ?? (server.url ? Number(new URL(server.url).port) : port);
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${actual}/metrics`,
    port: actual,
    close: () => server.close(true).then(() => undefined, () => undefined),
  };
}
