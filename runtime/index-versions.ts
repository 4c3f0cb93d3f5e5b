/**
 * The pipeline's index versions, and rollback: re-publishing a version that is still in the store, so every
 * server hot-swaps to it exactly as after a build. Shared by `apfa index` and the dashboard's `/api`. A
 * rollback refuses versions it cannot vouch for — unknown to `apfa.index_versions`, deleted by cleanup, of
 * another pipeline, or with files missing from the store — so it never points servers at nothing.
 * @module
 */
import type pg from "pg";
import type { Store } from "./contracts.ts";
import { ApfaError, isApfaError } from "./errors.ts";
import { layout } from "./keys.ts";
import type { Pipeline } from "./pipeline.ts";
import { assertVersion, publishVersion, readLatest, readManifest, type Manifest } from "./versions.ts";

export interface VersionInfo {
  version: string;
  run_id: string | null;
  engine: string;
  metric: string;
  dims: number;
  count: number;
  model_id: string;
  bytes: number;
  created_at: Date;
  published_at: Date | null;
  deleted_at: Date | null;
  /** `indexes/latest` names this version. */
  current: boolean;
  /** The build's recall check (approximate engines; null for exact ones and older versions). */
  recall: Manifest["recall"] | null;
}

/** The pipeline's index versions, newest first, with the one `indexes/latest` names marked `current`. */
export async function listVersions(db: Pick<pg.Pool, "query">, store: Store, pipeline: string, limit = 100): Promise<{ current: string | null; versions: VersionInfo[] }> {
  const latest = await readLatest(store).catch(() => undefined);
  const current = latest?.version ?? null;
  const r = await db.query<Omit<VersionInfo, "current">>(
    `select version, run_id, engine, metric, dims, count::float8 as count, model_id, bytes::float8 as bytes, created_at, published_at, deleted_at,
            manifest->'recall' as recall
       from apfa.index_versions where pipeline = $1 order by created_at desc, version limit $2`,
    [pipeline, limit],
  );
  return { current, versions: r.rows.map((v) => ({ ...v, current: v.version === current })) };
}

export type RollbackRefusal = "unknown_version" | "deleted_version" | "other_pipeline" | "incomplete_version";

/** A rollback that was refused; `reason` is stable for scripts and the HTTP API (404 unknown, else 409). */
export class RollbackError extends ApfaError {
  readonly reason: RollbackRefusal;
  constructor(reason: RollbackRefusal, message: string) {
    super(reason === "unknown_version" ? "not_found" : "invalid_input", message, { status: reason === "unknown_version" ? 404 : 409, where: "rollback" });
    this.reason = reason;
  }
}

export interface RollbackResult {
  version: string;
  /** The version `latest` named before (null when there was none). */
  previous: string | null;
  count: number;
  engine: string;
}

/** Points `latest` back at an existing version and announces it (see the module comment for what is refused). */
export async function rollbackVersion(p: Pipeline, version: string): Promise<RollbackResult> {
  assertVersion(version);
  const hint = "`apfa index list` shows the versions you can roll back to";
  const row = (await p.db.pool.query<{ pipeline: string; deleted_at: Date | null }>(
    "select pipeline, deleted_at from apfa.index_versions where version = $1",
    [version],
  )).rows[0];
  if (!row) throw new RollbackError("unknown_version", `index version ${version} is not in apfa.index_versions; ${hint}`);
  if (row.pipeline !== p.config.name) {
    throw new RollbackError("other_pipeline", `index version ${version} belongs to pipeline "${row.pipeline}", not "${p.config.name}"; ${hint}`);
  }
  if (row.deleted_at) {
    throw new RollbackError("deleted_version", `index version ${version} was deleted at ${row.deleted_at.toISOString()} and its files are gone; ${hint}`);
  }
  let manifest: Manifest;
  try {
    manifest = await readManifest(p.store, version);
  } catch (err) {
    if (!isApfaError(err, "not_found")) throw err;
    throw new RollbackError("incomplete_version", `index version ${version} has no manifest.json in the store (${p.store.describe()}); ${hint}`);
  }
  const missing: string[] = [];
  for (const [name, f] of Object.entries(manifest.files)) {
    const st = await p.store.stat(layout.indexFile(version, name));
    if (!st || st.size !== f.bytes) missing.push(st ? `${name} (size ${st.size}, expected ${f.bytes})` : name);
  }
  if (manifest.version !== version || missing.length) {
    const what = manifest.version !== version ? `its manifest names version ${manifest.version}` : `files missing or truncated in the store: ${missing.join(", ")}`;
    throw new RollbackError("incomplete_version", `index version ${version} cannot be served: ${what}; ${hint}`);
  }
  const previous = (await readLatest(p.store).catch(() => undefined))?.version ?? null;
  await publishVersion(p, manifest);
  p.log.info("index rolled back", { version, previous });
  return { version, previous, count: manifest.count, engine: manifest.engine };
}
