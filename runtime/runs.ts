/**
 * Runs and their batches in Postgres (`apfa.runs`, `apfa.batches`), and the fan-in: the transaction that
 * records the last batch of a run also enqueues `build_index`, exactly once, because every batch completion
 * increments the run row under its row lock and only the one that reaches the total flips `build_enqueued`.
 * @module
 */
import * as crypto from "node:crypto";
import type pg from "pg";
import { durationMs, TASK_QUEUES, type PipelineConfig, type TaskName } from "./config/schema.ts";

export type RunStatus = "pending" | "enumerating" | "embedding" | "building" | "succeeded" | "failed" | "cancelled";
export const ACTIVE_STATUSES: RunStatus[] = ["pending", "enumerating", "embedding", "building"];

export interface RunRow {
  id: string;
  pipeline: string;
  status: RunStatus;
  trigger: string;
  batch_size: number;
  batches_total: number | null;
  batches_done: number;
  batches_failed: number;
  docs_read: string;
  docs_embedded: string;
  docs_skipped: string;
  docs_truncated: string;
  skipped: Record<string, number>;
  build_enqueued: boolean;
  index_version: string | null;
  error: string | null;
  stats: Record<string, unknown> | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  deadline_at: Date;
}

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

/** Run ids sort by time and stay readable: `r20261128T224500Z-1a2b3c`. */
export function newRunId(now = new Date()): string {
  return `r${now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}-${crypto.randomBytes(3).toString("hex")}`;
}

/** Options for graphile_worker.add_job: the task's queue is serial cluster-wide when its concurrency is 1. */
export function jobOptions(config: PipelineConfig, task: TaskName, queueOverride?: string): { queue: string; serial: string | null; maxAttempts: number } {
  const queue = queueOverride ?? TASK_QUEUES[task];
  return { queue, serial: config.queues[queue] === 1 ? queue : null, maxAttempts: config.run.max_attempts };
}

/** Adds a graphile-worker job inside the caller's transaction (SQL `add_job`, so it commits or not with it). */
export async function addJob(
  db: Queryable,
  config: PipelineConfig,
  task: TaskName,
  payload: Record<string, unknown>,
  opts: { key?: string; runAt?: Date; queue?: string } = {},
): Promise<string> {
  const o = jobOptions(config, task, opts.queue);
  const r = await db.query<{ id: string }>(
    `select id from graphile_worker.add_job($1, $2::json, queue_name := $3, run_at := $4, max_attempts := $5, job_key := $6)`,
    [task, JSON.stringify(payload), o.serial, opts.runAt ?? null, o.maxAttempts, opts.key ?? null],
  );
  return r.rows[0].id;
}

/** Creates a run row and enqueues its `embed_all` orchestrator in one transaction. */
export async function createRun(pool: pg.Pool, config: PipelineConfig, trigger = "manual"): Promise<string> {
  const id = newRunId();
  const client = await pool.connect();
  try {
    await client.query("begin");
    await client.query(
      `insert into apfa.runs (id, pipeline, trigger, source, embedder, batch_size, deadline_at)
       values ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))`,
      [id, config.name, trigger, config.stages.source.plugin, config.stages.embedder.plugin, config.batch_size, durationMs(config.run.timeout) / 1000],
    );
    await addJob(client, config, "embed_all", { run_id: id }, { key: `embed_all:${id}` });
    await client.query("commit");
  } catch (err) {
    await client.query("rollback").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
  return id;
}

export async function getRun(db: Queryable, id: string): Promise<RunRow | undefined> {
  return (await db.query<RunRow>("select * from apfa.runs where id = $1", [id])).rows[0];
}

export async function activeRuns(db: Queryable, pipeline: string): Promise<RunRow[]> {
  return (await db.query<RunRow>("select * from apfa.runs where pipeline = $1 and status = any($2) order by created_at", [pipeline, ACTIVE_STATUSES])).rows;
}

/**
 * Enqueues build_index when every batch of the run has finished (done or failed), at most once.
 * Must run in the same transaction as the update that changed the counters.
 */
export async function fanIn(client: Queryable, config: PipelineConfig, runId: string): Promise<boolean> {
  const r = await client.query(
    `update apfa.runs set build_enqueued = true, status = 'building', embedded_at = now()
      where id = $1 and status = 'embedding' and not build_enqueued
        and batches_total is not null and batches_done + batches_failed >= batches_total
      returning id`,
    [runId],
  );
  if (r.rowCount === 0) return false;
  await addJob(client, config, "build_index", { run_id: runId }, { key: `build_index:${runId}` });
  return true;
}

/** Runs `fn` in a transaction on a pooled client. */
export async function tx<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("begin");
    const out = await fn(client);
    await client.query("commit");
    return out;
  } catch (err) {
    await client.query("rollback").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

/** Marks runs past their deadline failed, naming the batches that did not finish. Returns their ids. */
export async function failOverdueRuns(pool: pg.Pool): Promise<string[]> {
  const r = await pool.query<{ id: string }>(
    `update apfa.runs r set status = 'failed', finished_at = now(),
            error = 'run timed out' || coalesce(': batches not finished: ' || (
              select string_agg(b.n::text, ',' order by b.n) from apfa.batches b
               where b.run_id = r.id and b.status not in ('done', 'failed')), '')
      where status = any($1) and deadline_at < now()
      returning id`,
    [ACTIVE_STATUSES],
  );
  return r.rows.map((x) => x.id);
}

/** Fails a run with a reason (no-op when it already finished). */
export async function failRun(db: Queryable, runId: string, error: string): Promise<void> {
  await db.query(
    `update apfa.runs set status = 'failed', error = $2, finished_at = now() where id = $1 and status = any($3)`,
    [runId, error, ACTIVE_STATUSES],
  );
}
