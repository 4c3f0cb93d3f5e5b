/**
 * `faiss` index engine: any FAISS index the `index_factory` string describes ("HNSW32", "IVF1024,Flat",
 * "IVF256,PQ48", ...), through the optional faiss-node addon. The artifact is one file, `index.faiss`, written
 * by FAISS itself, so Python's `faiss.read_index` opens it too.
 *
 * faiss-node's calls are synchronous and a search or a build can take long, so every call runs in a
 * `node:worker_threads` worker: a server's event loop stays free while FAISS works. faiss-node is loaded
 * lazily, so pipelines that never use this engine do not need it (`scripts/build-faiss-node.sh` builds it).
 *
 * Recall check (`target_recall`, as for `hnsw`; plugins/index/_recall.ts): after a build the index is searched
 * with corpus rows (leave-one-out) and logged real queries, against exact search, doubling the search-time
 * setting the file carries — `nprobe` for IVF indexes, `efSearch` for HNSW ones — until the target is met,
 * then bisecting back to the least setting that clears it by its sampling error (within an eighth); with logged
 * queries, a setting that meets it at once is halved, then bisected, down to the least that clears it (corpus
 * rows alone never take it below the configured one: they are the kinder question).
 * The choice goes into the manifest and into `faiss.json` beside the index, which `open` applies (a configured
 * `nprobe` raised above the build's still wins). Other indexes (Flat, PQ) have no such setting and are measured as built.
 *
 * Serving (`mmap`, default on): an IVF index's inverted lists, nearly all of its bytes, are read by FAISS's own
 * on-disk lists from a shared memory map of `index.faiss` itself, so server processes on one version share one copy
 * in the page cache and nothing is copied or written at open; only the header and the coarse centroids sit in each
 * worker's heap. FAISS's on-disk lists also start up to 32 threads per search that read the probed lists once more
 * (a prefetch for slow disks) and nearly triple a search's CPU, and map their file writable;
 * scripts/build-faiss-node.sh builds faiss-node with the prefetch off and the map read-only, and `open` warns when
 * the installed build does either. Searches that queue while FAISS is busy go to it as one call.
 * @module
 */
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { createRequire } from "node:module";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { z } from "zod";
import { definePlugin, type IndexEngine, type Searcher } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { checkVectors, withTemp } from "./_check.ts";
import { bisect, clears, mean, narrowDown, queryProbe, recallProbe, recallQueries, sampleRows, servedSetting, type ExactTruth, type RecallReport } from "./_recall.ts";

export const NAME = "faiss";

/** The file `build` writes and `open` reads. */
export const FILE = "index.faiss";

/** The search-time setting the recall check chose (`{"nprobe": 32}` or `{"ef_search": 256}`), absent without a check. */
export const META = "faiss.json";

/** Neighbours per query the recall check measures at (what `/search` returns by default). */
const RECALL_K = 10;

/** The largest HNSW `efSearch` the recall check tries (IVF stops at nlist). */
const MAX_EF_SEARCH = 4096;
/** Most searches the worker hands FAISS in one call (those that queued while it was busy). */
const MAX_BATCH = 32;

export interface FaissOptions {
  /** FAISS `index_factory` description, e.g. "HNSW32", "IVF1024,Flat", "IVF256,PQ48". @default "HNSW32" */
  factory: string;
  /**
   * Inverted lists probed per search for IVF indexes (ignored by others); more raises recall. With the recall
   * check on, where it starts: it serves the least nprobe that meets `target_recall`, below or above this one;
   * raised above the build's value later, this one wins where it is larger. @default 16
   */
  nprobe: number;
  /** Most rows an index that needs training (IVF, PQ) is trained on; larger sets are sampled evenly. @default 100000 */
  train_rows: number;
  /**
   * Recall@10 the version must reach against exact search, measured at build time on corpus rows and logged
   * queries (the lower figure counts); `nprobe` (IVF) or `efSearch` (HNSW) is doubled until it does, then
   * narrowed to the least that does by more than the sample's error. 0 skips the check. @default 0.95
   */
  target_recall: number;
  /** When the target is out of reach: `fail` the build, serve with `exact` search, or `accept` the lower recall. @default "exact" */
  on_recall_miss: "fail" | "exact" | "accept";
  /** Corpus rows the recall check queries with. @default 300 */
  recall_sample: number;
  /**
   * Serve an IVF index's inverted lists from a memory map of the index file, so every server process shares one
   * copy of the vectors in the page cache; false loads the whole index into each process's heap. Other indexes are
   * always loaded. @default true
   */
  mmap: boolean;
}

const options = z.strictObject({
  factory: z.string().min(1).default("HNSW32").describe('FAISS index_factory description, e.g. "HNSW32", "IVF1024,Flat"'),
  nprobe: z.number().int().min(1).default(16).describe("Inverted lists probed per search (IVF indexes only)"),
  train_rows: z.number().int().min(1).default(100_000).describe("Most rows used to train IVF/PQ indexes"),
  target_recall: z.number().min(0).max(1).default(0.95).describe("Recall@10 the version must reach, measured against exact search at build time (nprobe or efSearch is raised until it does); 0 skips the check"),
  on_recall_miss: z.enum(["fail", "exact", "accept"]).default("exact").describe("When target_recall is out of reach: fail the build, serve with exact search, or accept the lower recall"),
  recall_sample: z.number().int().min(10).max(100000).default(300).describe("Corpus rows the recall check queries with"),
  mmap: z.boolean().default(true).describe("IVF indexes: serve the inverted lists from a memory map of the index file, shared by every process; false loads them into each process's heap"),
});

const fail = (msg: string, cause?: unknown) => new ApfaError("index", msg, { cause, where: "index:faiss" });

/** postMessage clones a view's whole ArrayBuffer, so a view into a larger buffer is cut out first. */
const compact = (a: Float32Array) => (a.byteLength === a.buffer.byteLength ? a : a.slice());

/** Whether the optional faiss-node addon can be loaded from here (scripts/build-faiss-node.sh installs it). */
export function faissNodeInstalled(): boolean {
  try {
    faissNodePath();
    return true;
  } catch {
    return false;
  }
}

/** What a faiss-node build does with FAISS's memory-mapped inverted lists. */
export interface FaissNodeBuild {
  /** Each search first reads every probed list once more on up to 32 threads (FAISS's prefetch for slow disks). */
  prefetches: boolean;
  /** The index file is mapped read-only (FAISS's IO_FLAG_READ_ONLY); otherwise FAISS opens and maps it for writing too. */
  readOnly: boolean;
  /**
   * faiss-node 0.5.1's leaks are fixed: as published, toBuffer and fromBuffer never free a whole copy of the index
   * and search never frees its queries, so each build, recall-check setting and served version leaks the index's
   * size, and each search its query.
   */
  leaksFixed: boolean;
  /** add, train and search take a Float32Array in one copy (faiss-node reads a JS Array element by element). */
  f32Arrays: boolean;
}

/**
 * What the installed faiss-node does: any build but scripts/build-faiss-node.sh's leaks, prefetches mapped lists and
 * maps them writable; that script's records what it changed in the package.json it installs
 * (`apfa.ondisk_prefetch: false`, `apfa.ondisk_read_only: true`, `apfa.leaks_fixed: true`, `apfa.f32_arrays: true`).
 * `entry` is the addon's resolved entry (lib/index.js).
 */
export function faissNodeBuild(entry: string = faissNodePath()): FaissNodeBuild {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(entry), "..", "package.json"), "utf8")) as { apfa?: { ondisk_prefetch?: unknown; ondisk_read_only?: unknown; leaks_fixed?: unknown; f32_arrays?: unknown } };
    return { prefetches: pkg.apfa?.ondisk_prefetch !== false, readOnly: pkg.apfa?.ondisk_read_only === true, leaksFixed: pkg.apfa?.leaks_fixed === true, f32Arrays: pkg.apfa?.f32_arrays === true };
  } catch {
    return { prefetches: true, readOnly: false, leaksFixed: false, f32Arrays: false };
  }
}

/** Path of the faiss-node entry, or a clear error telling how to get it. */
function faissNodePath(): string {
  try {
    return createRequire(import.meta.url).resolve("faiss-node");
  } catch (err) {
    throw fail("faiss-node is not installed; run scripts/build-faiss-node.sh", err);
  }
}

// The worker is plain CommonJS evaluated from this string, so it needs no TypeScript loader of its own.
// Rows reach FAISS as JS arrays because that is what faiss-node accepts; chunks bound that copy's size.
const WORKER = String.raw`
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const path = require("node:path");
let faiss, loadError, index = null;
try { faiss = require(workerData.faissPath); } catch (e) { loadError = e; }
const CHUNK = 16384;
// A build of scripts/build-faiss-node.sh takes Float32Arrays whole; faiss-node as published wants JS Arrays.
const rowsArg = workerData.f32Arrays ? (a) => a : (a) => Array.from(a);
// Adds count × dims rows to a FAISS index a chunk at a time (a chunk bounds the copy faiss-node makes of it).
const addRows = (idx, vectors, dims) => {
  const count = vectors.length / dims;
  for (let r = 0; r < count; r += CHUNK) idx.add(rowsArg(vectors.subarray(r * dims, Math.min(count, r + CHUNK) * dims)));
};
// The part of an IVF file read to find its inverted lists: the header and the coarse quantizer (65,536 lists of
// 1,024 dims are 256 MiB).
const HEAD_MAX = 272 << 20;

// The search-time setting a serialised index carries, found in its bytes because faiss-node has no setters.
// Both layouts start with fourcc, d:i32, ntotal:i64, 2 dummy i64, is_trained:u8, metric_type:i32 (+ metric_arg:f32
// when > 1). IVF ("Iw..") follows with nlist:u64, nprobe:u64. HNSW ("IHN.") follows with its graph: five
// size-prefixed vectors (assign_probas f64, cum_nneighbor_per_level i32, levels i32, offsets u64, neighbors i32),
// then entry_point, max_level, efConstruction, efSearch, upper_beam (i32 each). Bytes that do not fit the layout
// (a stored nprobe outside 1..nlist, levels not one per vector) mean another layout: null, nothing changes.
function setting(buf) {
  if (buf.length < 64) return null;
  const tag = buf.toString("latin1", 0, 4);
  const at = 37 + (buf.readInt32LE(33) > 1 ? 4 : 0);
  if (tag.startsWith("Iw")) {
    const nlist = buf.readBigUInt64LE(at);
    const stored = buf.readBigUInt64LE(at + 8);
    if (nlist < 1n || stored < 1n || stored > nlist) return null;
    return { name: "nprobe", at: at + 8, value: Number(stored), max: Number(nlist) };
  }
  if (tag.startsWith("IHN")) {
    const ntotal = buf.readBigInt64LE(8);
    const counts = [];
    let off = at;
    for (const size of [8, 4, 4, 8, 4]) {
      if (off + 8 > buf.length) return null;
      const n = buf.readBigUInt64LE(off);
      counts.push(n);
      off += 8 + Number(n) * size;
    }
    if (off + 20 > buf.length || counts[2] !== ntotal || counts[3] !== ntotal + 1n) return null;
    const ef = buf.readInt32LE(off + 12);
    if (ef < 1 || ef > 1 << 24) return null;
    return { name: "ef_search", at: off + 12, value: ef, max: workerData.maxEfSearch };
  }
  return null;
}

function setTo(buf, s, value) {
  if (!s) return;
  const v = Math.max(1, Math.min(s.max, value));
  if (s.name === "nprobe") buf.writeBigUInt64LE(BigInt(v), s.at);
  else buf.writeInt32LE(v, s.at);
}

// IVF indexes keep their vectors in inverted lists. FAISS writes them as an "ilar" block, the index file's last:
// fourcc, nlist:u64, code_size:u64, "full", a size-prefixed u64 vector of list sizes, then each list's codes and
// ids. FAISS's on-disk lists ("ilod": the same nlist and code_size, one {size, capacity, offset} u64 triple a list,
// no free slots, the data file's name, its size) read that data from a file they memory-map from byte 0
// (MAP_SHARED), each list at its offset as codes then ids: the layout "ilar" stores them in. So the block is
// rewritten to point into the index file itself, and every process's FAISS maps that one file: the page cache holds
// the vectors once, nothing is copied or written, and scripts/build-faiss-node.sh's build maps it read-only.
// Returns null (load into the heap as before) for other indexes, or when the layout does not check out.
function mappedLists(file) {
  const fd = fs.openSync(file, "r");
  try {
    const size = fs.fstatSync(fd).size;
    // The lists' sizes sit after the quantizer, whose size is unknown until parsed: read 4 MiB, then 4× more.
    for (let want = 4 << 20; ; want *= 4) {
      const head = Buffer.allocUnsafe(Math.min(size, want, HEAD_MAX));
      fs.readSync(fd, head, 0, head.length, 0);
      if (!head.toString("latin1", 0, 2).startsWith("Iw")) return null;
      const found = listsIn(head, size, file);
      if (found || head.length === size || head.length === HEAD_MAX) return found;
    }
  } finally {
    fs.closeSync(fd);
  }
}

// The "ilar" block in \`head\` whose data ends exactly at the file's end (float bytes of the quantizer that happen
// to read "ilar" do not), as an "ilod" block for the same lists where they lie in \`file\`; null when there is none.
function listsIn(head, size, file) {
  for (let at = head.indexOf("ilar", 53, "latin1"); at >= 0 && at + 32 <= head.length; at = head.indexOf("ilar", at + 1, "latin1")) {
    const nlist = Number(head.readBigUInt64LE(at + 4)), codeSize = Number(head.readBigUInt64LE(at + 12));
    if (head.toString("latin1", at + 20, at + 24) !== "full" || Number(head.readBigUInt64LE(at + 24)) !== nlist) continue;
    const start = at + 32 + nlist * 8;
    if (codeSize < 1 || start > head.length) continue;
    const triples = Buffer.alloc(nlist * 24);
    let offset = start;
    for (let i = 0; i < nlist; i++) {
      const n = Number(head.readBigUInt64LE(at + 32 + i * 8));
      triples.writeBigUInt64LE(BigInt(n), i * 24);
      triples.writeBigUInt64LE(BigInt(n), i * 24 + 8);
      triples.writeBigUInt64LE(BigInt(offset), i * 24 + 16);
      offset += n * (codeSize + 8);
    }
    if (offset !== size) continue;
    const name = Buffer.from(path.resolve(file), "utf8");
    const u64 = (x) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(x)); return b; };
    const block = Buffer.concat([Buffer.from("ilod", "latin1"), u64(nlist), u64(codeSize), u64(nlist), triples, u64(0), u64(name.length), name, u64(size)]);
    return { head: Buffer.from(head.subarray(0, at)), block };
  }
  return null;
}

const describe = (s) => (s ? { name: s.name, at: s.at, value: s.value, max: s.max } : null);

const ops = {
  // Writes the index to \`out\` (the recall check reads it from there in other workers) or returns its bytes.
  // \`trainAt\`: the rows to train on (sampleRows in _recall.ts), or null for all of them.
  build({ vectors, dims, factory, nprobe, trainAt, out }) {
    const idx = faiss.Index.fromFactory(dims, factory, 0 /* METRIC_INNER_PRODUCT */);
    if (!idx.isTrained()) {
      let sample = vectors;
      if (trainAt) {
        sample = new Float32Array(trainAt.length * dims);
        trainAt.forEach((r, i) => sample.set(vectors.subarray(r * dims, (r + 1) * dims), i * dims));
      }
      idx.train(rowsArg(sample));
    }
    addRows(idx, vectors, dims);
    const buf = idx.toBuffer();
    const s = setting(buf);
    if (s && s.name === "nprobe") setTo(buf, s, nprobe);
    if (!out) return { bytes: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) };
    fs.writeFileSync(out, buf);
    return { setting: describe(setting(buf)) };
  },
  // Answers of the index in \`file\` at one setting: n × k row numbers (-1 padding), best first. Each probe runs in
  // a worker of its own, ended after it: faiss-node frees an index only when its wrapper is collected, and an
  // ended worker's wrappers are freed at once, so settings tried one after another never pile up in memory.
  // An IVF index's lists are mapped as \`open\` maps them, so a setting reads the header and quantizer, not a
  // copy of the whole index (1.5 GB at 1M x 384, read and then copied into FAISS, for every setting tried).
  probe({ file, value, queries, k }) {
    let lists = null;
    try { lists = mappedLists(file); } catch { lists = null; }
    const buf = lists ? lists.head : fs.readFileSync(file);
    if (value) setTo(buf, setting(buf), value);
    const r = faiss.Index.fromBuffer(lists ? Buffer.concat([buf, lists.block]) : buf).search(rowsArg(queries), k);
    return Int32Array.from(r.labels);
  },
  // Exact top-k of \`queries\` over \`vectors\` (n × k row numbers, best first): FAISS's flat search multiplies a
  // batch of queries against the rows with BLAS, several times faster than one SIMD dot product at a time.
  truth({ vectors, dims, queries, k }) {
    const flat = new faiss.IndexFlatIP(dims);
    addRows(flat, vectors, dims);
    return Int32Array.from(flat.search(rowsArg(queries), k).labels);
  },
  open({ file, nprobe, chosen, mmap }) {
    const load = (buf, block) => {
      const s = setting(buf);
      if (s && s.name === "nprobe") setTo(buf, s, nprobe);
      else if (s && chosen && chosen.ef_search) setTo(buf, s, chosen.ef_search);
      index = faiss.Index.fromBuffer(block ? Buffer.concat([buf, block]) : buf);
      return { count: index.ntotal(), dims: index.getDimension(), bytes: buf.length, mapped: !!block };
    };
    // A file FAISS cannot map (an older faiss-node build opens it for writing too) costs the sharing, not the version.
    let unmapped;
    try {
      const lists = mmap ? mappedLists(file) : null;
      if (lists) return load(lists.head, lists.block);
    } catch (e) {
      unmapped = String((e && e.message) || e);
    }
    return { ...load(fs.readFileSync(file)), unmapped };
  },
};

// Searches that arrived while FAISS was busy go to it as one call: FAISS spreads a batch over its threads and
// reads each probed list once for all, where a single query runs on one thread. Each gets its own k back.
let waiting = [], calls = 0;
function searchWaiting() {
  const batch = waiting.splice(0, workerData.maxBatch);
  if (waiting.length) setImmediate(searchWaiting);
  try {
    if (loadError) throw new Error("faiss-node failed to load: " + loadError.message);
    const k = Math.max(...batch.map((m) => m.args.k)), dims = batch[0].args.query.length;
    const queries = workerData.f32Arrays ? new Float32Array(batch.length * dims) : new Array(batch.length * dims);
    batch.forEach((m, i) => { for (let j = 0; j < dims; j++) queries[i * dims + j] = m.args.query[j]; });
    const r = index.search(queries, k);
    calls++;
    batch.forEach((m, i) => {
      const rows = [], scores = [];
      for (let j = i * k; j < i * k + m.args.k; j++) if (r.labels[j] >= 0) { rows.push(r.labels[j]); scores.push(r.distances[j]); }
      parentPort.postMessage({ id: m.id, ok: true, result: { rows, scores, call: calls } });
    });
  } catch (e) {
    for (const m of batch) parentPort.postMessage({ id: m.id, ok: false, message: String((e && e.message) || e) });
  }
}

parentPort.on("message", (msg) => {
  const { id, op, args } = msg;
  if (op === "search") {
    if (waiting.push(msg) === 1) setImmediate(searchWaiting);
    return;
  }
  try {
    if (loadError) throw new Error("faiss-node failed to load: " + loadError.message);
    parentPort.postMessage({ id, ok: true, result: ops[op](args) });
  } catch (e) {
    parentPort.postMessage({ id, ok: false, message: String((e && e.message) || e) });
  }
});
`;

interface FaissWorker {
  call<T>(op: "build" | "probe" | "truth" | "open" | "search", args: Record<string, unknown>): Promise<T>;
  close(): Promise<void>;
}

/** One worker thread plus request/response bookkeeping. It only keeps the process alive while a call is pending. */
function spawn(): FaissWorker {
  // FAISS's OpenMP threads spin for a while after each parallel region (libgomp's default active wait). A batch of
  // searches is one such region, so with two server processes the spinning threads of one took the core the other's
  // search needed: on the million suite's 1M IVF version, 2 processes served 194-197 req/s at 9.3 ms of server CPU
  // per request, and 225-230 req/s at 7.9-8.0 ms waiting passively (1 process: the same either way). libgomp reads
  // the variable once, when faiss-node is first loaded in the process; a value the environment already has wins.
  process.env.OMP_WAIT_POLICY ??= "PASSIVE";
  const worker = new Worker(WORKER, { eval: true, workerData: { faissPath: faissNodePath(), maxEfSearch: MAX_EF_SEARCH, maxBatch: MAX_BATCH, f32Arrays: faissNodeBuild().f32Arrays } });
  worker.unref();
  const pending = new Map<number, { resolve: (v: never) => void; reject: (e: unknown) => void }>();
  let seq = 0;
  const settleAll = (err: unknown) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    drained?.();
  };
  /** Resolved when no call is pending any more (close waits for it). */
  let drained: (() => void) | undefined;
  let closing = false;
  worker.on("message", (msg: { id: number; ok: boolean; result?: never; message?: string }) => {
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (pending.size === 0) {
      worker.unref();
      drained?.();
    }
    if (msg.ok) p.resolve(msg.result as never);
    else p.reject(fail(`FAISS: ${msg.message}`));
  });
  worker.on("error", (err) => settleAll(fail(`FAISS worker failed: ${err.message}`, err)));
  worker.on("exit", (code) => settleAll(fail(`FAISS worker exited (code ${code})`)));
  return {
    call(op, args) {
      return new Promise((resolve, reject) => {
        if (closing) return reject(fail("FAISS: the index was closed"));
        const id = ++seq;
        pending.set(id, { resolve, reject });
        worker.ref();
        worker.postMessage({ id, op, args });
      });
    },
    /**
     * Lets the calls already sent finish, then stops the worker: terminating it in the middle of a native FAISS call
     * can abort the whole process, as it did for flat's usearch workers (plugins/index/_pool.ts).
     */
    async close() {
      closing = true;
      if (pending.size > 0) await new Promise<void>((res) => (drained = res));
      await worker.terminate();
    },
  };
}

export default definePlugin({
  kind: "index",
  name: NAME,
  description: "Any FAISS index_factory index via faiss-node (optional), run in a worker thread",
  options,
  create(opts: FaissOptions, ctx): IndexEngine {
    /**
     * Recall of the built index at its search-time setting, doubled from where the build left it (the configured
     * nprobe; FAISS's efSearch) up to nlist or MAX_EF_SEARCH, stopping early when a doubling gains under 0.005;
     * once a doubling meets the target after a miss, bisected back to the least setting that clears it by its
     * sampling error (`clears`).
     * With logged queries each setting is measured on corpus rows and on them; the lower figure counts.
     */
    const tune = async (file: string, vectors: Float32Array, dims: number, s: Setting | null, queries?: Float32Array): Promise<RecallReport> => {
      const truth = await exactTruth(vectors, dims, opts.recall_sample, queries);
      const probe = recallProbe(vectors, dims, RECALL_K, opts.recall_sample, truth?.corpus);
      const logged = queries && queries.length >= dims ? queryProbe(vectors, dims, RECALL_K, queries, undefined, truth?.logged) : undefined;
      // Corpus rows and logged queries go in one search, so each setting loads the index once.
      const k = Math.max(probe.k, logged?.k ?? 0) + 1;
      const all = new Float32Array(probe.queries.length + (logged?.queries.length ?? 0));
      all.set(probe.queries);
      if (logged) all.set(logged.queries, probe.queries.length);
      const n = probe.rows.length;
      const measure = async (value: number | undefined) => {
        const labels = await once<Int32Array>("probe", { file, value, queries: all, k });
        const answers = (p: typeof probe, first: number) => p.scores(Array.from(p.rows, (_, i) => labels.subarray((first + i) * k, (first + i + 1) * k)));
        return { corpus: answers(probe, 0), q: logged ? answers(logged, n) : undefined };
      };
      const tried: RecallReport["tried"] = [];
      const at = async (value: number | undefined) => {
        const { corpus, q } = await measure(value);
        const c = mean(corpus);
        const lq = q && mean(q);
        const recall = lq === undefined ? c : Math.min(c, lq);
        const entry = { params: s && value !== undefined ? { [s.name]: value } : {}, recall, ...(lq === undefined ? {} : { corpus: c, queries: lq }) };
        tried.push(entry);
        return { entry, sure: clears(corpus, opts.target_recall) && (!q || clears(q, opts.target_recall)) };
      };
      let prev = -1;
      let missed: number | undefined;
      for (let value = s?.value; ; value = Math.min(s!.max, value! * 2)) {
        const first = await at(value);
        const recall = first.entry.recall;
        if (!s || value === undefined || recall >= opts.target_recall || value >= s.max || recall - prev < 0.005) {
          let best = tried.reduce((a, b) => (b.recall > a.recall + 0.001 ? b : a));
          // Met after a miss: the least setting between the two that clears the target by its sampling error.
          if (s && value !== undefined && recall >= opts.target_recall && missed !== undefined) best = await bisect(missed, value, best, at);
          // Met at the first setting, with logged queries measured too: the least one below it that still clears
          // the target on both (nprobe down to 1, efSearch down to k). On corpus rows alone the configured setting
          // is a floor: a row's near-copies share its list, so rows find them with a few lists where questions
          // from outside the corpus need many. On the ann suite's near-duplicate 1M set, IVF1024: corpus rows
          // 0.984 at nprobe 2, outside queries 0.369 there and 0.986 at 16.
          else if (s && value !== undefined && recall >= opts.target_recall && first.sure && logged) best = await narrowDown(value, first.entry, s.name === "nprobe" ? 1 : probe.k, at);
          return {
            k: probe.k, target: opts.target_recall, measured: best.recall, sample: probe.rows.length,
            method: logged ? "leave-one-out+logged-queries" : "leave-one-out", params: best.params, tried, met: best.recall >= opts.target_recall,
            ...(logged ? { corpus: { sample: probe.rows.length, measured: best.corpus! }, queries: { sample: logged.rows.length, measured: best.queries! } } : {}),
          };
        }
        missed = value;
        prev = recall;
      }
    };

    return {
      metric: "ip",
      async build(vectors, dims, buildOpts) {
        checkVectors(vectors, dims, "index:faiss");
        const count = vectors.length / dims;
        const args = { vectors: compact(vectors), dims, factory: opts.factory, nprobe: opts.nprobe, trainAt: count > opts.train_rows ? sampleRows(count, opts.train_rows) : null };
        if (!(opts.target_recall > 0)) {
          const { bytes } = await once<{ bytes: Uint8Array }>("build", args);
          return { files: { [FILE]: bytes }, main: FILE };
        }
        return withTemp("apfa-faiss-", async (dir) => {
          const out = path.join(dir, FILE);
          const { setting: s } = await once<{ setting: Setting | null }>("build", { ...args, out });
          const recall = await tune(out, vectors, dims, s, buildOpts?.queries);
          const chosen = recall.params;
          const bytes = new Uint8Array(await fsp.readFile(out));
          if (s && chosen[s.name] !== undefined) writeSetting(bytes, s, chosen[s.name]);
          const files: Record<string, Uint8Array> = { [FILE]: bytes };
          // With the option's nprobe at the build, so `open` can tell a later raise from the value the check started at.
          if (Object.keys(chosen).length) files[META] = new TextEncoder().encode(JSON.stringify({ ...chosen, ...(s?.name === "nprobe" ? { configured: opts.nprobe } : {}) }));
          if (recall.met) return { files, main: FILE, recall };
          const what = `recall@${recall.k} ${recall.measured.toFixed(3)}${Object.entries(chosen).map(([k, v]) => ` at ${k} ${v}`).join("")} (${opts.factory}) is under target_recall ${opts.target_recall}`;
          if (opts.on_recall_miss === "fail") {
            throw fail(`${what}, measured on ${recall.sample} corpus rows${recall.queries ? ` and ${recall.queries.sample} logged queries` : ""} against exact search. ` +
              `${s ? `Raising ${s.name} (up to ${s.max}) did not reach it: ` : ""}use a finer factory (more IVF lists, more HNSW neighbours, less compression), lower target_recall, ` +
              "or set stages.index.options.on_recall_miss to exact (serve with exact search) or accept");
          }
          return { files, main: FILE, recall, fallback: opts.on_recall_miss === "exact" ? "exact" : undefined };
        });
      },

      async open(dir, info) {
        const w = spawn();
        const file = path.join(dir, FILE);
        let got: Opened;
        try {
          const chosen = await readChosen(path.join(dir, META));
          // The check's nprobe, above or below the option, unless the option was raised since the build.
          const nprobe = servedSetting(opts.nprobe, chosen?.nprobe, chosen?.configured);
          got = await w.call<Opened>("open", { file, nprobe, chosen, mmap: opts.mmap });
          if (got.unmapped) ctx.log.warn("faiss: inverted lists loaded into this process's heap, not shared: FAISS could not map the index file", { file, error: got.unmapped });
          const build = faissNodeBuild();
          const what = [
            !build.leaksFixed && "leaks a copy of the index on every load and its queries on every search",
            got.mapped && build.prefetches && "prefetches memory-mapped inverted lists, which nearly triples the CPU of each search",
            got.mapped && !build.readOnly && "maps the index file writable",
          ].filter(Boolean);
          if (what.length) ctx.log.warn(`faiss: this faiss-node build ${what.join(", and ")}; build it with scripts/build-faiss-node.sh`, { file });
          if (got.dims !== info.dims) throw fail(`${file} holds ${got.dims}-dim vectors but the index version says ${info.dims}`);
          if (got.count !== info.count) throw fail(`${file} holds ${got.count} vectors but the index version says ${info.count}`);
        } catch (err) {
          await w.close();
          throw err instanceof ApfaError ? err : fail(`cannot open ${file}: ${(err as Error).message}`, err);
        }
        return faissSearcher(w, info.dims, info.count, got.bytes);
      },
    };
  },
});

/** What the worker's `open` reports: the index's shape, its bytes in the heap, whether its lists are mapped, and why not. */
interface Opened {
  count: number;
  dims: number;
  bytes: number;
  mapped: boolean;
  unmapped?: string;
}

/** A search-time setting found in a serialised index (worker's `setting`): its name, byte offset, value and cap. */
interface Setting {
  name: "nprobe" | "ef_search";
  at: number;
  value: number;
  max: number;
}

/** Writes `value` where `s` says the index bytes keep it (nprobe a u64, efSearch an i32, little-endian). */
function writeSetting(bytes: Uint8Array, s: Setting, value: number): void {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (s.name === "nprobe") v.setBigUint64(s.at, BigInt(value), true);
  else v.setInt32(s.at, value, true);
}

/**
 * The recall check's exact truth from FAISS (`truth`, in a worker of its own): for its corpus rows
 * (`recallQueries`) and any logged queries, `RECALL_K + 1` rows each. Only with a faiss-node that takes
 * Float32Arrays (scripts/build-faiss-node.sh's); otherwise undefined, and the check uses usearch's exact search.
 * At 1M × 384 with 800 queries that is ~6e11 multiply-adds: BLAS does them in seconds, one dot product at a time
 * takes most of a minute.
 */
export async function exactTruth(vectors: Float32Array, dims: number, sample: number, logged?: Float32Array): Promise<{ corpus: ExactTruth; logged: ExactTruth } | undefined> {
  if (!faissNodeBuild().f32Arrays) return undefined;
  const count = vectors.length / dims;
  const corpus = recallQueries(vectors, dims, sample).queries;
  const m = logged ? Math.floor(logged.length / dims) : 0;
  const queries = new Float32Array(corpus.length + m * dims);
  queries.set(corpus);
  if (m) queries.set(logged!.subarray(0, m * dims), corpus.length);
  const K = Math.min(RECALL_K + 1, count);
  if (K < 1 || queries.length === 0) return undefined;
  const labels = await once<Int32Array>("truth", { vectors: compact(vectors), dims, queries, k: K });
  const rows = (first: number, n: number): ExactTruth => (q, k) => {
    if (q.length !== n * dims || k > K) throw fail(`recall check: exact truth asked for ${q.length / dims} queries at k ${k}, computed ${n} at ${K}`);
    return Array.from({ length: n }, (_, i) => labels.subarray((first + i) * K, (first + i) * K + k));
  };
  return { corpus: rows(0, corpus.length / dims), logged: rows(corpus.length / dims, m) };
}

/** One call in a worker of its own, ended after it (with it go the FAISS indexes it loaded). */
async function once<T>(op: "build" | "probe" | "truth", args: Record<string, unknown>): Promise<T> {
  const w = spawn();
  try {
    return await w.call<T>(op, args);
  } finally {
    await w.close();
  }
}

/** The recall check's choice stored beside the index; none (older versions, check off) is `undefined`. */
async function readChosen(file: string): Promise<Record<string, number> | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw fail(`cannot read ${file}: ${(err as Error).message}`, err);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === "object" && Object.values(v).every((x) => Number.isInteger(x) && (x as number) >= 1)) return v as Record<string, number>;
  } catch {
    // reported below
  }
  throw fail(`${file} is not a JSON object of positive integer settings: ${text.slice(0, 80)}`);
}

/** A faiss version's searcher; `_calls` (tests) counts FAISS search calls, fewer than searches when they batched. */
export type FaissSearcher = Searcher & { _calls(): number };

function faissSearcher(w: FaissWorker, dims: number, count: number, bytes: number): FaissSearcher {
  let closed = false;
  let calls = 0;
  return {
    _calls: () => calls,
    count,
    dims,
    memoryBytes: bytes, // in the worker's heap: the whole index, or without the inverted lists when they are mapped
    async search(query, k) {
      if (closed) throw fail("search on a closed index");
      if (!(query instanceof Float32Array) || query.length !== dims) {
        throw fail(`query must be a Float32Array of ${dims} floats, got ${query?.length ?? typeof query}`);
      }
      const n = Math.min(Math.floor(k), count);
      if (!(n >= 1)) return { rows: [], scores: [] };
      const r = await w.call<{ rows: number[]; scores: number[]; call: number }>("search", { query: compact(query), k: n });
      calls = Math.max(calls, r.call);
      return { rows: r.rows, scores: r.scores };
    },
    async close() {
      closed = true;
      await w.close();
    },
  };
}
