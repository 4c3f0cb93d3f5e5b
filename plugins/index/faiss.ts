/**
 * `faiss` index engine: any FAISS index the `index_factory` string describes ("HNSW32", "IVF1024,Flat",
 * "IVF256,PQ48", ...), through the optional faiss-node addon. The artifact is one file, `index.faiss`, written
 * by FAISS itself, so Python's `faiss.read_index` opens it too.
 *
 * faiss-node's calls are synchronous and a search or a build can take long, so every call runs in a
 * `node:worker_threads` worker: a server's event loop stays free while FAISS works. faiss-node is loaded
 * lazily, so pipelines that never use this engine do not need it (`scripts/build-faiss-node.sh` builds it).
 * @module
 */
import { createRequire } from "node:module";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { z } from "zod";
import { definePlugin, type IndexEngine, type Searcher } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { checkVectors } from "./_check.ts";

export const NAME = "faiss";

/** The file `build` writes and `open` reads. */
export const FILE = "index.faiss";

export interface FaissOptions {
  /** FAISS `index_factory` description, e.g. "HNSW32", "IVF1024,Flat", "IVF256,PQ48". @default "HNSW32" */
  factory: string;
  /** Inverted lists probed per search for IVF indexes (ignored by others); more raises recall. @default 16 */
  nprobe: number;
  /** Most rows an index that needs training (IVF, PQ) is trained on; larger sets are sampled evenly. @default 100000 */
  train_rows: number;
}

const options = z.strictObject({
  factory: z.string().min(1).default("HNSW32").describe('FAISS index_factory description, e.g. "HNSW32", "IVF1024,Flat"'),
  nprobe: z.number().int().min(1).default(16).describe("Inverted lists probed per search (IVF indexes only)"),
  train_rows: z.number().int().min(1).default(100_000).describe("Most rows used to train IVF/PQ indexes"),
});

const fail = (msg: string, cause?: unknown) => new ApfaError("index", msg, { cause, where: "index:faiss" });

/** postMessage clones a view's whole ArrayBuffer, so a view into a larger buffer is cut out first. */
const compact = (a: Float32Array) => (a.byteLength === a.buffer.byteLength ? a : a.slice());

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
let faiss, loadError, index = null;
try { faiss = require(workerData.faissPath); } catch (e) { loadError = e; }
const CHUNK = 16384;

// IVF indexes keep nprobe in their header: fourcc "Iw..", d:i32, ntotal:i64, 2 dummy i64, is_trained:u8,
// metric_type:i32 (+ metric_arg:f32 when > 1), then nlist:u64, nprobe:u64. faiss-node has no setter, so the
// bytes are set instead; a stored nprobe outside 1..nlist means this is not that layout and nothing changes.
function setNprobe(buf, nprobe) {
  if (buf.length < 64 || buf.toString("latin1", 0, 2) !== "Iw") return;
  const at = 37 + (buf.readInt32LE(33) > 1 ? 4 : 0);
  const nlist = buf.readBigUInt64LE(at);
  const stored = buf.readBigUInt64LE(at + 8);
  if (nlist < 1n || stored < 1n || stored > nlist) return;
  buf.writeBigUInt64LE(BigInt(Math.min(nprobe, Number(nlist))), at + 8);
}

const ops = {
  build({ vectors, dims, factory, nprobe, trainRows }) {
    const count = vectors.length / dims;
    const idx = faiss.Index.fromFactory(dims, factory, 0 /* METRIC_INNER_PRODUCT */);
    if (!idx.isTrained()) {
      let sample = vectors;
      if (count > trainRows) {
        sample = new Float32Array(trainRows * dims);
        const step = count / trainRows;
        for (let i = 0; i < trainRows; i++) {
          const r = Math.floor(i * step);
          sample.set(vectors.subarray(r * dims, (r + 1) * dims), i * dims);
        }
      }
      idx.train(Array.from(sample));
    }
    for (let r = 0; r < count; r += CHUNK) idx.add(Array.from(vectors.subarray(r * dims, Math.min(count, r + CHUNK) * dims)));
    const buf = idx.toBuffer();
    setNprobe(buf, nprobe);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  },
  open({ file, nprobe }) {
    const buf = fs.readFileSync(file);
    setNprobe(buf, nprobe);
    index = faiss.Index.fromBuffer(buf);
    return { count: index.ntotal(), dims: index.getDimension(), bytes: buf.length };
  },
  search({ query, k }) {
    const r = index.search(Array.from(query), k);
    const rows = [], scores = [];
    for (let i = 0; i < r.labels.length; i++) if (r.labels[i] >= 0) { rows.push(r.labels[i]); scores.push(r.distances[i]); }
    return { rows, scores };
  },
};

parentPort.on("message", ({ id, op, args }) => {
  try {
    if (loadError) throw new Error("faiss-node failed to load: " + loadError.message);
    parentPort.postMessage({ id, ok: true, result: ops[op](args) });
  } catch (e) {
    parentPort.postMessage({ id, ok: false, message: String((e && e.message) || e) });
  }
});
`;

interface FaissWorker {
  call<T>(op: "build" | "open" | "search", args: Record<string, unknown>): Promise<T>;
  close(): Promise<void>;
}

/** One worker thread plus request/response bookkeeping. It only keeps the process alive while a call is pending. */
function spawn(): FaissWorker {
  const worker = new Worker(WORKER, { eval: true, workerData: { faissPath: faissNodePath() } });
  worker.unref();
  const pending = new Map<number, { resolve: (v: never) => void; reject: (e: unknown) => void }>();
  let seq = 0;
  const settleAll = (err: unknown) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on("message", (msg: { id: number; ok: boolean; result?: never; message?: string }) => {
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (pending.size === 0) worker.unref();
    if (msg.ok) p.resolve(msg.result as never);
    else p.reject(fail(`FAISS: ${msg.message}`));
  });
  worker.on("error", (err) => settleAll(fail(`FAISS worker failed: ${err.message}`, err)));
  worker.on("exit", (code) => settleAll(fail(`FAISS worker exited (code ${code})`)));
  return {
    call(op, args) {
      return new Promise((resolve, reject) => {
        const id = ++seq;
        pending.set(id, { resolve, reject });
        worker.ref();
        worker.postMessage({ id, op, args });
      });
    },
    async close() {
      await worker.terminate();
    },
  };
}

export default definePlugin({
  kind: "index",
  name: NAME,
  description: "Any FAISS index_factory index via faiss-node (optional), run in a worker thread",
  options,
  create(opts: FaissOptions): IndexEngine {
    return {
      metric: "ip",
      async build(vectors, dims) {
        checkVectors(vectors, dims, "index:faiss");
        const w = spawn();
        try {
          const bytes = await w.call<Uint8Array>("build", {
            vectors: compact(vectors),
            dims,
            factory: opts.factory,
            nprobe: opts.nprobe,
            trainRows: opts.train_rows,
          });
          return { files: { [FILE]: bytes }, main: FILE };
        } finally {
          await w.close();
        }
      },

      async open(dir, info) {
        const w = spawn();
        const file = path.join(dir, FILE);
        let got: { count: number; dims: number; bytes: number };
        try {
          got = await w.call<{ count: number; dims: number; bytes: number }>("open", { file, nprobe: opts.nprobe });
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

function faissSearcher(w: FaissWorker, dims: number, count: number, bytes: number): Searcher {
  let closed = false;
  return {
    count,
    dims,
    memoryBytes: bytes, // FAISS holds the whole file's content in the worker's heap
    async search(query, k) {
      if (closed) throw fail("search on a closed index");
      if (!(query instanceof Float32Array) || query.length !== dims) {
        throw fail(`query must be a Float32Array of ${dims} floats, got ${query?.length ?? typeof query}`);
      }
      const n = Math.min(Math.floor(k), count);
      if (!(n >= 1)) return { rows: [], scores: [] };
      return w.call("search", { query: compact(query), k: n });
    },
    async close() {
      closed = true;
      await w.close();
    },
  };
}
