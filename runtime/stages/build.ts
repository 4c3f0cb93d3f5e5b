/**
 * Stage 3: build a version from the base's carried rows plus the newly embedded batch parts. Rows are put in
 * canonical order (by id, UTF-16 code-unit order), so a corpus gives the same rows, the same `docs.jsonl` and,
 * for `flat`, the same file and version hash whether it was built incrementally or from scratch. Carried rows
 * are copied from the base's vector matrix; only new batches are read. No database, no store.
 * @module
 */
import * as crypto from "node:crypto";
import type { IndexArtifact, IndexEngine } from "../contracts.ts";
import { ApfaError } from "../errors.ts";
import { encodeNpy } from "../npy.ts";
import { buildLexical, LEXICAL_FILE } from "../lexical.ts";
import { loadPlugin } from "../plugins.ts";
import { silentLogger } from "../log.ts";
import { concatBytes } from "../streams.ts";
import { ROWS_FILE, sha256, VECTORS_FILE, type Manifest } from "../versions.ts";
import type { BaseData } from "./base.ts";
import { textHash, type ReuseEntry } from "./enumerate.ts";
import { digest } from "./identity.ts";

/** One embedded batch as the build reads it back. */
export interface NewPart {
  n: number;
  /** `.docs.jsonl` bytes: one document line per vector row. */
  docs: Uint8Array;
  vectors: Float32Array;
  rows: number;
  dims: number;
  modelId: string;
  maxChars: number;
}

export interface BuildInput {
  pipeline: string;
  runId: string | null;
  engine: IndexEngine;
  engineName: string;
  engineKey: string;
  embedderKey: string;
  /** The source settings and the cursor their read ended at, for the next run's changes read. */
  source?: { key: string; cursor?: string };
  parts: NewPart[];
  base?: BaseData;
  reuse: ReuseEntry[];
  /** Told how many vectors the engine has inserted so far, when the engine reports it. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Logged vectors of real queries (n × dims, embedded by this run's embedder), which an approximate engine's
   * recall check measures with besides corpus rows; the task adapter loads them (a stage reads no database).
   * Ignored unless their width is the version's.
   */
  queries?: Float32Array;
  /** Told when the engine missed its recall target and the version is served with exact search instead. */
  warn?: (message: string, fields: Record<string, unknown>) => void;
  /** Versions with more documents get no lexical index (`server.retrieval.lexical_max_docs`; 0 = none ever); unset = always. */
  lexicalMaxDocs?: number;
}

/** Whether a version of `count` documents carries a lexical index under `lexical_max_docs` (unset = always). */
export const wantsLexical = (count: number, max?: number): boolean => max === undefined || (max > 0 && count <= max);

export interface BuiltVersion {
  manifest: Manifest;
  files: Record<string, Uint8Array>;
  assembleMs: number;
  engineMs: number;
  /** Building `lexical.json` (the BM25 index of hybrid retrieval) from the documents; 0 when it was not built. */
  lexicalMs: number;
}

const enc = new TextEncoder();
const fail = (msg: string) => new ApfaError("index", msg, { where: "build" });

/**
 * True when the run changes nothing the base serves: no new vectors, every base row carried (entries name
 * distinct rows, one per id, so the count says all) with its document line unchanged, and the same engine
 * settings. The base version is then the result, as it is, whatever order the source yielded it in. A base
 * without the lexical index it should carry (built before versions had one, or under a lower
 * `lexical_max_docs`) is built again, so hybrid retrieval finds one.
 */
export function unchangedBase(base: Manifest, reuse: ReuseEntry[], newParts: number, engineKey: string, lexicalMaxDocs?: number): boolean {
  return newParts === 0 && base.reuse?.engine_key === engineKey && (base.files[LEXICAL_FILE] !== undefined || !wantsLexical(base.count, lexicalMaxDocs)) &&
    reuse.length === base.count && reuse.every((e) => e.doc === undefined);
}

export async function buildVersion(input: BuildInput): Promise<BuiltVersion> {
  const t0 = performance.now();
  const { base, parts } = input;
  const first = parts[0];
  const dims = first?.dims ?? base?.dims ?? 0;
  const modelId = first?.modelId ?? base?.manifest.model_id ?? "";
  const maxChars = first?.maxChars ?? base?.maxChars ?? 0;
  for (const p of parts) {
    if (p.dims !== dims || p.modelId !== modelId || p.maxChars !== maxChars) {
      throw fail(`batch ${p.n} was embedded by ${p.modelId} (${p.dims} dims, max_chars ${p.maxChars}), batch ${first.n} by ${modelId} (${dims} dims, max_chars ${maxChars})`);
    }
  }
  if (base && parts.length && base.dims !== dims) throw fail(`new batches have ${dims} dims, the base version ${base.dims}`);
  if (dims === 0) throw fail("no vectors to index");

  // Every row of the next version: where its document line and vector come from.
  // `prev`: the base row whose vector this row keeps, -1 for a new vector.
  type Row = { id: string; line: Uint8Array; src: Float32Array; at: number; th: string; dh: string; prev: number };
  const rows: Row[] = [];
  for (const e of input.reuse) {
    if (!base) throw fail("a reuse list without a base version");
    const line = e.doc === undefined ? base.docLines[e.row] : enc.encode(e.doc);
    rows.push({ id: base.ids[e.row], line, src: base.vectors, at: e.row * dims, th: base.textHashes[e.row], dh: e.doc === undefined ? base.docHashes[e.row] : digest(line), prev: e.row });
  }
  for (const p of parts) {
    let start = 0;
    for (let i = 0; i < p.rows; i++) {
      let end = p.docs.indexOf(0x0a, start);
      if (end < 0) end = p.docs.byteLength;
      const line = p.docs.subarray(start, end);
      start = end + 1;
      const doc = JSON.parse(new TextDecoder().decode(line)) as { id: string; text: string };
      rows.push({ id: doc.id, line, src: p.vectors, at: i * dims, th: textHash(doc.text, p.maxChars), dh: digest(line), prev: -1 });
    }
  }
  rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (let i = 1; i < rows.length; i++) if (rows[i].id === rows[i - 1].id) throw fail(`document id ${JSON.stringify(rows[i].id)} appears twice`);
  if (!rows.length) throw fail("no vectors to index");

  const vectors = new Float32Array(rows.length * dims);
  const lines: Uint8Array[] = [];
  const nl = enc.encode("\n");
  rows.forEach((r, i) => {
    vectors.set(r.src.subarray(r.at, r.at + dims), i * dims);
    lines.push(r.line, nl);
  });
  const docs = concatBytes(lines);
  const rowsFile = enc.encode(rows.map((r) => JSON.stringify([r.id, r.th, r.dh])).join("\n") + "\n");
  const assembleMs = performance.now() - t0;

  const t1 = performance.now();
  // An engine that can change the base's index (hnsw adds and removes on a copy of its graph) does; else a build.
  const queries = input.queries?.length && input.queries.length % dims === 0 ? input.queries : undefined;
  const extra = queries ? { queries } : {};
  const prev = base?.engineFiles && input.engine.update
    ? await input.engine.update({ files: base.engineFiles, count: base.manifest.count, dims }, { vectors, dims, prevRow: Int32Array.from(rows, (r) => r.prev), ...extra, onProgress: input.onProgress })
    : undefined;
  let artifact: IndexArtifact = prev ?? (await input.engine.build(vectors, dims, { ...extra, onProgress: input.onProgress }));
  let engineName = input.engineName;
  let metric = input.engine.metric;
  const recall: Manifest["recall"] = artifact.recall && { ...artifact.recall, engine: input.engineName };
  if (artifact.fallback === "exact" && recall) {
    // The engine could not reach its recall target and the pipeline chose exact answers over worse ones.
    const flat = await loadPlugin("index", "flat", "/");
    const exact = (await flat.create(flat.options.parse({}), { baseDir: "/", log: silentLogger, env: {} })) as IndexEngine;
    artifact = await exact.build(vectors, dims);
    engineName = "flat";
    metric = exact.metric;
    recall.fallback = "flat";
    input.warn?.(`${input.engineName} reached recall@${recall.k} ${recall.measured.toFixed(3)} < target ${recall.target}; this version is served with exact search (flat)`, { params: recall.params, sample: recall.sample, ...(recall.queries ? { corpus: recall.corpus, queries: recall.queries } : {}) });
  }
  const engineMs = performance.now() - t1;
  // Rebuilt from the documents every time, incremental runs too: at 100k documents it costs seconds
  // (docs/index-engines.md), far less than the embedding an incremental run saves. Past lexical_max_docs it
  // is left out (hybrid requests then answer with vectors only), and so is one too large to serialise.
  const t2 = performance.now();
  const files: Record<string, Uint8Array> = { ...artifact.files, "docs.jsonl": docs, [ROWS_FILE]: rowsFile };
  if (!wantsLexical(rows.length, input.lexicalMaxDocs)) {
    input.warn?.(`no lexical index for this version: ${rows.length} documents > server.retrieval.lexical_max_docs ${input.lexicalMaxDocs}; hybrid retrieval answers with vectors only`, { documents: rows.length });
  } else {
    try {
      files[LEXICAL_FILE] = buildLexical(docs);
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      input.warn?.(`no lexical index for this version: ${err.message}; lower server.retrieval.lexical_max_docs below ${rows.length} to skip it without trying; hybrid retrieval answers with vectors only`, { documents: rows.length });
    }
  }
  const lexicalMs = files[LEXICAL_FILE] ? performance.now() - t2 : 0;
  let where = artifact.vectors;
  if (!where) {
    const [header] = encodeNpy(vectors, rows.length, dims);
    files[VECTORS_FILE] = concatBytes(encodeNpy(vectors, rows.length, dims));
    where = { file: VECTORS_FILE, offset: header.byteLength };
  }
  const version = crypto.createHash("sha256").update(files[artifact.main]).update(docs).digest("hex");
  const manifest: Manifest = {
    version,
    pipeline: input.pipeline,
    engine: engineName,
    metric,
    dims,
    count: rows.length,
    model_id: modelId,
    run_id: input.runId,
    created_at: new Date().toISOString(),
    main: artifact.main,
    files: Object.fromEntries(Object.entries(files).map(([name, b]) => [name, { bytes: b.byteLength, sha256: sha256(b) }])),
    reuse: {
      embedder_key: input.embedderKey, max_chars: maxChars, engine_key: input.engineKey, vectors: where, rows: ROWS_FILE,
      source_key: input.source?.key, source_cursor: input.source?.cursor,
    },
    built_from: base?.version ?? null,
    index_build: prev ? "update" : "full",
    ...(recall ? { recall } : {}),
  };
  return { manifest, files, assembleMs, engineMs, lexicalMs };
}
