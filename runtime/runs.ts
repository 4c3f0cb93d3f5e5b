/**
 * The run state machine: every status change of `apfa.runs` and `apfa.batches` happens here, nowhere else.
 *
 * ```
 * run:    pending ──startEnumerating──▶ enumerating ──finishEnumerating──▶ embedding ──fanIn──▶ building ──succeedRun──▶ succeeded
 *            │                              │  (no valid documents) ──────────────────────────────────────────▶ failed
 *            └─ cancelRuns (a newer scheduled run replaced it), failRun / failOverdueRuns (any active state) ─▶ cancelled / failed
 * batch:  pending ──startBatch──▶ running ──batchDone──▶ done
 *                                    └──batchFailed──▶ pending (graphile-worker retries) │ failed (last attempt)
 * ```
 *
 * A run moves from `embedding` to `building` in `fanIn`, inside the transaction that recorded the last batch (or
 * that finished enumerating, when nothing needed embedding): the row lock on the run makes exactly one of them
 * flip `build_enqueued` and enqueue `build_index`. Tasks call these functions; they never write the tables.
 * @module
 */
import * as crypto from "node:crypto";
import type pg from "pg";
import { durationMs, TASK_QUEUES, type PipelineConfig, type TaskName } from "./config/schema.ts";
import type { Skip } from "./documents.ts";

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
  docs_reused: string;
  docs_changed: string;
  docs_removed: string;
  skipped: Record<string, number>;
  build_enqueued: boolean;
  /** Vectors the index build has inserted, of `build_total` (engines that report it). */
  build_done: string | null;
  build_total: string | null;
  full_run: boolean;
  base_version: string | null;
  base_reason: string | null;
  embedder_key: string | null;
  reuse_key: string | null;
  source_read: string | null;
  source_cursor: string | null;
  index_version: string | null;
  error: string | null;
  stats: Record<string, unknown> | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  deadline_at: Date;
}

export interface BatchRow {
  n: number;
  status: string;
  docs: number;
  input_key: string;
  vectors_key: string | null;
  docs_key: string | null;
  model_id: string | null;
  dims: number | null;
  max_chars: number | null;
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

// ---------------------------------------------------------------- reading

export async function getRun(db: Queryable, id: string): Promise<RunRow | undefined> {
  return (await db.query<RunRow>("select * from apfa.runs where id = $1", [id])).rows[0];
}

export async function activeRuns(db: Queryable, pipeline: string): Promise<RunRow[]> {
  return (await db.query<RunRow>("select * from apfa.runs where pipeline = $1 and status = any($2) order by created_at", [pipeline, ACTIVE_STATUSES])).rows;
}

export async function listBatches(db: Queryable, runId: string): Promise<BatchRow[]> {
  return (await db.query<BatchRow>(
    "select n, status, docs, input_key, vectors_key, docs_key, model_id, dims, max_chars from apfa.batches where run_id = $1 order by n",
    [runId],
  )).rows;
}

// ---------------------------------------------------------------- run transitions

/** → `pending`: creates a run row and enqueues its `embed_all` orchestrator in one transaction. */
export async function createRun(pool: pg.Pool, config: PipelineConfig, trigger = "manual", opts: { full?: boolean } = {}): Promise<string> {
  const id = newRunId();
  await tx(pool, async (client) => {
    await client.query(
      `insert into apfa.runs (id, pipeline, trigger, source, embedder, batch_size, full_run, deadline_at)
       values ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))`,
      [id, config.name, trigger, config.stages.source.plugin, config.stages.embedder.plugin, config.batch_size, opts.full ?? false, durationMs(config.run.timeout) / 1000],
    );
    await addJob(client, config, "embed_all", { run_id: id }, { key: `embed_all:${id}` });
  });
  return id;
}

/** → `cancelled` for runs a newer scheduled run replaces (overlap: replace). */
export async function cancelRuns(db: Queryable, ids: string[], reason: string): Promise<void> {
  if (!ids.length) return;
  await db.query("update apfa.runs set status = 'cancelled', finished_at = now(), error = $2 where id = any($1) and status = any($3)", [ids, reason, ACTIVE_STATUSES]);
}

/**
 * `pending` → `enumerating` (a retried orchestrator finds it `enumerating` already). Returns the run, or
 * undefined when it is past enumeration (finished, failed, cancelled), so the orchestrator does nothing.
 */
export async function startEnumerating(db: Queryable, runId: string): Promise<RunRow | undefined> {
  const r = await db.query<RunRow>(
    `update apfa.runs set status = 'enumerating', started_at = coalesce(started_at, now())
      where id = $1 and status in ('pending', 'enumerating') returning *`,
    [runId],
  );
  return r.rows[0];
}

/** Records the version a run diffs against and why (the first attempt's choice; retries reuse it). */
export async function fixBase(db: Queryable, runId: string, base: { version: string | null; reason: string; embedderKey: string }): Promise<void> {
  await db.query(
    "update apfa.runs set base_version = $2, base_reason = $3, embedder_key = $4 where id = $1 and base_reason is null",
    [runId, base.version, base.reason, base.embedderKey],
  );
}

/** Records one batch of documents to embed and enqueues its `embed_batch` job (false when already recorded). */
export async function recordBatch(pool: pg.Pool, config: PipelineConfig, runId: string, n: number, docs: number, inputKey: string): Promise<boolean> {
  return tx(pool, async (c) => {
    const ins = await c.query("insert into apfa.batches (run_id, n, docs, input_key) values ($1, $2, $3, $4) on conflict do nothing", [runId, n, docs, inputKey]);
    if (ins.rowCount === 0) return false;
    await addJob(c, config, "embed_batch", { run_id: runId, n }, { key: `embed_batch:${runId}:${n}` });
    return true;
  });
}

export interface EnumerationCounts {
  batches: number;
  read: number;
  skipped: Record<string, number>;
  samples: Skip[];
  reused: number;
  changed: number;
  removed: number;
  reuseKey: string | null;
  /** How the source was read (`full`, `changes since …`) and where the read ended. */
  sourceRead: string;
  sourceCursor: string | null;
  /** Documents in the next version: embedded plus reused. */
  kept: number;
}

/**
 * `enumerating` → `embedding` (then straight to `building` through the fan-in when nothing needs embedding),
 * or → `failed` when the source yielded no valid document.
 */
export async function finishEnumerating(pool: pg.Pool, config: PipelineConfig, runId: string, c: EnumerationCounts): Promise<void> {
  const skippedTotal = Object.values(c.skipped).reduce((a, b) => a + b, 0);
  await tx(pool, async (client) => {
    await client.query(
      `update apfa.runs set status = case when $9::bigint = 0 then 'failed' else 'embedding' end,
              error = case when $9::bigint = 0 then 'the source yielded no valid documents' else error end,
              finished_at = case when $9::bigint = 0 then now() else finished_at end,
              batches_total = $2, docs_read = $3, docs_skipped = $4, skipped = $5, skipped_samples = $6,
              docs_reused = $7, docs_changed = $8, docs_removed = $10, reuse_key = $11, source_read = $12, source_cursor = $13,
              enumerated_at = now()
        where id = $1 and status = 'enumerating'`,
      [runId, c.batches, c.read, skippedTotal, JSON.stringify(c.skipped), JSON.stringify(c.samples), c.reused, c.changed, c.kept, c.removed, c.reuseKey, c.sourceRead, c.sourceCursor],
    );
    await fanIn(client, config, runId);
  });
}

/**
 * `embedding` → `building`: enqueues build_index when every batch has finished (done or failed), at most once.
 * Runs in the same transaction as the change that moved the counters.
 */
async function fanIn(client: Queryable, config: PipelineConfig, runId: string): Promise<boolean> {
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

/** How far a `building` run's index build has got (no-op once the run left `building`). */
export async function recordBuildProgress(db: Queryable, runId: string, done: number, total: number): Promise<void> {
  await db.query(`update apfa.runs set build_done = $2, build_total = $3 where id = $1 and status = 'building'`, [runId, done, total]);
}

/** `building` → `succeeded`. */
export async function succeedRun(db: Queryable, runId: string, version: string, stats: Record<string, unknown>): Promise<void> {
  await db.query(
    `update apfa.runs set status = 'succeeded', index_version = $2, stats = $3, finished_at = now() where id = $1 and status = 'building'`,
    [runId, version, JSON.stringify(stats)],
  );
}

/** Any active state → `failed`, with a reason (no-op when the run already finished). */
export async function failRun(db: Queryable, runId: string, error: string): Promise<void> {
  await db.query(
    `update apfa.runs set status = 'failed', error = $2, finished_at = now() where id = $1 and status = any($3)`,
    [runId, error, ACTIVE_STATUSES],
  );
}

/** Active runs past their deadline → `failed`, naming the batches that did not finish. Returns their ids. */
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

// ---------------------------------------------------------------- batch transitions

/**
 * `pending` → `running` (a `done` batch stays done). Returns the batch and its run's status, so the caller can
 * skip work for a finished batch or a dead run.
 */
export async function startBatch(db: Queryable, runId: string, n: number): Promise<{ status: string; run_status: RunStatus; input_key: string } | undefined> {
  const r = await db.query<{ status: string; run_status: RunStatus; input_key: string }>(
    `update apfa.batches b set status = case when b.status = 'done' then b.status else 'running' end,
            attempts = b.attempts + 1, started_at = now()
       from apfa.runs r where r.id = b.run_id and b.run_id = $1 and b.n = $2
     returning b.status, r.status as run_status, b.input_key`,
    [runId, n],
  );
  return r.rows[0];
}

export interface BatchResult {
  embedded: number;
  truncated: number;
  zero: number;
  vectorsKey: string;
  docsKey: string;
  bytes: number;
  ms: number;
  modelId: string;
  dims: number;
  maxChars: number;
}

/** `running` → `done`, adding to the run's counters and running the fan-in, in one transaction. */
export async function batchDone(pool: pg.Pool, config: PipelineConfig, runId: string, n: number, b: BatchResult): Promise<void> {
  await tx(pool, async (c) => {
    const upd = await c.query(
      `update apfa.batches set status = 'done', embedded = $3, truncated = $4, skipped = $5, vectors_key = $6, docs_key = $7,
              bytes = $8, duration_ms = $9, model_id = $10, dims = $11, max_chars = $12, error = null, finished_at = now()
        where run_id = $1 and n = $2 and status <> 'done'`,
      [runId, n, b.embedded, b.truncated, b.zero, b.vectorsKey, b.docsKey, b.bytes, b.ms, b.modelId, b.dims, b.maxChars],
    );
    if (upd.rowCount === 0) return;
    await c.query(
      `update apfa.runs set batches_done = batches_done + 1, docs_embedded = docs_embedded + $2,
              docs_truncated = docs_truncated + $3, docs_skipped = docs_skipped + $4,
              skipped = case when $4::int > 0 then jsonb_set(skipped, '{zero_vector}', to_jsonb(coalesce((skipped->>'zero_vector')::int, 0) + $4::int)) else skipped end
        where id = $1`,
      [runId, b.embedded, b.truncated, b.zero],
    );
    await fanIn(c, config, runId);
  });
}

/** `running` → `pending` (graphile-worker retries) or, on the last attempt, → `failed` and the fan-in. */
export async function batchFailed(pool: pg.Pool, config: PipelineConfig, runId: string, n: number, last: boolean, error: string): Promise<void> {
  await tx(pool, async (c) => {
    const upd = await c.query(
      `update apfa.batches set status = $3, error = $4, finished_at = case when $3 = 'failed' then now() else finished_at end
        where run_id = $1 and n = $2 and status <> 'done'`,
      [runId, n, last ? "failed" : "pending", error],
    );
    if (last && upd.rowCount) {
      await c.query("update apfa.runs set batches_failed = batches_failed + 1 where id = $1", [runId]);
      await fanIn(c, config, runId);
    }
  });
}
