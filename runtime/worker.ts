/**
 * `apfa worker`: one graphile-worker runner per queue, each with only that queue's tasks and the queue's
 * concurrency from pipeline.yaml, so `embedding: 4` runs four embed jobs at once while `indexing: 1` runs one.
 * Queues with concurrency 1 also get graphile-worker's serial `queue_name`, which keeps them to one job at a
 * time across every worker process. The crontab from `schedules` runs on the first runner. SIGTERM/SIGINT stop
 * taking jobs and wait for running ones (graphile-worker releases what it cannot finish).
 * @module
 */
import * as os from "node:os";
import * as crypto from "node:crypto";
import { EventEmitter } from "node:events";
import { Logger as GraphileLogger, parseCronItems, run, type CronItem, type Job, type Runner, type Task, type WorkerEvents, type WorkerPool } from "graphile-worker";
import { durationMs, TASK_QUEUES, type TaskName } from "./config/schema.ts";
import type { Logger } from "./contracts.ts";
import { errorMessage } from "./errors.ts";
import { redact } from "./log.ts";
import { listenForever } from "./pg-listen.ts";
import type { Pipeline } from "./pipeline.ts";
import { failOverdueRuns, jobOptions } from "./runs.ts";
import { makeBuildIndex } from "./tasks/build-index.ts";
import { makeEmbedAll } from "./tasks/embed-all.ts";
import { makeEmbedBatch } from "./tasks/embed-batch.ts";
import { createReaper } from "./reaper.ts";
import { makeCleanup } from "./tasks/cleanup.ts";
import { makeComputeIndexStats } from "./tasks/stats.ts";
import { createWorkerMetrics, serveWorkerMetrics, type MetricsEndpoint, type WorkerMetrics } from "./worker-metrics.ts";

export interface WorkerOptions {
  /** Only run these queues (default: all declared). */
  queues?: string[];
  /** Extra or replacement tasks (tests, plugins). */
  tasks?: Partial<Record<string, Task>>;
  /** Queue of each extra task (task identifier → queue name); unrouted extra tasks run on `maintenance`. */
  routes?: Record<string, string>;
  /** Run the crontab from `schedules` (default true). */
  cron?: boolean;
  /** Default `workers.heartbeat_interval`. */
  heartbeatMs?: number;
  /** Serve `/metrics` on `PORT` or `HOST:PORT` (`apfa worker --metrics-port`). */
  metricsPort?: number | string;
}

export interface WorkerHandle {
  id: string;
  runners: Map<string, Runner>;
  metrics: WorkerMetrics;
  /** Set when `metricsPort` was given. */
  metricsUrl?: string;
  stop(reason?: string): Promise<void>;
  /** Resolves when every runner has stopped. */
  promise: Promise<void>;
}

/** The task functions of the pipeline, by identifier. */
export function pipelineTasks(p: Pipeline): Record<TaskName, Task> {
  return {
    embed_all: makeEmbedAll(p),
    embed_batch: makeEmbedBatch(p),
    build_index: makeBuildIndex(p),
    cleanup: makeCleanup(p),
    compute_index_stats: makeComputeIndexStats(p),
    noop: async () => {},
  };
}

/** graphile-worker cron items from the enabled schedules. */
export function cronItems(p: Pipeline): CronItem[] {
  return Object.entries(p.config.schedules)
    .filter(([, s]) => s.enabled)
    .map(([name, s]) => {
      const o = jobOptions(p.config, s.task, s.queue);
      return {
        task: s.task,
        match: s.cron,
        identifier: `${p.config.name}:${name}`,
        payload: { ...s.options, trigger: `schedule:${name}`, overlap: s.overlap },
        options: {
          queueName: o.serial ?? undefined,
          maxAttempts: o.maxAttempts,
          backfillPeriod: s.backfill ? durationMs(s.backfill) : 0,
        },
      } satisfies CronItem;
    });
}

/**
 * A job whose completion could not be recorded (Postgres restarted mid-job) stays locked by this live worker
 * — graphile-worker would retry it only after four hours, and the reaper skips live workers. Jobs locked by
 * this worker's pools that it is not running release here, so another attempt starts at once.
 */
async function releaseOrphans(p: Pipeline, poolIds: string[], running: string[]): Promise<string[]> {
  if (!poolIds.length) return [];
  const r = await p.db.pool.query<{ id: string; job_queue_id: number | null }>(
    `update graphile_worker._private_jobs set locked_at = null, locked_by = null
      where locked_by = any($1::text[]) and locked_at < now() - interval '15 seconds' and not (id = any($2::bigint[]))
      returning id, job_queue_id`,
    [poolIds, running],
  );
  const queues = r.rows.map((x) => x.job_queue_id).filter((x): x is number => x !== null);
  if (queues.length) {
    await p.db.pool.query(
      "update graphile_worker._private_job_queues set locked_at = null, locked_by = null where id = any($1::int[]) and locked_by = any($2::text[])",
      [queues, poolIds],
    );
  }
  return r.rows.map((x) => x.id);
}

/**
 * graphile-worker's fetch locks every available named queue with SKIP LOCKED, so the runner owning a serial
 * queue's new job can find that queue locked by another runner's fetch (a poll, the next fetch after a job
 * ended, or every runner at once when the process's LISTEN reconnects), come up empty and sleep a whole poll
 * interval (the queue bench saw p95 200× graphile-worker alone when every runner fetched on every insert). After
 * it was woken for a job, a serial runner whose fetch came up empty asks (a plain read, no locks) whether a job of
 * its own tasks is ready in a queue nobody holds, and if so fetches again through graphile-worker's public
 * `nudge`: at once, then after `delaysMs` (a contending fetch on a loaded machine can take tens of milliseconds;
 * three immediate retries all lost to one such fetch). Returns the function that arms it (called when woken).
 */
function retryContendedFetch(p: Pipeline, events: WorkerEvents, tasks: string[], delaysMs = [0, 10, 20, 40, 80, 160, 320]): () => void {
  let used = delaysMs.length;
  events.on("worker:getJob:empty", ({ worker }) => {
    if (used >= delaysMs.length) return;
    const delay = delaysMs[used++];
    new Promise<void>((r) => setTimeout(r, delay).unref?.())
      .then(() => p.db.pool.query<{ ready: boolean }>(
        `select exists (select 1 from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
          where t.identifier = any($1::text[]) and j.locked_at is null and j.run_at <= now() and j.attempts < j.max_attempts
            and (j.job_queue_id is null or exists (select 1 from graphile_worker._private_job_queues q where q.id = j.job_queue_id and q.locked_at is null))) as ready`,
        [tasks],
      ))
      .then((r) => {
        if (r.rows[0]?.ready && !worker.getActiveJob()) worker.nudge();
      })
      .catch(() => {}); // only a faster pickup is lost (a stopped worker's nudge throws): the poll still finds the job
  });
  return () => void (used = 0);
}

/** A queue's runner as the process LISTEN wakes it: its graphile-worker pool once created, its slots, its re-check. */
interface Owner {
  pool?: WorkerPool;
  concurrency: number;
  arm?: () => void;
}

/** Channel of migrations/000007: a JSON object of queue → jobs ready, one notification per inserting statement. */
const JOBS_CHANNEL = "apfa_jobs";

/**
 * One LISTEN per process that wakes only the runner owning a new job. graphile-worker's `jobs:insert` names no
 * task, so with one runner per queue every runner fetched on every insert and their fetches contended; each
 * runner's own LISTEN on it is dropped once this one is up (`quiet`). If this LISTEN cannot start, the runners
 * keep graphile-worker's; while it is reconnecting, the runners' poll finds new jobs, and every runner is woken
 * once it is back.
 */
async function wakeOwners(p: Pipeline, log: Logger): Promise<{ runners: Map<string, Owner>; quiet: boolean; close(): Promise<void> }> {
  const runners = new Map<string, Owner>();
  const wake = (q: Owner | undefined, n: number) => {
    q?.arm?.();
    q?.pool?.nudge(n);
  };
  const wakeAll = (n: number) => runners.forEach((q) => wake(q, n));
  try {
    const close = await listenForever({
      connection: { connectionString: p.db.url, application_name: "apfa-worker", keepAlive: true, connectionTimeoutMillis: 5000 },
      channel: JOBS_CHANNEL,
      shown: String(redact(p.db.url)),
      log,
      // What was inserted meanwhile is unknown: every worker of every runner looks once.
      onReconnect: () => runners.forEach((q) => wake(q, q.concurrency)),
      onPayload(payload) {
        let ready: Record<string, unknown>;
        try {
          ready = JSON.parse(payload) as Record<string, unknown>;
        } catch {
          return wakeAll(1);
        }
        for (const [queue, n] of Object.entries(ready)) {
          const count = typeof n === "number" && n > 0 ? n : 1;
          if (queue === "") wakeAll(count);
          else wake(runners.get(queue), count);
        }
      },
    });
    return { runners, quiet: true, close };
  } catch (err) {
    log.warn(`cannot LISTEN ${JOBS_CHANNEL}; every runner wakes on graphile-worker's jobs:insert instead`, { error: errorMessage(err) });
    return { runners, quiet: false, close: async () => {} };
  }
}

/** Routes graphile-worker's own logs into apfa's JSON logs. */
function graphileLogger(log: import("./contracts.ts").Logger): GraphileLogger {
  return new GraphileLogger((scope) => (level, message, meta) => {
    const fields = { graphile: { ...scope, ...meta } };
    if (level === "error") log.error(message, fields);
    else if (level === "warning") log.warn(message, fields);
    else if (level === "info") log.debug(message, fields);
    else log.debug(message, fields);
  });
}

export async function startWorker(p: Pipeline, opts: WorkerOptions = {}): Promise<WorkerHandle> {
  const id = `${os.hostname()}-${process.pid}-${crypto.randomBytes(3).toString("hex")}`;
  const log = p.log.child({ worker: id });
  const all = { ...pipelineTasks(p), ...opts.tasks } as Record<string, Task>;
  const queues = (opts.queues ?? Object.keys(p.config.queues)).filter((q) => q in p.config.queues);
  const queueOf = (task: string) => opts.routes?.[task] ?? TASK_QUEUES[task as TaskName] ?? "maintenance";

  await p.db.pool.query(
    `insert into apfa.task_queues (task, queue) select t, q from unnest($1::text[], $2::text[]) as x(t, q)
     on conflict (task) do update set queue = excluded.queue, updated_at = now()`,
    [Object.keys(all), Object.keys(all).map(queueOf)],
  );
  await p.db.pool.query(
    `insert into apfa.workers (id, pipeline, hostname, pid, queues) values ($1, $2, $3, $4, $5)`,
    [id, p.config.name, os.hostname(), process.pid, JSON.stringify(Object.fromEntries(queues.map((q) => [q, p.config.queues[q]])))],
  );

  const started = new Map<string, number>();
  const poolIds: string[] = [];
  const timeoutMs = durationMs(p.config.workers.heartbeat_timeout);
  const metrics = createWorkerMetrics({ pool: p.db.pool, pipeline: p.config.name, queues, heartbeatTimeoutMs: timeoutMs, log });
  // apfa.job_history is not written here: Postgres writes it in the transaction that records the outcome
  // (migrations/000003_job_history_in_completion.sql), so it costs no round trip and survives a crash.
  const finished = (job: Job, error: unknown) => {
    const t0 = started.get(job.id) ?? Date.now();
    started.delete(job.id);
    const outcome = !error ? "success" : job.attempts >= job.max_attempts ? "failed" : "retry";
    metrics.observeJob(job, queueOf(job.task_identifier), outcome, t0).catch((err) => log.warn("job metrics not recorded", { error: errorMessage(err) }));
  };

  // Served before the runners start, so a bad --metrics-port fails fast with nothing to undo.
  let endpoint: MetricsEndpoint | undefined;
  if (opts.metricsPort !== undefined) {
    endpoint = await serveWorkerMetrics(metrics, opts.metricsPort);
    await p.db.pool.query("update apfa.workers set metrics_port = $2 where id = $1", [id, endpoint.port]);
    log.info("worker metrics served", { url: endpoint.url });
  }

  const owners = await wakeOwners(p, log);
  const runners = new Map<string, Runner>();
  let cronPlaced = opts.cron === false;
  for (const q of queues) {
    const taskList = Object.fromEntries(Object.entries(all).filter(([t]) => queueOf(t) === q)) as Record<string, Task>;
    if (!Object.keys(taskList).length) continue;
    metrics.zero(Object.keys(taskList).map((task) => ({ task, queue: q })));
    // graphile-worker creates its workers inside run(): listeners must be on the emitter before it is called.
    const events = new EventEmitter() as WorkerEvents;
    // graphile-worker 0.17 locks jobs with the pool's id (locked_by = 'pool-…'); the per-worker ids are kept too
    // for logs. Both go into apfa.workers so the reaper and the dashboard can match locked jobs to a process.
    const recordId = (gid: string) =>
      p.db.pool.query("update apfa.workers set graphile_worker_ids = array_append(graphile_worker_ids, $2) where id = $1", [id, gid])
        .catch(() => {});
    const owner: Owner = { concurrency: p.config.queues[q] };
    owners.runners.set(q, owner);
    events.on("pool:create", ({ workerPool }) => {
      owner.pool = workerPool;
      poolIds.push(workerPool.id);
      void recordId(workerPool.id);
    });
    // graphile-worker sends its LISTEN right after this event, on this client; queued behind it, the UNLISTEN
    // leaves the runner's connection listening to worker:migrate only (also after a reconnect).
    if (owners.quiet) {
      events.on("pool:listen:success", ({ client }) => {
        queueMicrotask(() => void client.query('UNLISTEN "jobs:insert"').catch(() => {}));
      });
    }
    events.on("worker:create", ({ worker }) => void recordId(worker.workerId));
    events.on("job:start", ({ job }) => started.set(job.id, Date.now()));
    events.on("job:complete", ({ job, error }) => finished(job, error));
    if (p.config.queues[q] === 1) owner.arm = retryContendedFetch(p, events, Object.keys(taskList));
    let runner: Runner;
    try {
      runner = await run({
        events,
        pgPool: p.db.pool,
        concurrency: p.config.queues[q],
        taskList,
        noHandleSignals: true,
        pollInterval: durationMs(p.config.workers.poll_interval),
        // Jobs that finish in the same tick are completed by one statement (and get their job_history rows from
        // one trigger call, migrations/000006) instead of one round trip each; a stop flushes what is pending.
        preset: { worker: { completeJobBatchDelay: 0 } },
        parsedCronItems: cronPlaced ? [] : parseCronItems(cronItems(p)),
        logger: graphileLogger(log.child({ queue: q })),
      });
    } catch (err) {
      // Nothing started may outlive a failed start: the runners before this one, and the process's LISTEN.
      await Promise.all([...runners.values()].map((r) => r.stop().catch(() => {})));
      await owners.close();
      await endpoint?.close();
      throw err;
    }
    cronPlaced = true;
    runners.set(q, runner);
    log.info("queue runner started", { queue: q, concurrency: p.config.queues[q], tasks: Object.keys(taskList) });
  }

  const reaper = createReaper({ pool: p.db.pool, pipeline: p.config.name, timeoutMs, log, selfId: id });
  const heartbeat = setInterval(() => {
    p.db.pool.query("update apfa.workers set last_heartbeat_at = now() where id = $1 and reaped_at is null", [id])
      .then((r) => {
        if (r.rowCount !== 0) return;
        // Another worker took this one for dead and released its jobs: running on would run them twice.
        log.error("this worker was reaped (heartbeat older than workers.heartbeat_timeout); stopping", { timeout_ms: timeoutMs });
        void stop("reaped");
      })
      .catch((err) => log.warn("heartbeat failed", { error: errorMessage(err) }));
    reaper.reap().then((dead) => dead.length && metrics.reaped.inc(dead.length)).catch(() => {});
    releaseOrphans(p, poolIds, [...started.keys()])
      .then((ids) => ids.length && log.warn("released jobs this worker had locked but was no longer running (lost database connection)", { jobs: ids }))
      .catch(() => {});
    failOverdueRuns(p.db.pool).then((ids) => ids.length && log.warn("runs timed out", { runs: ids })).catch(() => {});
  }, opts.heartbeatMs ?? durationMs(p.config.workers.heartbeat_interval));
  heartbeat.unref?.();

  let stopping: Promise<void> | undefined;
  const stop = (reason = "stop requested") =>
    (stopping ??= (async () => {
      clearInterval(heartbeat);
      log.info("worker stopping; waiting for running jobs", { reason });
      await Promise.all([...runners.values()].map((r) => r.stop().catch((err) => log.warn("runner stop failed", { error: errorMessage(err) }))));
      await owners.close();
      await p.db.pool.query("update apfa.workers set stopped_at = now() where id = $1", [id]).catch(() => {});
      await endpoint?.close();
      await reaper.release();
      log.info("worker stopped");
    })());
  // Settles once the runners ended and, when a stop ended them, the stop finished too (stopped_at written):
  // a caller awaiting the worker must see its row as stopped.
  const promise = Promise.all([...runners.values()].map((r) => r.promise)).then(() => stopping).then(() => undefined);
  return { id, runners, stop, promise, metrics, metricsUrl: endpoint?.url };
}
