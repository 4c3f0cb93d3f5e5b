/**
 * The previous version as the base of an incremental run. A version built by this runtime carries everything
 * reuse needs in its own files (see `Manifest.reuse`): `rows.jsonl` (id, SHA-256 of the embedded text, SHA-256 of
 * the served document line, one row per line), `docs.jsonl` in the same order, and the raw vector matrix inside the
 * engine's file (flat) or in `vectors.npy` (other engines). Postgres only names the version; the object store
 * holds the vectors.
 *
 * `planBase` decides whether the latest version can be a base (same pipeline, same embedder identity, every file
 * matching its checksum) and says why not; `readBase` loads the rows, documents and vectors for the build,
 * checking each file against the manifest again.
 * @module
 */
import * as crypto from "node:crypto";
import type { Store } from "../contracts.ts";
import { ApfaError, errorMessage } from "../errors.ts";
import { layout } from "../keys.ts";
import { engineFileNames, sha256, readLatest, readManifest, type Manifest } from "../versions.ts";

/** What the planner needs of the base: one entry per row, by id. */
export interface BaseRows {
  version: string;
  manifest: Manifest;
  /** Characters of a text that were embedded (the embedder's maxChars when the base was built). */
  maxChars: number;
  ids: string[];
  textHashes: string[];
  docHashes: string[];
  byId: Map<string, number>;
}

/** What the build needs of the base: its rows plus each row's document line and vector. */
export interface BaseData extends BaseRows {
  dims: number;
  /** Row i's document line, without its newline (views into docs.jsonl). */
  docLines: Uint8Array[];
  vectors: Float32Array;
  /** The engine's own files (for `IndexEngine.update`), when asked for. */
  engineFiles?: Record<string, Uint8Array>;
}

export type BasePlan = { base: BaseRows; reason: string } | { base: undefined; reason: string };

async function verified(store: Store, m: Manifest, file: string): Promise<Uint8Array> {
  const expect = m.files[file];
  if (!expect) throw new Error(`the manifest lists no ${file}`);
  const bytes = await store.get(layout.indexFile(m.version, file));
  if (bytes.byteLength !== expect.bytes || sha256(bytes) !== expect.sha256) {
    throw new Error(`${file} fails its checksum (${bytes.byteLength} bytes, manifest says ${expect.bytes})`);
  }
  return bytes;
}

function parseRows(bytes: Uint8Array, m: Manifest): Omit<BaseRows, "version" | "manifest" | "maxChars"> {
  const ids: string[] = [];
  const textHashes: string[] = [];
  const docHashes: string[] = [];
  const byId = new Map<string, number>();
  const text = new TextDecoder().decode(bytes);
  let start = 0;
  while (start < text.length) {
    const end = text.indexOf("\n", start);
    const line = text.slice(start, end < 0 ? text.length : end);
    start = end < 0 ? text.length : end + 1;
    if (!line) continue;
    const [id, th, dh] = JSON.parse(line) as [string, string, string];
    byId.set(id, ids.length);
    ids.push(id);
    textHashes.push(th);
    docHashes.push(dh);
  }
  if (ids.length !== m.count) throw new Error(`rows file has ${ids.length} rows, the manifest says ${m.count}`);
  return { ids, textHashes, docHashes, byId };
}

/**
 * The base for a run that embeds with `embedderKey`: the latest version, when every file it needs is intact.
 * `full` (apfa run --full) asks for no base; `version` names the base instead of `latest` (null: none). The
 * reason is logged and stored on the run either way.
 */
export async function planBase(store: Store, opts: { pipeline: string; embedderKey: string; full: boolean; version?: string | null }): Promise<BasePlan> {
  if (opts.full) return { base: undefined, reason: "full run requested" };
  if (opts.version === null) return { base: undefined, reason: "no base version" };
  const latest = opts.version ? { version: opts.version } : await readLatest(store).catch((err) => {
    if (outage(err)) throw err;
    return { error: errorMessage(err) };
  });
  if (!latest) return { base: undefined, reason: "no previous version" };
  if ("error" in latest) return { base: undefined, reason: `the latest pointer is unreadable: ${latest.error}` };
  try {
    const m = await readManifest(store, latest.version);
    if (m.pipeline !== opts.pipeline) return { base: undefined, reason: `latest version ${m.version.slice(0, 12)} belongs to pipeline ${m.pipeline}` };
    if (!m.reuse) return { base: undefined, reason: `latest version ${m.version.slice(0, 12)} predates incremental runs (no rows file)` };
    if (m.reuse.embedder_key !== opts.embedderKey) return { base: undefined, reason: "the embedder or an option that changes its vectors changed" };
    // Every file the build will copy from must be intact now, or this run plans reuse it cannot deliver.
    for (const f of new Set([m.reuse.vectors.file, "docs.jsonl"])) await verifyStream(store, m, f);
    const rows = parseRows(await verified(store, m, m.reuse.rows), m);
    return { base: { version: m.version, manifest: m, maxChars: m.reuse.max_chars, ...rows }, reason: `built from ${m.version}` };
  } catch (err) {
    // A store that is down says nothing about the base: the job retries rather than re-embed everything.
    if (outage(err)) throw err;
    return { base: undefined, reason: `latest version ${latest.version.slice(0, 12)} is unusable as a base (${errorMessage(err)}); embedding everything` };
  }
}

/**
 * A store or database failure that says nothing about the base (down, full, access refused): the job retries.
 * Missing files and bad content are damage, and mean a full run.
 */
function outage(err: unknown): boolean {
  return err instanceof ApfaError && ["store", "access_denied", "database", "timeout"].includes(err.code);
}

async function verifyStream(store: Store, m: Manifest, file: string): Promise<void> {
  const expect = m.files[file];
  if (!expect) throw new Error(`the manifest lists no ${file}`);
  const h = crypto.createHash("sha256");
  let n = 0;
  for await (const chunk of await store.getStream(layout.indexFile(m.version, file))) {
    h.update(chunk);
    n += chunk.byteLength;
  }
  if (n !== expect.bytes || h.digest("hex") !== expect.sha256) throw new Error(`${file} fails its checksum (${n} bytes, manifest says ${expect.bytes})`);
}

/**
 * Loads and checks everything the build copies from the base. A damaged file is an `index` error naming it
 * (the run fails, and the next run's plan finds the same damage and embeds everything); store errors pass on.
 */
export async function readBase(store: Store, m: Manifest, opts: { engineFiles?: boolean } = {}): Promise<BaseData> {
  try {
    const base = await loadBase(store, m);
    if (opts.engineFiles) {
      base.engineFiles = {};
      for (const f of engineFileNames(m)) base.engineFiles[f] = await verified(store, m, f);
    }
    return base;
  } catch (err) {
    if (err instanceof ApfaError) throw err;
    throw new ApfaError("index", `base version ${m.version}: ${errorMessage(err)}`, { cause: err });
  }
}

async function loadBase(store: Store, m: Manifest): Promise<BaseData> {
  if (!m.reuse) throw new Error(`version ${m.version} has no rows file`);
  const rows = parseRows(await verified(store, m, m.reuse.rows), m);
  const docs = await verified(store, m, "docs.jsonl");
  const docLines: Uint8Array[] = [];
  for (let start = 0; start < docs.byteLength;) {
    let end = docs.indexOf(0x0a, start);
    if (end < 0) end = docs.byteLength;
    docLines.push(docs.subarray(start, end));
    start = end + 1;
  }
  if (docLines.length !== m.count) throw new Error(`docs.jsonl has ${docLines.length} lines, the manifest says ${m.count}`);
  const raw = await verified(store, m, m.reuse.vectors.file);
  const floats = m.count * m.dims;
  const off = m.reuse.vectors.offset;
  if (raw.byteLength < off + floats * 4) throw new Error(`${m.reuse.vectors.file} is shorter than ${m.count}×${m.dims} vectors`);
  // One copy into an aligned buffer (the flat file's matrix starts at byte 45).
  const vectors = new Float32Array(floats);
  new Uint8Array(vectors.buffer).set(raw.subarray(off, off + floats * 4));
  return { version: m.version, manifest: m, maxChars: m.reuse.max_chars, dims: m.dims, docLines, vectors, ...rows };
}
