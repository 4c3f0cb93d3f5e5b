/**
 * The six stage-plugin contracts. A plugin is one file `plugins/<kind>/<name>.ts` whose default export is
 * `definePlugin({ kind, name, options, create })`; `create` returns a plain object implementing the kind's
 * interface below. Users load their own plugins by path or package name from pipeline.yaml.
 * @module
 */
import type { z } from "zod";

/** The plugin kinds, in data-path order. */
export const PLUGIN_KINDS = ["source", "embedder", "index", "store", "notifier", "generator"] as const;
export type PluginKind = (typeof PLUGIN_KINDS)[number];

/** Minimal structured logger handed to every plugin. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** What `create` receives besides its own validated options. */
export interface PluginContext {
  /** Directory of the pipeline.yaml; relative paths in options resolve against it. */
  baseDir: string;
  log: Logger;
  /** The configured store, for plugins that read their input from it (e.g. a jsonl file in S3). */
  store?: Store;
  /** Environment variables (already interpolated into string options; given for plugins that read more). */
  env: Record<string, string | undefined>;
}

/**
 * A plugin definition. `options` validates the `options:` block of the stage in pipeline.yaml (and feeds
 * `apfa lint` and the JSON Schema); `create` builds the instance.
 */
export interface PluginDefinition<K extends PluginKind = PluginKind, O = unknown, I = PluginInstance<K>> {
  kind: K;
  name: string;
  /** One line shown by `apfa plan` and in error messages. */
  description: string;
  options: z.ZodType<O>;
  create(options: O, ctx: PluginContext): I | Promise<I>;
  /**
   * Embedders: the part of the validated options that, with the model, decides the vectors (model, dims,
   * `max_chars`…; not threads or timeouts). A run reuses stored vectors only when this, hashed with the plugin
   * name, is unchanged, so changing it in pipeline.yaml re-embeds everything. Default: every option.
   */
  identity?(options: O): unknown;
}

/** Identity helper that gives a plugin file full typing. */
export function definePlugin<K extends PluginKind, O, I extends PluginInstance<K> = PluginInstance<K>>(
  def: PluginDefinition<K, O, I>,
): PluginDefinition<K, O, I> {
  return def;
}

export type PluginInstance<K extends PluginKind> = K extends "source" ? Source
  : K extends "embedder" ? Embedder
  : K extends "index" ? IndexEngine
  : K extends "store" ? Store
  : K extends "notifier" ? Notifier
  : Generator;

// ---------------------------------------------------------------- source

/** One record as a source yields it. Fields are `unknown` on purpose: validation happens downstream so a
 * bad record is counted and skipped, never crashes the batch. */
export interface SourceRecord {
  id: unknown;
  text: unknown;
  metadata?: Record<string, unknown>;
  /** Where the record came from, e.g. `corpus.jsonl:17`, used in skip reports. */
  location?: string;
}

/** A record the source could not parse at all (malformed JSON line, bad CSV row). */
export interface SourceMalformed {
  malformed: string;
  /** `file:line` (or table/row) naming the bad input. */
  location: string;
}

export type SourceItem = SourceRecord | SourceMalformed;

export interface Source {
  /** Cheap total when the source knows it (row count, line count); undefined otherwise. */
  count?(): Promise<number | undefined>;
  /** Yields pages of at most `pageSize` items, in a stable order. */
  pages(opts: { pageSize: number; signal?: AbortSignal }): AsyncIterable<SourceItem[]>;
  /**
   * After `pages` or a `changes` read has been consumed: the position (a watermark, a table version) from which
   * `changes` can later report what changed since. Undefined when the source cannot tell.
   */
  cursor?(): string | undefined;
  /**
   * What may have changed since `cursor`, so an incremental run need not read every record: the result must be
   * the same as reading everything. Undefined when this source cannot tell from that cursor (the run then reads
   * everything and compares hashes).
   */
  changes?(cursor: string, opts: { pageSize: number; signal?: AbortSignal }): Promise<SourceChanges | undefined>;
  close?(): Promise<void>;
}

/** What a source reports as changed since a cursor. */
export interface SourceChanges {
  /** Every record added or updated after the cursor (unchanged ones may be among them). Read first. */
  pages: AsyncIterable<SourceItem[]>;
  /** The id of every record the source holds now (deletions are the base ids missing here). Read second. */
  ids(): AsyncIterable<unknown[]>;
  /** The records with these ids (ids the source holds that the run knows nothing of). Read last. */
  get(ids: string[]): Promise<SourceItem[]>;
}

export function isMalformed(item: SourceItem): item is SourceMalformed {
  return typeof (item as SourceMalformed).malformed === "string";
}

// ---------------------------------------------------------------- embedder

export interface Embedder {
  /** Stable model identifier recorded in manifests; a swap to an index with another modelId is refused. */
  modelId: string;
  dims: number;
  /** Longest input in characters the model sees; longer texts are truncated to it (and counted). */
  maxChars: number;
  /** Row-major `texts.length × dims`, each row L2-normalised. */
  embed(texts: string[]): Promise<Float32Array>;
  close?(): Promise<void>;
}

// ---------------------------------------------------------------- index engine

export type Metric = "ip";

/** Files an engine writes for one index version, by file name (no directories). */
export interface IndexArtifact {
  files: Record<string, Uint8Array>;
  /** The file whose SHA-256 names the version. */
  main: string;
  /**
   * Where the files already hold the input vectors as a little-endian f32 row-major matrix (`count × dims`
   * from byte `offset` of `file`), so later runs can reuse them. Absent: the runtime stores `vectors.npy` too.
   */
  vectors?: { file: string; offset: number };
  /** What an approximate engine measured of its own recall at build time (recorded in the manifest). */
  recall?: IndexRecall;
  /** `exact`: the engine missed its recall target and asks the runtime to serve these vectors with exact search. */
  fallback?: "exact";
}

/** Recall@k an approximate engine measured against exact search on a sample of its corpus (see plugins/index/_recall.ts). */
export interface IndexRecall {
  k: number;
  target: number;
  measured: number;
  /** Corpus rows measured (logged queries are counted in `queries.sample`). */
  sample: number;
  /**
   * How the queries were chosen: `held-out` = corpus rows left out of the index while it was measured (then
   * inserted); `leave-one-out` = corpus rows in the index, each excluded from its own answer; `+logged-queries`
   * = those and logged real queries, `measured` being the lower figure.
   */
  method: string;
  /** The search-time settings the version is served with. */
  params: Record<string, number>;
  /** Each setting tried, in order, with the recall it gave (the lower figure; each side's when queries were logged). */
  tried: Array<{ params: Record<string, number>; recall: number; corpus?: number; queries?: number }>;
  met: boolean;
  /** With logged queries: the corpus rows' own figure at the chosen settings. */
  corpus?: { sample: number; measured: number };
  /** With logged queries: their figure at the chosen settings (`measured` is the lower of this and `corpus`). */
  queries?: { sample: number; measured: number };
}

export interface SearchResult {
  /** Row numbers into the vectors the index was built from (-1 padding never returned). */
  rows: number[];
  scores: number[];
}

/** The rows a metadata filter lets through (runtime/filter.ts), as the server hands them to a searcher. */
export interface RowFilter {
  /** Passing rows, ascending. */
  rows: Uint32Array;
  /** True when `row` passes (constant time). */
  has(row: number): boolean;
}

export interface Searcher {
  count: number;
  dims: number;
  /** Bytes this searcher keeps resident (0 when memory-mapped). */
  memoryBytes: number;
  search(query: Float32Array, k: number): Promise<SearchResult>;
  /**
   * The best `k` rows among those `filter` lets through (fewer only when fewer pass). Exact engines must return
   * exactly the top k of the passing rows. Optional: without it `filteredSearch` (runtime/filtered-search.ts)
   * over-fetches through `search`, which is what approximate engines document as their filtered recall.
   */
  searchFiltered?(query: Float32Array, k: number, filter: RowFilter): Promise<SearchResult>;
  close(): Promise<void>;
}

/** What a build may hand an engine besides the vectors. */
export interface BuildOptions {
  /**
   * Logged vectors of real queries (n × dims, the same embedder; runtime/query-samples.ts), for an approximate
   * engine's recall check to measure with besides corpus rows. Empty or absent: corpus rows only.
   */
  queries?: Float32Array;
  /**
   * Told, now and then, how many of `total` vectors a build has inserted (the run's progress line shows it).
   * Optional for engines; one that builds again (a denser graph after a recall miss) counts from 0 again.
   */
  onProgress?(done: number, total: number): void;
}

export interface IndexEngine {
  metric: Metric;
  /** `vectors` is row-major count × dims, L2-normalised. */
  build(vectors: Float32Array, dims: number, opts?: BuildOptions): Promise<IndexArtifact>;
  /**
   * Builds the next version by changing the previous one, when that is cheaper than `build`: `vectors` is the
   * whole new matrix (canonical row order), `prevRow[r]` the previous version's row whose vector row `r` keeps,
   * or -1 for a new vector. The result must search the same rows as `build(vectors, dims)`. Returns undefined to
   * ask for a full build (too much changed, an old artifact). Engines without it always rebuild.
   */
  update?(prev: { files: Record<string, Uint8Array>; count: number; dims: number }, next: { vectors: Float32Array; dims: number; prevRow: Int32Array } & BuildOptions): Promise<IndexArtifact | undefined>;
  /** Opens an artifact previously written by `build` from a local directory holding its files. */
  open(dir: string, info: { dims: number; count: number }): Promise<Searcher>;
}

// ---------------------------------------------------------------- store

export interface StoreStat {
  key: string;
  size: number;
  mtime: Date;
}

/**
 * Object storage. Keys are `/`-separated relative paths (validated with `assertKey`). A `put` is atomic:
 * readers see the old object or the whole new one, never a partial write.
 */
export interface Store {
  put(key: string, data: Uint8Array | AsyncIterable<Uint8Array>): Promise<void>;
  /** Whole object; rejects with code `not_found` when missing. */
  get(key: string): Promise<Uint8Array>;
  /** Streaming read; rejects with code `not_found` when missing. */
  getStream(key: string): Promise<AsyncIterable<Uint8Array>>;
  /**
   * Optional: writes the object to the local file `dest` (which does not exist yet) without passing its bytes
   * through JavaScript, as a store whose objects are local files can (the fs store hard-links or clones them).
   * The server's index cache prefers it to `getStream` and checks the copy's checksum either way. Rejects with
   * code `not_found` when the key is missing.
   */
  copyToFile?(key: string, dest: string): Promise<void>;
  /** null when the key does not exist. */
  stat(key: string): Promise<StoreStat | null>;
  /** Every object whose key starts with `prefix`, in key order. */
  list(prefix: string): AsyncIterable<StoreStat>;
  /** Deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** A human-readable location for logs (never includes credentials). */
  describe(): string;
  /**
   * True when the store retries transient failures itself (the s3 store retries each multipart part, which
   * nothing outside it can do); otherwise the runtime wraps it in the one store retry policy
   * (`runtime/store-retry.ts`). Either way, a call is retried at exactly one level.
   */
  retriesItself?: boolean;
  close?(): Promise<void>;
}

// ---------------------------------------------------------------- notifier

/** Published on channel `apfa:index:swap` after a new version becomes `latest`. */
export interface SwapEvent {
  version: string;
  engine: string;
  dims: number;
  count: number;
  created_at: string;
}

export interface Notifier {
  publish(event: SwapEvent): Promise<void>;
  /** `onReconnect` fires after a dropped connection comes back, so subscribers can re-check `latest`. */
  subscribe(handler: (event: SwapEvent) => void, opts?: { onReconnect?: () => void }): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- generator

export interface RetrievedDoc {
  id: string;
  score: number;
  text: string;
  metadata: Record<string, unknown>;
}

export interface Advice {
  advice: string;
  /** Which generator actually produced the text (e.g. `template` when an LLM fell back). */
  generator: string;
  /** Set when the configured generator failed and a fallback answered. */
  fallback_reason?: string;
}

/** Constraints a question states (runtime/question.ts); the server passes what it extracted and filtered on. */
export interface StatedFacts {
  /** The person's credit score (300-850). */
  credit_score?: number;
  /** The amount they want to borrow, in dollars. */
  amount?: number;
  /** The repayment term they want, in months. */
  term_months?: number;
  /** The highest APR they accept, in percent. */
  max_apr?: number;
  /** What the loan is for, as a `category` of the sample corpus (`debt-consolidation`, `auto`…). */
  category?: string;
}

export interface Generator {
  /**
   * `facts`: the constraints the question states, when the server read them (generators may read the question
   * themselves when absent). Documents that fit them come first in `docs`.
   */
  generate(input: { query: string; docs: RetrievedDoc[]; facts?: StatedFacts; signal?: AbortSignal }): Promise<Advice>;
}
