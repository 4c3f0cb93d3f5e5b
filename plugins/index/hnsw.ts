/**
 * `hnsw` index engine: approximate inner-product search with a usearch HNSW graph.
 *
 * The artifact is `index.usearch`, usearch's own format (the f32 vectors, then the graph). `open` memory-maps
 * it (`Index.view`), so loading costs a few page-table entries rather than a read of the whole file, and the OS
 * page cache is shared between processes serving the same version.
 *
 * A full build keys each vector by its row. `update` loads a copy of the previous graph, removes the vectors the
 * new version drops, adds the new ones (under keys the removals freed, then fresh ones) and writes `keys.u32`,
 * each row's graph key, which `open` inverts. `hnsw.json` counts the removals since the last full build; past
 * `rebuild_after_removed` of the graph's size the next run rebuilds it, since removed nodes leave the graph
 * less connected.
 * @module
 */
import * as fsp from "node:fs/promises";
import { createRequire } from "node:module";
import * as path from "node:path";
import type * as Usearch from "usearch";
import { z } from "zod";
import { definePlugin, type BuildOptions, type IndexArtifact, type IndexEngine, type Searcher } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { checkVectors, withTemp } from "./_check.ts";
import { bisect, clears, heldOutProbe, holdOut, mean, narrowDown, queryProbe, recallProbe, servedSetting, type RecallProbe, type RecallReport } from "./_recall.ts";

export const NAME = "hnsw";

/** The file `build` writes and `open` maps. */
export const FILE = "index.usearch";
/** Row → graph key (u32 little-endian), written by `update`; absent means key = row. */
export const KEYS = "keys.u32";
/** `{ built_count, removed_since_build }`, written by `update`. */
export const META = "hnsw.json";

// usearch's ESM entry recurses forever looking for its native build; the CommonJS entry does not.
const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;

export interface HnswOptions {
  /** Graph edges per node (HNSW `M`): more raises recall and memory. @default 16 */
  connectivity: number;
  /** Candidates considered while inserting (`efConstruction`): more raises recall and build time. @default 128 */
  expansion_add: number;
  /**
   * Candidates considered per search (`ef`): more raises recall and search time. With the recall check on, where
   * it starts: it serves the least value that meets `target_recall`, below or above this one; raised above the
   * build's value later, this one wins where it is larger (no rebuild needed). @default 64
   */
  expansion_search: number;
  /**
   * Incremental runs change a copy of the previous graph until the vectors removed since its last full build
   * pass this fraction of its size; then they rebuild it. 0 always rebuilds. Measured on 20k×64 near-duplicate
   * vectors: recall@10 after updates stayed within ±0.01 of a fresh build up to 52 % removed, so the default
   * rebuilds at half. @default 0.5
   */
  rebuild_after_removed: number;
  /**
   * Recall@10 the version must reach, measured at build time against exact search on a sample of the corpus's
   * own rows, held out of the graph while it is measured, and, once the server has logged some, of real queries (the lower figure counts;
   * plugins/index/_recall.ts); `expansion_search` is doubled until it does, then narrowed to the least that
   * does by more than the sample's error (halved first when it meets it at once). 0 skips the check. @default 0.95
   */
  target_recall: number;
  /**
   * When `max_expansion_search` cannot reach `target_recall`: `fail` the build, serve the version with `exact`
   * search (the `flat` engine, with a warning), or `accept` the lower recall (recorded in the manifest). @default "exact"
   */
  on_recall_miss: "fail" | "exact" | "accept";
  /** Corpus rows the recall check holds out of the graph and queries with (at most a tenth of the corpus). @default 300 */
  recall_sample: number;
  /** The largest `expansion_search` the recall check may choose. @default 4096 */
  max_expansion_search: number;
  /**
   * The largest `connectivity` a build may double to when the recall check misses at the configured one
   * (each doubling is another build; graph bytes per vector grow about linearly). @default 64
   */
  max_connectivity: number;
  /**
   * How the graph stores vectors: `f32`, or `f16`/`i8` (scalar quantisation: 1/2 and 1/4 of the vector bytes,
   * at a recall cost BENCHMARKS.md measures). @default "f32"
   */
  quantization: "f32" | "f16" | "i8";
  /** Threads a build inserts with; 0 = every core. @default 0 */
  build_threads: number;
}

const options = z.strictObject({
  connectivity: z.number().int().min(2).max(1024).default(16).describe("Graph edges per node (HNSW M)"),
  expansion_add: z.number().int().min(1).max(65536).default(128).describe("Candidates considered while inserting (efConstruction)"),
  expansion_search: z.number().int().min(1).max(65536).default(64).describe("Candidates considered per search (ef)"),
  rebuild_after_removed: z.number().min(0).max(1).default(0.5)
    .describe("Incremental runs update the previous graph until removals since its last full build pass this fraction of its size"),
  target_recall: z.number().min(0).max(1).default(0.95).describe("Recall@10 the version must reach, measured against exact search at build time; 0 skips the check"),
  on_recall_miss: z.enum(["fail", "exact", "accept"]).default("exact").describe("When target_recall is out of reach: fail the build, serve with exact search, or accept the lower recall"),
  recall_sample: z.number().int().min(10).max(100000).default(300).describe("Corpus rows the recall check holds out of the graph and queries with"),
  max_expansion_search: z.number().int().min(1).max(65536).default(4096).describe("Largest expansion_search the recall check may choose"),
  max_connectivity: z.number().int().min(2).max(1024).default(64).describe("Largest connectivity a build may double to when the recall check misses"),
  quantization: z.enum(["f32", "f16", "i8"]).default("f32").describe("How the graph stores vectors: f32, or scalar-quantised f16 / i8"),
  build_threads: z.number().int().min(0).max(1024).default(0).describe("Threads a build inserts with; 0 = every core"),
});

/** Neighbours per query the recall check measures at (what `/search` returns by default). */
export const RECALL_K = 10;
const SCALAR = { f32: 4, f16: 2, i8: 1 } as const;

/** Rows added per native call; between batches the event loop gets a turn, so a worker stays responsive. */
const ADD_BATCH = 8192;

const fail = (msg: string, cause?: unknown) => new ApfaError("index", msg, { cause, where: "index:hnsw" });

export default definePlugin({
  kind: "index",
  name: NAME,
  description: "Approximate inner-product search on a usearch HNSW graph, memory-mapped when served",
  options,
  create(opts: HnswOptions): IndexEngine {
    // A file's own header (dims, connectivity, scalar kind) wins over these when it is viewed or loaded.
    const make = (dims: number, ef = opts.expansion_search, connectivity = opts.connectivity) =>
      new usearch.Index({
        dimensions: dims,
        metric: usearch.MetricKind.IP,
        quantization: opts.quantization as Usearch.ScalarKind,
        connectivity,
        expansion_add: opts.expansion_add,
        expansion_search: ef,
        multi: false,
      });

    /** Saves the graph to a temporary file and hands `use` its path (usearch works on paths). */
    const onSaved = async <T>(index: Usearch.Index, use: (file: string) => T | Promise<T>): Promise<T> =>
      withTemp("apfa-hnsw-", async (dir) => {
        const file = path.join(dir, FILE);
        try {
          index.save(file);
        } catch (err) {
          throw fail(`saving the HNSW index failed: ${(err as Error).message}`, err);
        }
        return use(file);
      });
    /** The saved graph's bytes. */
    const graphBytes = (index: Usearch.Index) => onSaved(index, async (file) => new Uint8Array(await fsp.readFile(file)));

    /** The artifact's files: the graph, `hnsw.json` (with the check's expansion_search) and, after updates, the keys. */
    const filesOf = (graph: Uint8Array, meta: { built_count: number; removed_since_build: number }, recall?: RecallReport, keys?: Uint32Array) => {
      const files: Record<string, Uint8Array> = {
        [FILE]: graph,
        [META]: new TextEncoder().encode(JSON.stringify({ ...meta, expansion_search: recall?.params.expansion_search ?? opts.expansion_search, configured: opts.expansion_search })),
      };
      if (keys) files[KEYS] = new Uint8Array(keys.buffer, keys.byteOffset, keys.byteLength);
      return files;
    };

    /** A version that missed `target_recall` after every setting: fail, or hand it on as `on_recall_miss` says. */
    const missed = (files: Record<string, Uint8Array>, recall: RecallReport): IndexArtifact => {
      const p = recall.params;
      const what = `recall@${recall.k} ${recall.measured.toFixed(3)} at expansion_search ${p.expansion_search} (connectivity ${p.connectivity}) is under target_recall ${opts.target_recall}`;
      if (opts.on_recall_miss === "fail") {
        throw fail(`${what}, measured on ${recall.sample} ${recall.method.startsWith("held-out") ? "held-out " : ""}corpus rows${recall.queries ? ` and ${recall.queries.sample} logged queries` : ""} against exact search. Raise max_connectivity or max_expansion_search, ` +
          `${opts.quantization === "f32" ? "" : `use a finer quantization than ${opts.quantization}, `}lower target_recall, ` +
          "or set stages.index.options.on_recall_miss to exact (serve with exact search) or accept");
      }
      return { files, main: FILE, recall, fallback: opts.on_recall_miss === "exact" ? "exact" : undefined };
    };

    /**
     * Recall of the saved graph at doubling `expansion_search`, from the configured value to the cap, stopping
     * early when a doubling gains under 0.005 (the graph, not the search, is then what limits it); once a
     * doubling meets the target after a miss, bisected back to the least expansion_search that clears it by its
     * sampling error (`clears`). With
     * logged queries each setting is measured on the probe's corpus rows and on them, and the lower figure is the
     * one that counts. `from` is the first expansion_search tried, and `floor` the least one it may narrow to.
     */
    const tune = async (file: string, probe: RecallProbe, vectors: Float32Array, dims: number, connectivity: number, tried: RecallReport["tried"], from: number, floor: number, keys?: Uint32Array, queries?: Float32Array): Promise<RecallReport> => {
      const logged = queries && queries.length >= dims ? queryProbe(vectors, dims, RECALL_K, queries, probe.heldOut) : undefined;
      const rowOf = keys ? invert(keys) : undefined;
      const measure = (index: Usearch.Index, p: RecallProbe) => {
        const m = index.search(p.queries, p.k + 1, 0) as Usearch.Matches | Usearch.BatchMatches;
        const answers = Array.from(p.rows, (_, i) => {
          const ks = m instanceof usearch.BatchMatches ? m.get(i).keys : m.keys;
          return Array.from(ks, (key) => (rowOf ? rowOf[Number(key)] : Number(key)));
        });
        return p.scores(answers);
      };
      const at = (ef: number) => {
        const index = make(dims, ef);
        index.view(file);
        const corpus = measure(index, probe);
        const q = logged && measure(index, logged);
        const c = mean(corpus);
        const lq = q && mean(q);
        const recall = lq === undefined ? c : Math.min(c, lq);
        const entry = { params: { connectivity, expansion_search: ef }, recall, ...(lq === undefined ? {} : { corpus: c, queries: lq }) };
        tried.push(entry);
        return { entry, sure: clears(corpus, opts.target_recall) && (!q || clears(q, opts.target_recall)) };
      };
      let ef = Math.min(from, opts.max_expansion_search);
      let prev = -1;
      let missed: number | undefined;
      for (;;) {
        const r = at(ef);
        const recall = r.entry.recall;
        // A doubling that gains under 0.005 ends it, unless both settings were under the answers asked for (k + 1):
        // usearch searches with at least that many candidates, so those settings are the same search.
        const plateau = recall - prev < 0.005 && missed !== undefined && missed > probe.k + 1;
        if (recall >= opts.target_recall || ef >= opts.max_expansion_search || plateau) {
          let best = tried.filter((t) => t.params.connectivity === connectivity).reduce((a, b) => (b.recall > a.recall + 0.001 ? b : a));
          // Met after a miss: the least expansion_search between the two that clears the target by its sampling error.
          if (recall >= opts.target_recall && missed !== undefined) best = await bisect(missed, ef, best, at);
          // Met at the first setting, with logged queries measured too: the least one below it that still clears
          // the target (ef under k finds no more). On corpus rows alone the configured ef is a floor: held-out rows
          // can be much kinder than questions from outside the corpus (the million suite's templated corpus:
          // 0.998 against 0.643), so they may raise it but not lower it.
          else if (recall >= opts.target_recall && r.sure && logged) best = await narrowDown(ef, r.entry, Math.max(floor, probe.k), at);
          return {
            k: probe.k, target: opts.target_recall, measured: best.recall, sample: probe.rows.length,
            method: `${probe.heldOut ? "held-out" : "leave-one-out"}${logged ? "+logged-queries" : ""}`, params: best.params, tried, met: best.recall >= opts.target_recall,
            ...(logged ? { corpus: { sample: probe.rows.length, measured: best.corpus! }, queries: { sample: logged.rows.length, measured: best.queries! } } : {}),
          };
        }
        missed = ef;
        prev = recall;
        ef = Math.min(ef * 2, opts.max_expansion_search);
      }
    };

    /**
     * Adds `rows` of `vectors` under `keys[i]` for `rows[i]`, in a seeded shuffled order and in batches (between
     * batches the event loop gets a turn). The order matters: rows sorted by id put a templated corpus's
     * near-copies next to each other, and inserted that way HNSW links each copy only to the hub it was copied
     * from; measured on 100k near-duplicate rows, recall@10 at ef 256 was 0.46 inserted grouped, 0.67 in row order
     * and 0.94 shuffled (docs/index-engines.md). FAISS shuffles its insertion order for the same reason.
     */
    const addRows = async (index: Usearch.Index, rows: ArrayLike<number>, keys: ArrayLike<number>, vectors: Float32Array, dims: number, onProgress?: BuildOptions["onProgress"], done = 0, total = rows.length) => {
      const order = shuffled(rows.length);
      if (done === 0) onProgress?.(0, total);
      for (let start = 0; start < order.length; start += ADD_BATCH) {
        const part = order.subarray(start, Math.min(order.length, start + ADD_BATCH));
        const batch = new Float32Array(part.length * dims);
        part.forEach((i, j) => batch.set(vectors.subarray(rows[i] * dims, (rows[i] + 1) * dims), j * dims));
        index.add(BigUint64Array.from(part, (i) => BigInt(keys[i])), batch, opts.build_threads);
        onProgress?.(done + start + part.length, total);
        await new Promise((resolve) => setImmediate(resolve));
      }
    };

    /**
     * Inserts `rows` (under `keys[i]`) but the recall check's `held` ones, measures the graph with those as
     * queries from outside it, then inserts them too. A row already in the graph guides the walk to its own node,
     * whose links are its nearest rows: on the ann suite's 100k near-duplicate rows that leave-one-out question
     * chose ef 64 at 0.991 where queries from outside the corpus got 0.735; held out, the rows track those
     * queries (docs/index-engines.md, which also says what they do not catch).
     */
    const insertAndCheck = async (index: Usearch.Index, rows: ArrayLike<number>, keyOf: (row: number) => number, held: Int32Array | undefined, check: ((file: string) => Promise<RecallReport>) | undefined, vectors: Float32Array, dims: number, onProgress?: BuildOptions["onProgress"]) => {
      const isHeld = new Set(held);
      const first = held ? Array.from(rows).filter((r) => !isHeld.has(r)) : rows;
      await addRows(index, first, Array.from(first, keyOf), vectors, dims, onProgress, 0, rows.length);
      const recall = check && (await onSaved(index, check));
      if (held) await addRows(index, held, Array.from(held, keyOf), vectors, dims, onProgress, first.length, rows.length);
      return recall;
    };

    return {
      metric: "ip",
      async build(vectors, dims, buildOpts) {
        const count = checkVectors(vectors, dims, "index:hnsw");
        const rows = Int32Array.from({ length: count }, (_, i) => i);
        const meta = { built_count: count, removed_since_build: 0 };
        const tried: RecallReport["tried"] = [];
        const checking = opts.target_recall > 0;
        const held = checking ? holdOut(rows, count, opts.recall_sample) : undefined;
        const probe = held ? heldOutProbe(vectors, dims, RECALL_K, held) : checking ? recallProbe(vectors, dims, RECALL_K, opts.recall_sample) : undefined;
        // Near-copies of one document all link to it and it keeps only 2 × connectivity of them, so a cluster
        // larger than that leaves copies no search reaches (docs/index-engines.md); no expansion_search helps,
        // a denser graph does. So a miss doubles connectivity, up to max_connectivity, and builds again.
        // A doubling that gains under 0.005 ends it too: then the vectors' precision (i8), not the graph, limits recall.
        let before = -1;
        for (let connectivity = opts.connectivity; ; connectivity *= 2) {
          const index = make(dims, opts.expansion_search, connectivity);
          const check = probe && ((file: string) => tune(file, probe, vectors, dims, connectivity, tried, opts.expansion_search, 1, undefined, buildOpts?.queries));
          const recall = await insertAndCheck(index, rows, (r) => r, held, check, vectors, dims, buildOpts?.onProgress);
          const files = filesOf(await graphBytes(index), meta, recall);
          if (!recall || recall.met) return { files, main: FILE, recall };
          if (connectivity * 2 > opts.max_connectivity || recall.measured - before < 0.005) return missed(files, recall);
          before = recall.measured;
        }
      },

      async update(prev, next) {
        const { vectors, dims, prevRow } = next;
        const count = checkVectors(vectors, dims, "index:hnsw");
        const meta = prev.files[META]
          ? (JSON.parse(new TextDecoder().decode(prev.files[META])) as { built_count: number; removed_since_build: number } & Chosen)
          : { built_count: prev.count, removed_since_build: 0 };
        const prevKeys = prev.files[KEYS] ? u32(prev.files[KEYS]) : undefined;
        const keyOf = (row: number) => (prevKeys ? prevKeys[row] : row);
        const kept = new Uint8Array(prev.count);
        for (const p of prevRow) if (p >= 0) kept[p] = 1;
        const freed: number[] = [];
        for (let p = 0; p < prev.count; p++) if (!kept[p]) freed.push(keyOf(p));
        const removed = meta.removed_since_build + freed.length;
        if (!prev.files[FILE] || removed > opts.rebuild_after_removed * meta.built_count) return undefined;

        const index = make(dims);
        await withTemp("apfa-hnsw-", async (dir) => {
          await fsp.writeFile(path.join(dir, FILE), prev.files[FILE]);
          index.load(path.join(dir, FILE));
        });
        if (index.size() !== prev.count) throw fail(`the previous ${FILE} holds ${index.size()} vectors, its version says ${prev.count}`);
        if (freed.length) index.remove(BigUint64Array.from(freed, BigInt));
        let nextKey = 0;
        for (let p = 0; p < prev.count; p++) nextKey = Math.max(nextKey, keyOf(p) + 1);
        const keys = new Uint32Array(count);
        const added: number[] = [];
        for (let r = 0; r < count; r++) {
          if (prevRow[r] >= 0) keys[r] = keyOf(prevRow[r]);
          else {
            keys[r] = freed.length ? freed.pop()! : nextKey++;
            added.push(r);
          }
        }
        // The added rows are the ones an update can hold out of the graph (the rest are in it already); with too
        // few of them it asks leave-one-out on the corpus. Either way it starts from the previous version's
        // expansion_search, which its own build measured, and goes no lower (leave-one-out is the kinder question).
        const held = opts.target_recall > 0 ? holdOut(added, count, opts.recall_sample) : undefined;
        const probe = held ? heldOutProbe(vectors, dims, RECALL_K, held) : opts.target_recall > 0 ? recallProbe(vectors, dims, RECALL_K, opts.recall_sample) : undefined;
        const from = servedEf(opts.expansion_search, meta);
        const check = probe && ((file: string) => tune(file, probe, vectors, dims, index.connectivity(), [], from, from, keys, next.queries));
        const recall = await insertAndCheck(index, added, (r) => keys[r], held, check, vectors, dims, next.onProgress);
        const bytes = await graphBytes(index);
        // An updated graph under target is rebuilt in full, where connectivity can grow.
        if (recall && !recall.met) return undefined;
        return { files: filesOf(bytes, { built_count: meta.built_count, removed_since_build: removed }, recall, keys), main: FILE, recall };
      },

      async open(dir, info) {
        const file = path.join(dir, FILE);
        await checkLayout(file, info);
        const meta = await fsp.readFile(path.join(dir, META), "utf8").then((t) => JSON.parse(t) as Chosen, () => ({}));
        const index = make(info.dims, servedEf(opts.expansion_search, meta));
        try {
          index.view(file);
        } catch (err) {
          throw fail(`${file} is not a usable usearch index: ${(err as Error).message}`, err);
        }
        // The file's own header wins over the constructor's dimensions, so check it against the version.
        if (index.dimensions() !== info.dims) throw fail(`${file} holds ${index.dimensions()}-dim vectors but the index version says ${info.dims}`);
        if (index.size() !== info.count) throw fail(`${file} holds ${index.size()} vectors but the index version says ${info.count}`);
        return hnswSearcher(index, info.dims, info.count, await rowsByKey(path.join(dir, KEYS), info.count));
      },
    };
  },
});

/** What `hnsw.json` says of the recall check: the expansion_search it chose, and the option's value at the build. */
interface Chosen {
  expansion_search?: number;
  configured?: number;
}

/** The expansion_search a version is served (and updated) with (`servedSetting` over `hnsw.json`). */
export function servedEf(option: number, meta: Chosen): number {
  return servedSetting(option, meta.expansion_search, meta.configured);
}

/** 0..n-1 in a fixed pseudo-random order (Fisher–Yates on a seeded LCG), so the same input builds the same graph. */
function shuffled(n: number): Uint32Array {
  const out = Uint32Array.from({ length: n }, (_, i) => i);
  let s = 0x9e3779b9;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = Math.floor((s / 4294967296) * (i + 1));
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}

/** Bytes as u32 values (copied when unaligned). */
function u32(b: Uint8Array): Uint32Array {
  return b.byteOffset % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4) : new Uint32Array(b.slice().buffer);
}

/** key → row for a row → key map. */
function invert(keys: Uint32Array): Int32Array {
  let max = 0;
  for (const k of keys) max = Math.max(max, k);
  const rows = new Int32Array(max + 1).fill(-1);
  keys.forEach((k, r) => (rows[k] = r));
  return rows;
}

/** key → row from `keys.u32` (row → key), or undefined when keys are rows (a full build). */
async function rowsByKey(file: string, count: number): Promise<Int32Array | undefined> {
  const bytes = await fsp.readFile(file).catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? undefined : Promise.reject(err)));
  if (!bytes) return undefined;
  if (bytes.byteLength !== count * 4) throw fail(`${file} has ${bytes.byteLength / 4} keys, the version has ${count} rows`);
  return invert(u32(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)));
}

/**
 * Checks the outer layout usearch writes (rows:u32, bytes per row:u32, the vectors, then a 64-byte head
 * starting "usearch") against the file size before mapping it. usearch's `view` trusts these numbers and
 * reads past the end of the mapping (a segfault, not an error) when a file is truncated or not its own.
 */
async function checkLayout(file: string, info: { dims: number; count: number }): Promise<void> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, "r");
  } catch (err) {
    throw fail(`cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, err);
  }
  try {
    const size = (await fh.stat()).size;
    const head = new Uint8Array(8);
    if (size < 8 || (await fh.read(head, 0, 8, 0)).bytesRead < 8) throw fail(`${file} is truncated: ${size} bytes`);
    const dv = new DataView(head.buffer);
    const rows = dv.getUint32(0, true);
    const rowBytes = dv.getUint32(4, true);
    // The file's own scalar kind wins over the options (a version built as f16 stays f16), so any of ours fits.
    if (!Object.values(SCALAR).some((b) => rowBytes === info.dims * b)) {
      throw fail(`${file} holds rows of ${rowBytes} bytes, which fits no f32/f16/i8 layout of the ${info.dims} dims the index version says`);
    }
    if (rows !== info.count) throw fail(`${file} holds ${rows} vectors but the index version says ${info.count}`);
    const headAt = 8 + rows * rowBytes;
    if (size < headAt + 64) throw fail(`${file} is truncated: ${size} bytes, the vectors alone need ${headAt + 64}`);
    const magic = new Uint8Array(7);
    await fh.read(magic, 0, 7, headAt);
    if (new TextDecoder().decode(magic) !== "usearch") throw fail(`${file} is not a usearch index (no "usearch" head after the vectors)`);
  } finally {
    await fh.close();
  }
}

function hnswSearcher(index: Usearch.Index, dims: number, count: number, rowOf?: Int32Array): Searcher {
  let live: Usearch.Index | null = index;
  return {
    count,
    dims,
    memoryBytes: 0,
    async search(query, k) {
      if (!live) throw fail("search on a closed index");
      if (!(query instanceof Float32Array) || query.length !== dims) {
        throw fail(`query must be a Float32Array of ${dims} floats, got ${query?.length ?? typeof query}`);
      }
      const n = Math.min(Math.floor(k), count);
      if (!(n >= 1)) return { rows: [], scores: [] };
      const m = live.search(query, n, 1);
      const rows = new Array<number>(m.keys.length);
      const scores = new Array<number>(m.keys.length);
      // usearch's "ip" distance is 1 - inner product; the loop is over the k results only.
      for (let i = 0; i < rows.length; i++) {
        rows[i] = rowOf ? rowOf[Number(m.keys[i])] : Number(m.keys[i]);
        scores[i] = 1 - m.distances[i];
      }
      return { rows, scores };
    },
    async close() {
      // usearch has no explicit unmap: dropping the last reference lets GC release the mapping.
      live = null;
    },
  };
}
