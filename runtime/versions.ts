/**
 * Index versions in the store: `indexes/<version>/` holds the engine's files, `docs.jsonl` (one document per
 * row, in row order) and `manifest.json`; `indexes/latest` names the current version. Publishing writes the
 * pointer in one atomic put, records the version in `apfa.index_versions`, then announces it on the notifier.
 * @module
 */
import * as crypto from "node:crypto";
import type { IndexRecall, Store, SwapEvent } from "./contracts.ts";
import { ApfaError, errorMessage } from "./errors.ts";
import { layout } from "./keys.ts";
import { LEXICAL_FILE } from "./lexical.ts";
import type { Pipeline } from "./pipeline.ts";

export interface Manifest {
  version: string;
  pipeline: string;
  engine: string;
  metric: string;
  dims: number;
  count: number;
  model_id: string;
  run_id: string | null;
  created_at: string;
  /** The engine's main file (its SHA-256, with the documents', names the version). */
  main: string;
  /** Every file of the version with its size and SHA-256. */
  files: Record<string, { bytes: number; sha256: string }>;
  /**
   * What later runs need to reuse this version's vectors (absent on versions built before incremental runs):
   * the embedder identity the vectors belong to, where the raw f32 matrix sits, and `rows.jsonl`, one
   * `[id, text_sha256, doc_sha256]` per row in row order (rows are sorted by id).
   */
  reuse?: {
    embedder_key: string;
    max_chars: number;
    engine_key: string;
    vectors: { file: string; offset: number };
    rows: string;
    /** The source settings the rows were read with, and where that read ended (`Source.cursor`), if it can tell. */
    source_key?: string;
    source_cursor?: string;
  };
  /** The version this one was built from (its unchanged rows were copied), or null for a full build. */
  built_from?: string | null;
  /** `update`: the engine changed the base's index (IndexEngine.update); `full`: built from all vectors. */
  index_build?: "full" | "update";
  /**
   * Recall@k the configured approximate engine measured at build time against exact search (absent for exact
   * engines and older versions). `engine` is the one measured; `fallback: "flat"` means it missed its target and
   * this version is served with exact search instead.
   */
  recall?: IndexRecall & { engine: string; fallback?: "flat" };
}

/** True when a version's measured recall is under its target and it is not served exactly instead. */
export function recallMissed(m: Manifest): boolean {
  return Boolean(m.recall && !m.recall.met && !m.recall.fallback);
}

export interface LatestPointer {
  version: string;
  published_at: string;
}

const VERSION = /^[0-9a-f]{64}$/;

/** Throws `invalid_input` unless `v` looks like a version (64 hex characters). */
export function assertVersion(v: string): string {
  if (!VERSION.test(v)) throw new ApfaError("invalid_input", `invalid index version ${JSON.stringify(v)}: expected 64 hex characters`, { status: 400 });
  return v;
}

export function sha256(bytes: Uint8Array): string {
  return crypto.createHash("sha256").update(bytes).digest("hex");
}

/** Writes a version's files and manifest, then publishes it. */
export async function writeVersion(p: Pipeline, manifest: Manifest, files: Record<string, Uint8Array>): Promise<void> {
  for (const [name, bytes] of Object.entries(files)) {
    manifest.files[name] ??= { bytes: bytes.byteLength, sha256: sha256(bytes) };
    await p.store.put(layout.indexFile(manifest.version, name), bytes);
  }
  await p.store.put(layout.indexFile(manifest.version, "manifest.json"), new TextEncoder().encode(JSON.stringify(manifest, null, 2)));
  const bytes = Object.values(manifest.files).reduce((a, f) => a + f.bytes, 0);
  await p.db.pool.query(
    `insert into apfa.index_versions (version, pipeline, run_id, engine, metric, dims, count, model_id, bytes, manifest)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     on conflict (version) do update set deleted_at = null, run_id = coalesce(excluded.run_id, apfa.index_versions.run_id)`,
    [manifest.version, manifest.pipeline, manifest.run_id, manifest.engine, manifest.metric, manifest.dims, manifest.count, manifest.model_id, bytes, JSON.stringify(manifest)],
  );
  await publishVersion(p, manifest);
}

/** Points `latest` at a version (already in the store) and announces it. Used by builds and rollbacks. */
export async function publishVersion(p: Pipeline, manifest: Manifest): Promise<void> {
  const r = manifest.recall;
  if (r && recallMissed(manifest) && (p.config.stages.index.options as { on_recall_miss?: string }).on_recall_miss !== "accept") {
    throw new ApfaError("index", `index version ${manifest.version.slice(0, 12)} measured recall@${r.k} ${r.measured.toFixed(3)}, under its target ${r.target}; ` +
      "it is not published unless stages.index.options.on_recall_miss is accept", { status: 409, where: "publish" });
  }
  const pointer: LatestPointer = { version: manifest.version, published_at: new Date().toISOString() };
  await p.store.put(layout.latest, new TextEncoder().encode(JSON.stringify(pointer)));
  await p.db.pool.query("update apfa.index_versions set published_at = now() where version = $1", [manifest.version]);
  const event: SwapEvent = { version: manifest.version, engine: manifest.engine, dims: manifest.dims, count: manifest.count, created_at: manifest.created_at };
  try {
    await (await p.notifier()).publish(event);
  } catch (err) {
    // The pointer is already moved; servers pick it up by their periodic check, so this is a warning.
    p.log.warn("swap event not published; servers will see the new version at their next check", { version: manifest.version, error: errorMessage(err) });
  }
}

/** The per-row reuse file and the vector copy the runtime adds for engines whose files lack the raw matrix. */
export const ROWS_FILE = "rows.jsonl";
export const VECTORS_FILE = "vectors.npy";

/** True for a file only later runs read (not the engine's, not the served documents). */
function runOnly(m: Manifest, name: string): boolean {
  return name === m.reuse?.rows || (name === VECTORS_FILE && m.reuse?.vectors.file === VECTORS_FILE);
}

/** The files a server needs to serve a version: all but those only later runs read. */
export function servingFiles(m: Manifest): Array<[string, { bytes: number; sha256: string }]> {
  return Object.entries(m.files).filter(([name]) => !runOnly(m, name));
}

/** The engine's own files of a version (what `IndexEngine.update` changes). */
export function engineFileNames(m: Manifest): string[] {
  return Object.keys(m.files).filter((name) => name !== "docs.jsonl" && name !== LEXICAL_FILE && !runOnly(m, name));
}

export async function readLatest(store: Store): Promise<LatestPointer | undefined> {
  if (!(await store.stat(layout.latest))) return undefined;
  const ptr = JSON.parse(new TextDecoder().decode(await store.get(layout.latest))) as LatestPointer;
  assertVersion(ptr.version);
  return ptr;
}

export async function readManifest(store: Store, version: string): Promise<Manifest> {
  const bytes = await store.get(layout.indexFile(assertVersion(version), "manifest.json"));
  return JSON.parse(new TextDecoder().decode(bytes)) as Manifest;
}
