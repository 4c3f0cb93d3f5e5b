/**
 * The read queries behind `apfa inspect` and the dashboard's `/api` (one module both import, so the server
 * never depends on a CLI command): which workers are alive, which jobs run where, queue depth and throughput,
 * runs with progress, and the next cron fires. Everything is read straight from Postgres (`apfa.*` and
 * graphile-worker's tables), so it works with no server running and sees every worker sharing the database.
 * @module
 */
import type pg from "pg";
import { nextFires } from "./config/cron.ts";
import { durationMs, TASK_QUEUES, type PipelineConfig } from "./config/schema.ts";

/** Anything that runs a query: a pool or a client. */
export type Queryable = Pick<pg.Pool, "query">;

/**
 * A worker whose last heartbeat is older than `workers.heartbeat_timeout` is reported offline — the same
 * threshold after which live workers reap it and release its jobs.
 */
export function heartbeatTimeoutS(config: PipelineConfig): number {
  return durationMs(config.workers.heartbeat_timeout) / 1000;
}

/** Jobs of a worker that are running now: graphile-worker locks them with one of the worker's runner ids. */
const RUNNING_JOBS = `coalesce((select json_agg(json_build_object('id', j.id::text, 'task', j.task, 'queue', j.queue,
  'run_id', j.payload->>'run_id', 'attempts', j.attempts, 'locked_at', j.locked_at) order by j.locked_at)
  from apfa.jobs j where j.locked_by = any(w.graphile_worker_ids)), '[]'::json)`;

export interface WorkerInfo {
  id: string;
  pipeline: string;
  hostname: string;
  pid: number;
  queues: Record<string, number>;
  online: boolean;
  /** `reaped`: silent past the timeout, and another worker released its jobs. */
  status: "online" | "offline" | "reaped" | "stopped";
  started_at: Date;
  last_heartbeat_at: Date;
  heartbeat_age_s: number;
  stopped_at: Date | null;
  reaped_at: Date | null;
  running: Array<{ id: string; task: string; queue: string | null; run_id: string | null; attempts: number; locked_at: string }>;
}

/** Live workers and those stopped or silent within the last hour, online first. */
export async function inspectWorkers(db: Queryable, timeoutS: number): Promise<WorkerInfo[]> {
  const r = await db.query<WorkerInfo>(
    `select w.id, w.pipeline, w.hostname, w.pid, w.queues, w.started_at, w.last_heartbeat_at, w.stopped_at, w.reaped_at,
            (w.stopped_at is null and w.reaped_at is null and w.last_heartbeat_at > now() - make_interval(secs => $1)) as online,
            case when w.stopped_at is not null then 'stopped' when w.reaped_at is not null then 'reaped'
                 when w.last_heartbeat_at > now() - make_interval(secs => $1) then 'online' else 'offline' end as status,
            round(extract(epoch from now() - w.last_heartbeat_at)::numeric, 1)::float8 as heartbeat_age_s,
            ${RUNNING_JOBS} as running
       from apfa.workers w
      where coalesce(w.stopped_at, w.last_heartbeat_at) > now() - interval '1 hour'
      order by online desc, w.started_at desc
      limit 100`,
    [timeoutS],
  );
  return r.rows;
}

export interface JobInfo {
  id: string;
  task: string;
  queue: string | null;
  run_id: string | null;
  state: "running" | "failed" | "retrying";
  attempts: number;
  max_attempts: number;
  error: string | null;
  run_at: Date;
  locked_at: Date | null;
  /** graphile-worker's lock owner (a runner pool id); `worker_id` is the apfa worker that recorded it. */
  locked_by: string | null;
  worker_id: string | null;
  updated_at: Date;
}

export interface HistoryInfo {
  id: string;
  job_id: string | null;
  task: string;
  queue: string | null;
  run_id: string | null;
  worker_id: string | null;
  attempt: number;
  max_attempts: number;
  outcome: "success" | "retry" | "failed";
  error: string | null;
  started_at: Date;
  finished_at: Date;
  duration_ms: number;
}

export const JOB_FILTERS = ["running", "failed", "recent"] as const;
export type JobFilter = (typeof JOB_FILTERS)[number];

const JOB_COLUMNS = `j.id::text, j.task, j.queue, j.payload->>'run_id' as run_id, j.attempts, j.max_attempts,
  j.last_error as error, j.run_at, j.locked_at, j.locked_by, j.updated_at`;

/**
 * `running`: locked jobs with the apfa worker holding them. `failed`: jobs that failed and are not running —
 * `failed` when out of attempts (graphile-worker keeps them, never to run again) or `retrying` while they
 * wait for their next attempt; both are still in graphile-worker's table, so both can be retried.
 * `recent`: the last finished attempts from `apfa.job_history`, errors included.
 */
export async function inspectJobs(db: Queryable, filter: "recent", limit?: number): Promise<HistoryInfo[]>;
export async function inspectJobs(db: Queryable, filter: "running" | "failed", limit?: number): Promise<JobInfo[]>;
export async function inspectJobs(db: Queryable, filter: JobFilter, limit?: number): Promise<JobInfo[] | HistoryInfo[]>;
export async function inspectJobs(db: Queryable, filter: JobFilter, limit = 50): Promise<JobInfo[] | HistoryInfo[]> {
  if (filter === "recent") {
    return (await db.query<HistoryInfo>(
      `select id::text, job_id::text, task, queue, run_id, worker_id, attempt, max_attempts, outcome, error, started_at, finished_at, duration_ms
         from apfa.job_history order by finished_at desc, id desc limit $1`,
      [limit],
    )).rows;
  }
  if (filter === "running") {
    return (await db.query<JobInfo>(
      `select ${JOB_COLUMNS}, 'running' as state, w.id as worker_id
         from apfa.jobs j left join apfa.workers w on j.locked_by = any(w.graphile_worker_ids)
        where j.locked_at is not null order by j.locked_at limit $1`,
      [limit],
    )).rows;
  }
  return (await db.query<JobInfo>(
    `select ${JOB_COLUMNS}, case when j.attempts >= j.max_attempts then 'failed' else 'retrying' end as state, null as worker_id
       from apfa.jobs j
      where j.locked_at is null and j.attempts > 0 and (j.last_error is not null or j.attempts >= j.max_attempts)
      order by j.updated_at desc limit $1`,
    [limit],
  )).rows;
}

export interface QueueInfo {
  queue: string;
  /** From pipeline.yaml; null for a queue only seen in the tables. */
  concurrency: number | null;
  /** Jobs waiting to run: `ready` now plus `scheduled` later (cron backfill, retry back-off). */
  depth: number;
  ready: number;
  scheduled: number;
  running: number;
  /** Out of attempts and kept by graphile-worker until retried or deleted. */
  failed_jobs: number;
  completed_1h: number;
  failed_1h: number;
  retried_1h: number;
  /** Finished jobs (success or final failure) per minute over the last 5 minutes. */
  rate_per_min: number;
  avg_ms: number | null;
}

/** Per-queue depth from `apfa.jobs` and the last hour's outcomes from `apfa.job_history`. */
export async function inspectQueues(db: Queryable, config: PipelineConfig): Promise<QueueInfo[]> {
  const declared = Object.entries(config.queues);
  const r = await db.query<QueueInfo>(
    `with d as (select * from unnest($1::text[], $2::int[]) as d(queue, concurrency)),
     j as (select coalesce(queue, 'unassigned') as queue,
                  count(*) filter (where locked_at is null and attempts < max_attempts and run_at <= now())::int as ready,
                  count(*) filter (where locked_at is null and attempts < max_attempts and run_at > now())::int as scheduled,
                  count(*) filter (where locked_at is not null)::int as running,
                  count(*) filter (where locked_at is null and attempts >= max_attempts)::int as failed_jobs
             from apfa.jobs group by 1),
     h as (select coalesce(queue, 'unassigned') as queue,
                  count(*) filter (where outcome = 'success')::int as completed_1h,
                  count(*) filter (where outcome = 'failed')::int as failed_1h,
                  count(*) filter (where outcome = 'retry')::int as retried_1h,
                  count(*) filter (where outcome <> 'retry' and finished_at > now() - interval '5 minutes')::int as done_5m,
                  round(avg(duration_ms) filter (where outcome = 'success'))::int as avg_ms
             from apfa.job_history where finished_at > now() - interval '1 hour' group by 1)
     select q.queue, d.concurrency,
            coalesce(j.ready, 0) + coalesce(j.scheduled, 0) as depth, coalesce(j.ready, 0) as ready,
            coalesce(j.scheduled, 0) as scheduled, coalesce(j.running, 0) as running, coalesce(j.failed_jobs, 0) as failed_jobs,
            coalesce(h.completed_1h, 0) as completed_1h, coalesce(h.failed_1h, 0) as failed_1h, coalesce(h.retried_1h, 0) as retried_1h,
            round(coalesce(h.done_5m, 0) / 5.0, 2)::float8 as rate_per_min, h.avg_ms
       from (select queue from d union select queue from j union select queue from h) q
       left join d using (queue) left join j using (queue) left join h using (queue)
      order by d.concurrency is null, q.queue`,
    [declared.map(([q]) => q), declared.map(([, c]) => c)],
  );
  return r.rows;
}

export interface RunInfo {
  id: string;
  status: string;
  trigger: string;
  batches_total: number | null;
  batches_done: number;
  batches_failed: number;
  docs_read: number;
  docs_embedded: number;
  docs_reused: number;
  docs_removed: number;
  docs_skipped: number;
  /** The version the run carried unchanged documents from (null: it embedded everything). */
  base_version: string | null;
  index_version: string | null;
  error: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  /** Batches finished (done or failed) over batches total, 0-1; 1 once the run succeeded. */
  progress: number;
  docs_per_s: number | null;
}

/** The pipeline's latest runs, newest first, with progress. */
export async function inspectRuns(db: Queryable, pipeline: string, limit = 20): Promise<RunInfo[]> {
  const r = await db.query<RunInfo>(
    `select id, status, trigger, batches_total, batches_done, batches_failed, docs_read::float8 as docs_read,
            docs_embedded::float8 as docs_embedded, docs_reused::float8 as docs_reused, docs_removed::float8 as docs_removed,
            docs_skipped::float8 as docs_skipped, base_version, index_version, error,
            created_at, started_at, finished_at,
            case when status = 'succeeded' then 1
                 when coalesce(batches_total, 0) = 0 then 0
                 else least(1, (batches_done + batches_failed)::float8 / batches_total) end as progress,
            case when started_at is null or docs_embedded = 0 then null
                 else round((docs_embedded / greatest(extract(epoch from coalesce(finished_at, now()) - started_at), 0.001))::numeric, 1)::float8 end as docs_per_s
       from apfa.runs where pipeline = $1 order by created_at desc limit $2`,
    [pipeline, limit],
  );
  return r.rows;
}

export interface ScheduleInfo {
  name: string;
  cron: string;
  task: string;
  queue: string;
  overlap: string;
  next: string[];
}

/** Next fires (UTC) of the enabled schedules in pipeline.yaml; reads no database. */
export function inspectScheduled(config: PipelineConfig, n = 3, now = new Date()): ScheduleInfo[] {
  return Object.entries(config.schedules)
    .filter(([, s]) => s.enabled)
    .map(([name, s]) => ({
      name, cron: s.cron, task: s.task, queue: s.queue ?? TASK_QUEUES[s.task], overlap: s.overlap,
      next: nextFires(s.cron, n, now).map((d) => d.toISOString()),
    }))
    .sort((a, b) => a.next[0].localeCompare(b.next[0]));
}
