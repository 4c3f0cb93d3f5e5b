/**
 * `cleanup` (maintenance queue, daily by default): deletes batch artifacts (`batches/<run>/`) and index
 * versions (`indexes/<version>/`, marking `apfa.index_versions.deleted_at`) older than `retention_days`, and
 * prunes `apfa.job_history`, `apfa.index_stats` (the newest stats row of the pipeline stays) and the sampled query
 * vectors of `apfa.query_samples` the same way (the server also trims those to `server.query_samples.keep`).
 *
 * Never deleted, whatever their age: the current version (the one `indexes/latest` names), the `keep_versions`
 * most recently published others (rollback targets), the batches of the runs those versions were built from
 * (index_versions.run_id → batches: a rollback target can be rebuilt), and everything of a run still active.
 * Version directories the database does not know are only removed while no build is running, since a build
 * writes its files before it records its row. Payload `{dry_run: true}` reports without deleting.
 * @module
 */
import type { JobHelpers } from "graphile-worker";
import { errorMessage } from "../errors.ts";
import type { Pipeline } from "../pipeline.ts";
import { ACTIVE_STATUSES } from "../runs.ts";
import { readLatest, readManifest } from "../versions.ts";

export interface CleanupPayload {
  /** List what would be deleted, delete nothing. */
  dry_run?: boolean;
  /** Overrides `retention_days` of pipeline.yaml for this job. */
  retention_days?: number;
  /** Overrides `keep_versions` of pipeline.yaml for this job. */
  keep_versions?: number;
}

export interface CleanupTarget {
  /** Version or run id. */
  id: string;
  keys: string[];
  bytes: number;
  why: string;
}

export interface CleanupReport {
  dry_run: boolean;
  cutoff: string;
  current: string | null;
  /** Versions kept whatever their age (current + previous `keep_versions` + builds in progress). */
  protected_versions: string[];
  /** Runs whose batches are kept whatever their age (lineage of protected versions + active runs). */
  protected_runs: string[];
  versions: CleanupTarget[];
  batches: CleanupTarget[];
  job_history_rows: number;
  index_stats_rows: number;
  /** Sampled query vectors (apfa.query_samples) older than the cutoff. */
  query_sample_rows: number;
  keys_deleted: number;
  bytes_deleted: number;
}

const VERSION_DIR = /^indexes\/([0-9a-f]{64})\//;
const BATCH_DIR = /^batches\/([^/]+)\//;

/** Groups the store's keys under `prefix` by their second path segment. */
async function groupKeys(p: Pipeline, prefix: string, re: RegExp): Promise<Map<string, { keys: string[]; bytes: number; newest: number }>> {
  const out = new Map<string, { keys: string[]; bytes: number; newest: number }>();
  for await (const st of p.store.list(prefix)) {
    const id = re.exec(st.key)?.[1];
    if (!id) continue;
    const g = out.get(id) ?? { keys: [], bytes: 0, newest: 0 };
    g.keys.push(st.key);
    g.bytes += st.size;
    g.newest = Math.max(g.newest, st.mtime.getTime());
    out.set(id, g);
  }
  return out;
}

/** Decides what cleanup would delete; deletes nothing. */
export async function planCleanup(p: Pipeline, payload: CleanupPayload = {}): Promise<CleanupReport> {
  const days = payload.retention_days ?? p.config.retention_days;
  const keep = payload.keep_versions ?? p.config.keep_versions;
  if (!(days >= 0) || !Number.isInteger(keep) || keep < 0) {
    throw new Error(`[apfa] [task:cleanup] retention_days must be >= 0 and keep_versions an integer >= 0 (got ${days}, ${keep})`);
  }
  const cutoff = new Date(Date.now() - days * 86_400_000);
  const db = p.db.pool;
  const name = p.config.name;

  // A corrupt `latest` aborts the job: without knowing the current version nothing is safe to delete.
  const current = (await readLatest(p.store))?.version ?? null;
  const known = (await db.query<{ version: string; pipeline: string; run_id: string | null; created_at: Date; published_at: Date | null; deleted_at: Date | null }>(
    "select version, pipeline, run_id, created_at, published_at, deleted_at from apfa.index_versions",
  )).rows;
  const mine = known.filter((v) => v.pipeline === name);
  const previous = mine
    .filter((v) => v.published_at && !v.deleted_at && v.version !== current)
    .sort((a, b) => b.published_at!.getTime() - a.published_at!.getTime())
    .slice(0, keep);
  const runs = (await db.query<{ id: string; pipeline: string; status: string; ended: Date }>(
    "select id, pipeline, status, coalesce(finished_at, created_at) as ended from apfa.runs",
  )).rows;
  const active = new Set(runs.filter((r) => (ACTIVE_STATUSES as string[]).includes(r.status)).map((r) => r.id));

  const protectedVersions = new Set<string>(previous.map((v) => v.version));
  if (current) protectedVersions.add(current);
  for (const v of mine) if (v.run_id && active.has(v.run_id)) protectedVersions.add(v.version);
  const protectedRuns = new Set<string>(active);
  for (const v of known) if (protectedVersions.has(v.version) && v.run_id) protectedRuns.add(v.run_id);
  if (current && !known.some((v) => v.version === current)) {
    const m = await readManifest(p.store, current).catch(() => undefined);
    if (m?.run_id) protectedRuns.add(m.run_id);
  }

  const versions: CleanupTarget[] = [];
  const byVersion = new Map(known.map((v) => [v.version, v]));
  const building = runs.some((r) => r.status === "building");
  for (const [version, g] of await groupKeys(p, "indexes/", VERSION_DIR)) {
    if (protectedVersions.has(version)) continue;
    const row = byVersion.get(version);
    if (row && row.pipeline !== name) continue;
    if (row ? row.created_at >= cutoff : g.newest >= cutoff.getTime() || building) continue;
    versions.push({ id: version, keys: g.keys, bytes: g.bytes, why: row ? `built ${row.created_at.toISOString()}` : "not recorded in apfa.index_versions" });
  }
  // Rows whose files are already gone still get their deleted_at.
  for (const v of mine) {
    if (!v.deleted_at && !protectedVersions.has(v.version) && v.created_at < cutoff && !versions.some((x) => x.id === v.version)) {
      versions.push({ id: v.version, keys: [], bytes: 0, why: "files already gone" });
    }
  }

  const batches: CleanupTarget[] = [];
  const byRun = new Map(runs.map((r) => [r.id, r]));
  for (const [run, g] of await groupKeys(p, "batches/", BATCH_DIR)) {
    if (protectedRuns.has(run)) continue;
    const row = byRun.get(run);
    if (row && row.pipeline !== name) continue;
    if (row ? row.ended >= cutoff : g.newest >= cutoff.getTime()) continue;
    batches.push({ id: run, keys: g.keys, bytes: g.bytes, why: row ? `run ${row.status}, ended ${row.ended.toISOString()}` : "run not recorded" });
  }

  const counts = (await db.query<{ history: number; stats: number; samples: number }>(
    `select (select count(*)::int from apfa.job_history where finished_at < $1) as history,
            (select count(*)::int from apfa.query_samples where at < $1) as samples,
            (select count(*)::int from apfa.index_stats s where computed_at < $1 and id <> (
               select id from apfa.index_stats l where l.pipeline = s.pipeline order by computed_at desc, id desc limit 1)) as stats`,
    [cutoff],
  )).rows[0];

  return {
    dry_run: true,
    cutoff: cutoff.toISOString(),
    current,
    protected_versions: [...protectedVersions],
    protected_runs: [...protectedRuns],
    versions,
    batches,
    job_history_rows: counts.history,
    index_stats_rows: counts.stats,
    query_sample_rows: counts.samples,
    keys_deleted: 0,
    bytes_deleted: 0,
  };
}

/** Plans, then (unless `dry_run`) deletes; returns what was (or would be) deleted. */
export async function runCleanup(p: Pipeline, payload: CleanupPayload = {}): Promise<CleanupReport> {
  const plan = await planCleanup(p, payload);
  if (payload.dry_run) return plan;
  const report: CleanupReport = { ...plan, dry_run: false };
  // A rollback between planning and deleting must not lose its target.
  const now = (await readLatest(p.store))?.version ?? null;
  if (now !== plan.current) throw new Error(`[apfa] [task:cleanup] indexes/latest moved from ${plan.current} to ${now} while cleaning up; the next run will retry`);
  for (const t of [...plan.versions, ...plan.batches]) {
    for (const key of t.keys) {
      await p.store.delete(key);
      report.keys_deleted++;
    }
    report.bytes_deleted += t.bytes;
  }
  const ids = plan.versions.map((v) => v.id);
  if (ids.length) await p.db.pool.query("update apfa.index_versions set deleted_at = now() where version = any($1) and deleted_at is null", [ids]);
  const h = await p.db.pool.query("delete from apfa.job_history where finished_at < $1", [plan.cutoff]);
  const s = await p.db.pool.query(
    `delete from apfa.index_stats s where computed_at < $1 and id <> (
       select id from apfa.index_stats l where l.pipeline = s.pipeline order by computed_at desc, id desc limit 1)`,
    [plan.cutoff],
  );
  const q = await p.db.pool.query("delete from apfa.query_samples where at < $1", [plan.cutoff]);
  report.job_history_rows = h.rowCount ?? 0;
  report.query_sample_rows = q.rowCount ?? 0;
  report.index_stats_rows = s.rowCount ?? 0;
  return report;
}

export function makeCleanup(p: Pipeline) {
  return async (raw: unknown, helpers: JobHelpers): Promise<void> => {
    const log = p.log.child({ task: "cleanup", job: helpers.job.id });
    try {
      const r = await runCleanup(p, (raw ?? {}) as CleanupPayload);
      log.info(r.dry_run ? "cleanup dry run: nothing deleted" : "cleanup done", {
        dry_run: r.dry_run,
        cutoff: r.cutoff,
        current: r.current,
        kept_versions: r.protected_versions,
        versions: r.versions.map((v) => ({ version: v.id, files: v.keys.length, bytes: v.bytes, why: v.why })),
        batches: r.batches.map((b) => ({ run: b.id, files: b.keys.length, bytes: b.bytes, why: b.why })),
        versions_deleted: r.versions.length,
        batch_dirs_deleted: r.batches.length,
        keys_deleted: r.keys_deleted,
        bytes_deleted: r.bytes_deleted,
        job_history_rows: r.job_history_rows,
        index_stats_rows: r.index_stats_rows,
        query_sample_rows: r.query_sample_rows,
      });
    } catch (err) {
      log.error("cleanup failed", { error: errorMessage(err) });
      throw err;
    }
  };
}
