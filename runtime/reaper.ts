/**
 * Crash recovery. graphile-worker leaves the jobs of a worker that died (SIGKILL, OOM, lost host) locked for
 * four hours before it retries them. Every live apfa worker therefore runs `reapDeadWorkers` with its
 * heartbeat: under a transaction-scoped advisory lock (so one reaper acts at a time), it finds workers of the
 * pipeline whose heartbeat is older than `workers.heartbeat_timeout`, releases their jobs with
 * graphile-worker's `forceUnlockWorkers` (their recorded `graphile_worker_ids`) and marks them `reaped_at`.
 * A released job runs again on a live worker; the tasks are idempotent, so a batch is embedded once.
 * @module
 */
import type pg from "pg";
import { makeWorkerUtils, type WorkerUtils } from "graphile-worker";
import type { Logger } from "./contracts.ts";
import { errorMessage } from "./errors.ts";

/** Advisory lock key of the reaper (distinct from migrate's 7_411_001). */
export const REAPER_LOCK = 7_411_002;

export interface ReaperOptions {
  pool: pg.Pool;
  pipeline: string;
  /** A worker whose last heartbeat is older than this is dead. */
  timeoutMs: number;
  log: Logger;
  /** The calling worker's own id: never reaped by itself, whatever its clock says. */
  selfId?: string;
}

export interface ReapedWorker {
  id: string;
  hostname: string;
  pid: number;
  graphile_worker_ids: string[];
  silent_s: number;
  /** Jobs that were locked by the worker and are now free to run again. */
  jobs: string[];
}

export interface Reaper {
  /** One pass; returns the workers reaped by this call (none when another worker holds the lock). */
  reap(): Promise<ReapedWorker[]>;
  release(): Promise<void>;
}

/** A reaper bound to a pool; keeps one graphile-worker utils instance for its lifetime. */
export function createReaper(opts: ReaperOptions): Reaper {
  let utils: Promise<WorkerUtils> | undefined;
  const getUtils = () => (utils ??= makeWorkerUtils({ pgPool: opts.pool }));
  return {
    reap: async () => reapDeadWorkers(opts, await getUtils()),
    async release() {
      const u = utils;
      utils = undefined;
      await (await u?.catch(() => undefined))?.release();
    },
  };
}

async function reapDeadWorkers(opts: ReaperOptions, utils: WorkerUtils): Promise<ReapedWorker[]> {
  const client = await opts.pool.connect();
  try {
    await client.query("begin");
    const lock = await client.query<{ ok: boolean }>("select pg_try_advisory_xact_lock($1) as ok", [REAPER_LOCK]);
    if (!lock.rows[0].ok) {
      await client.query("rollback");
      return [];
    }
    const dead = (await client.query<Omit<ReapedWorker, "jobs">>(
      `select id, hostname, pid, graphile_worker_ids, extract(epoch from now() - last_heartbeat_at)::float8 as silent_s
         from apfa.workers
        where pipeline = $1 and stopped_at is null and reaped_at is null and id <> $3
          and last_heartbeat_at < now() - make_interval(secs => $2)
        for update`,
      [opts.pipeline, opts.timeoutMs / 1000, opts.selfId ?? ""],
    )).rows;
    const reaped: ReapedWorker[] = [];
    for (const w of dead) {
      const locked = await client.query<{ id: string }>(
        "select id::text from graphile_worker._private_jobs where locked_by = any($1::text[]) order by id",
        [w.graphile_worker_ids],
      );
      // forceUnlockWorkers runs on its own connection; a failure rolls our marks back, so the next pass retries.
      if (w.graphile_worker_ids.length) await utils.forceUnlockWorkers(w.graphile_worker_ids);
      await client.query("update apfa.workers set reaped_at = now() where id = $1", [w.id]);
      reaped.push({ ...w, jobs: locked.rows.map((r) => r.id) });
    }
    await client.query("commit");
    for (const w of reaped) {
      opts.log.warn("reaped a dead worker: its jobs are released to live workers", {
        dead_worker: w.id, hostname: w.hostname, pid: w.pid, silent_s: Math.round(w.silent_s), jobs: w.jobs,
      });
    }
    return reaped;
  } catch (err) {
    await client.query("rollback").catch(() => {});
    opts.log.warn("reaper pass failed; retrying at the next heartbeat", { error: errorMessage(err) });
    return [];
  } finally {
    client.release();
  }
}
