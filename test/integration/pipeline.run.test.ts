/**
 * A whole run against a real Postgres: 5,000 documents (plus one of each kind of bad document) in batches of
 * 500 on an embedding queue of concurrency 4, through the fs store and the flat index. It checks what a user
 * relies on: every document once, stats that reconcile, one build_index even when the last two batches commit
 * together, no duplicate batches when the orchestrator dies half-way and is retried, store hiccups absorbed
 * without a second artifact, and .npy files numpy reads.
 */
import { spawnSync } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Source, Store } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { layout } from "../../runtime/keys.ts";
import { createRun, getRun, type RunRow } from "../../runtime/runs.ts";
import { startWorker, type WorkerHandle } from "../../runtime/worker.ts";
import { sampleTexts, testEmbedder } from "../conformance/embedder.ts";
import hashEmbedder, { hashVector, type HashEmbedder } from "../fixtures/plugins/hash-embedder.ts";
import { openTestPipeline, type TestPipeline } from "../helpers/pg.ts";
import { silentLogger } from "../../runtime/log.ts";

testEmbedder("hash-embedder (test fixture)", async () => hashEmbedder.create(hashEmbedder.options.parse({}), { baseDir: "/", log: silentLogger, env: {} }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DOCS = 5000;
const BATCH = 500;
const DIMS = 64;
const id = (i: number) => `doc-${String(i).padStart(5, "0")}`;
const TEXTS = sampleTexts(DOCS);

/** 5,000 valid lines with 11 bad ones mixed in, and the skip counts they must produce. */
function corpus(): { text: string; skipped: Record<string, number> } {
  const bad: Record<number, string[]> = {
    10: ["{broken json"],
    777: [JSON.stringify({ text: "a document without an id" })],
    1200: [JSON.stringify({ id: "empty-1", text: "" })],
    2500: [JSON.stringify({ id: id(10), text: "a later copy of doc 10" })],
    3000: ['"a JSON string, not an object"'],
    3333: [JSON.stringify({ id: "empty-2", text: "   \t " })],
    4000: [JSON.stringify({ id: "", text: "an empty id" })],
    4100: [JSON.stringify({ id: id(4000), text: "duplicate" })],
    4500: [JSON.stringify({ id: id(0), text: "duplicate of the first" })],
    4998: [JSON.stringify({ id: id(4998), text: "immediate duplicate" }), JSON.stringify({ id: "empty-3", text: "" })],
  };
  const lines: string[] = [];
  for (let i = 0; i < DOCS; i++) {
    lines.push(JSON.stringify({ id: id(i), text: TEXTS[i], kind: i % 2 ? "loan" : "account" }));
    lines.push(...(bad[i] ?? []));
  }
  return { text: lines.join("\n") + "\n", skipped: { malformed: 2, missing_id: 2, empty_text: 3, duplicate_id: 4 } };
}

async function waitFor<T>(get: () => Promise<T>, ok: (v: T) => boolean, what: string, ms = 90_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await sleep(50);
  }
}

/** Fault injection on the fs store, aimed at one run: a flaky put and a barrier before the last two commits. */
const faults = {
  run: "",
  /** `.npy` of this batch fails its first two puts. */
  flakyBatch: 3,
  flakyFailures: 0,
  /** These batches wait at the barrier just before their last put (and then their commit). */
  barrierBatches: [8, 9],
  arrived: new Set<number>(),
  barrier: undefined as Promise<boolean> | undefined,
  released: [] as number[],
};

let tp: TestPipeline;

function faultyStore(inner: Store): Store {
  return {
    describe: () => `faulty(${inner.describe()})`,
    get: (k) => inner.get(k),
    getStream: (k) => inner.getStream(k),
    stat: (k) => inner.stat(k),
    list: (p) => inner.list(p),
    delete: (k) => inner.delete(k),
    close: () => inner.close?.() ?? Promise.resolve(),
    async put(key, data) {
      if (faults.run) {
        if (key === layout.batchVectors(faults.run, faults.flakyBatch) && faults.flakyFailures < 2) {
          faults.flakyFailures++;
          throw new ApfaError("store", `injected failure ${faults.flakyFailures} of put ${key}`);
        }
        const n = faults.barrierBatches.find((b) => key === layout.batchVectors(faults.run, b));
        if (n !== undefined) {
          faults.arrived.add(n);
          // One shared poller opens the barrier for both at once: when both have arrived and every other batch
          // of the run is done, so these two are the last to commit and do so together.
          faults.barrier ??= (async () => {
            const until = Date.now() + 60_000;
            while (Date.now() < until) {
              const others = await tp.db.pool.query<{ n: string }>(
                "select count(*) as n from apfa.batches where run_id = $1 and status = 'done' and not (n = any($2))",
                [faults.run, faults.barrierBatches],
              );
              if (faults.arrived.size === 2 && Number(others.rows[0].n) === DOCS / BATCH - 2) return true;
              await sleep(10);
            }
            return false;
          })();
          await faults.barrier;
          faults.released.push(Date.now());
        }
      }
      return inner.put(key, data);
    },
  };
}

/** Every file under the run's batch directory in the store, by name (temp files included). */
async function batchFiles(runId: string): Promise<string[]> {
  return (await fsp.readdir(path.join(tp.dir, "store", "batches", runId))).sort();
}

async function docsOf(runId: string): Promise<Array<{ id: string; text: string; metadata: Record<string, unknown> }>> {
  const out = [];
  for (let n = 0; n < DOCS / BATCH; n++) {
    const text = new TextDecoder().decode(await tp.pipeline.store.get(layout.batchDocs(runId, n)));
    out.push(...text.trim().split("\n").map((l) => JSON.parse(l)));
  }
  return out;
}

const expectedFiles = (n: number) =>
  Array.from({ length: n }, (_, i) => String(i).padStart(6, "0")).flatMap((b) => [`${b}.docs.jsonl`, `${b}.input.jsonl`, `${b}.npy`]).sort();

describe("a 5,000-document run", () => {
  const workers: WorkerHandle[] = [];
  let expectedSkips: Record<string, number>;

  beforeAll(async () => {
    tp = await openTestPipeline(
      { batch_size: BATCH, queues: { embedding: 4 }, run: { max_attempts: 5 }, stages: { embedder: { options: { dims: DIMS, fail_first: 1, delay_ms: 30 } } } },
      { wrapStore: faultyStore },
    );
    const c = corpus();
    expectedSkips = c.skipped;
    await fsp.writeFile(path.join(tp.dir, "docs.jsonl"), c.text);
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop("test done")));
    await tp?.close();
  });

  it("embeds every document once in 10 batches, reconciles the stats and enqueues build_index exactly once", async () => {
    // Embedding only, so the fan-in's build_index job can be inspected before anything runs it.
    workers.push(await startWorker(tp.pipeline, { queues: ["embedding"], cron: false }));
    const runId = await createRun(tp.db.pool, tp.config, "test");
    faults.run = runId;

    await waitFor(() => getRun(tp.db.pool, runId), (r) => r?.status !== "enumerating" && r?.status !== "pending" && r?.status !== "embedding", "the fan-in");
    const jobs = await tp.db.pool.query<{ task: string; queue_name: string | null; key: string; revision: number }>(
      `select t.identifier as task, q.queue_name, j.key, j.revision from graphile_worker._private_jobs j
         join graphile_worker._private_tasks t on t.id = j.task_id
         left join graphile_worker._private_job_queues q on q.id = j.job_queue_id
        where t.identifier = 'build_index'`,
    );
    // revision 0: add_job ran once for the key (a second call with the same key would have bumped it).
    expect(jobs.rows).toEqual([{ task: "build_index", queue_name: "indexing", key: `build_index:${runId}`, revision: 0 }]);

    workers.push(await startWorker(tp.pipeline, { queues: ["indexing"], cron: false }));
    const run = (await waitFor(() => getRun(tp.db.pool, runId), (r) => r?.status === "succeeded" || r?.status === "failed", "the run to finish")) as RunRow;
    expect(run.error).toBeNull();
    expect(run.status).toBe("succeeded");

    // Stats reconcile: read = embedded + skipped, each skip counted by reason.
    expect(Number(run.docs_read)).toBe(DOCS + 11);
    expect(Number(run.docs_embedded)).toBe(DOCS);
    expect(Number(run.docs_skipped)).toBe(11);
    expect(Number(run.docs_read)).toBe(Number(run.docs_embedded) + Number(run.docs_skipped));
    expect(run.skipped).toEqual(expectedSkips);
    expect({ total: run.batches_total, done: run.batches_done, failed: run.batches_failed }).toEqual({ total: 10, done: 10, failed: 0 });

    // Every id exactly once across the batch artifacts, in source order; a duplicate keeps its first text.
    const docs = await docsOf(runId);
    expect(docs.map((d) => d.id)).toEqual(Array.from({ length: DOCS }, (_, i) => id(i)));
    expect(docs[10].text).toBe(TEXTS[10]);
    expect(docs[1].metadata).toEqual({ kind: "loan" });

    // The last two batches really did commit together, last.
    expect(faults.arrived).toEqual(new Set([8, 9]));
    expect(faults.released).toHaveLength(2);
    const fin = (await tp.db.pool.query<{ n: number; finished_at: Date; attempts: number }>(
      "select n, finished_at, attempts from apfa.batches where run_id = $1 order by n", [runId],
    )).rows;
    // The barrier opened (both were held in flight until every other batch was done): no clock bound needed.
    expect(await faults.barrier).toBe(true);
    const t = (n: number) => fin[n].finished_at.getTime();
    for (let n = 0; n < 8; n++) expect(t(n)).toBeLessThanOrEqual(Math.min(t(8), t(9)));

    // One build_index in the history too, and nothing left in the queue.
    const hist = async () => (await tp.db.pool.query<{ task: string; queue: string; outcome: string; n: string }>(
      "select task, queue, outcome, count(*) as n from apfa.job_history where run_id = $1 group by 1, 2, 3 order by 1, 3", [runId],
    )).rows;
    const h = await waitFor(hist, (rows) => rows.some((r) => r.task === "build_index"), "build_index in job_history");
    expect(h).toEqual([
      { task: "build_index", queue: "indexing", outcome: "success", n: "1" },
      { task: "embed_all", queue: "embedding", outcome: "success", n: "1" },
      // fail_first: 1 — the first embed call failed, so one batch took a second attempt.
      { task: "embed_batch", queue: "embedding", outcome: "retry", n: "1" },
      { task: "embed_batch", queue: "embedding", outcome: "success", n: "10" },
    ]);
    expect(fin.map((b) => b.attempts).sort()).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
    await waitFor(async () => (await tp.db.pool.query("select 1 from graphile_worker.jobs")).rowCount, (n) => n === 0, "the queue to drain");

    const embedder = (await tp.pipeline.embedder()) as HashEmbedder;
    expect(embedder.stats.failed).toBe(1);
    expect(embedder.stats.maxActive).toBeGreaterThan(1);
    expect(embedder.stats.maxActive).toBeLessThanOrEqual(4);

    const version = await tp.db.pool.query("select count, dims, model_id, published_at is not null as published from apfa.index_versions where run_id = $1", [runId]);
    expect(version.rows).toEqual([{ count: String(DOCS), dims: DIMS, model_id: `hash-trigram-${DIMS}`, published: true }]);
  }, 180_000);

  it("absorbs two failed puts of a batch: the batch succeeds with one artifact and no temp files", async () => {
    const runId = faults.run;
    expect(faults.flakyFailures).toBe(2);
    expect(await batchFiles(runId)).toEqual(expectedFiles(10));
    const b = await tp.db.pool.query("select status, attempts, error from apfa.batches where run_id = $1 and n = $2", [runId, faults.flakyBatch]);
    expect(b.rows).toEqual([{ status: "done", attempts: 1, error: null }]);
  });

  it("writes .npy files in numpy format 1.0, <f4, rows matching the documents", async () => {
    const runId = faults.run;
    const bytes = await tp.pipeline.store.get(layout.batchVectors(runId, 0));
    expect([...bytes.subarray(0, 6)]).toEqual([0x93, ..."NUMPY"].map((c) => (typeof c === "number" ? c : c.charCodeAt(0))));
    expect([bytes[6], bytes[7]]).toEqual([1, 0]);
    const hlen = bytes[8] | (bytes[9] << 8);
    const header = new TextDecoder("latin1").decode(bytes.subarray(10, 10 + hlen));
    expect(header).toMatch(/^\{'descr': '<f4', 'fortran_order': False, 'shape': \(500, 64\), \} *\n$/);
    expect((10 + hlen) % 64).toBe(0);
    expect(bytes.byteLength).toBe(10 + hlen + BATCH * DIMS * 4);
    const data = new Float32Array(bytes.slice(10 + hlen).buffer);
    const docs = (await docsOf(runId)).slice(0, BATCH);
    for (const r of [0, 1, 250, 499]) {
      const want = hashVector(docs[r].text, DIMS);
      const got = data.subarray(r * DIMS, (r + 1) * DIMS);
      for (let j = 0; j < DIMS; j++) expect(got[j]).toBeCloseTo(want[j], 6);
    }
  });

  const numpy = spawnSync("python3", ["-c", "import numpy"], { stdio: "ignore" }).status === 0;
  it.skipIf(!numpy)("numpy's np.load reads a batch .npy with the right shape and values", async () => {
    const file = path.join(tp.dir, "store", layout.batchVectors(faults.run, 9));
    const r = spawnSync("python3", ["-c", "import numpy as np, sys, json; a = np.load(sys.argv[1]); print(json.dumps([str(a.dtype), list(a.shape), float(a[0].dot(a[0])), [float(x) for x in a[3][:4]]]))", file], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    const [dtype, shape, norm, row3] = JSON.parse(r.stdout) as [string, number[], number, number[]];
    expect([dtype, shape]).toEqual(["float32", [BATCH, DIMS]]);
    expect(norm).toBeCloseTo(1, 5);
    const want = hashVector(TEXTS[9 * BATCH + 3], DIMS);
    row3.forEach((x, j) => expect(x).toBeCloseTo(want[j], 6));
  });

  it("a retried orchestrator that died after 5 pages enqueues no batch twice and loses none", async () => {
    faults.run = "";
    if (!workers.length) workers.push(await startWorker(tp.pipeline, { cron: false })); // when run alone (-t)
    const real = tp.pipeline.source;
    let attempt = 0;
    tp.pipeline.source = async (): Promise<Source> => {
      const src = await real();
      const mine = ++attempt;
      return {
        close: () => src.close?.() ?? Promise.resolve(),
        async *pages(opts) {
          let n = 0;
          for await (const page of src.pages(opts)) {
            if (mine === 1 && n === 5) throw new Error("orchestrator killed mid-enqueue (test)");
            n++;
            yield page;
          }
        },
      };
    };
    const embedder = (await tp.pipeline.embedder()) as HashEmbedder;
    const failedBefore = embedder.stats.failed;
    try {
      // Full: the corpus is unchanged since the first run, which an incremental run would simply carry over.
      const runId = await createRun(tp.db.pool, tp.config, "test", { full: true });
      // After the first attempt dies, some batches exist and their jobs may already run.
      await waitFor(async () => (await tp.db.pool.query("select 1 from apfa.job_history where run_id = $1 and task = 'embed_all'", [runId])).rowCount, (n) => n! > 0, "the first attempt to fail");
      const partial = (await tp.db.pool.query<{ n: number }>("select n from apfa.batches where run_id = $1 order by n", [runId])).rows.map((r) => r.n);
      expect(partial).toEqual([0, 1, 2, 3]);

      const run = (await waitFor(() => getRun(tp.db.pool, runId), (r) => r?.status === "succeeded" || r?.status === "failed", "the retried run")) as RunRow;
      expect(run.error).toBeNull();
      expect(attempt).toBe(2);
      expect(Number(run.docs_read)).toBe(DOCS + 11); // counted once, by the attempt that finished
      expect(Number(run.docs_embedded)).toBe(DOCS);
      expect(run.skipped).toEqual(expectedSkips);

      const batches = (await tp.db.pool.query<{ n: number; attempts: number; docs: number }>("select n, attempts, docs from apfa.batches where run_id = $1 order by n", [runId])).rows;
      // Run alone (-t), this run also meets the embedder's fail_first: a batch retry, not a duplicate batch.
      const retried = embedder.stats.failed - failedBefore;
      expect(batches.map((b) => ({ n: b.n, docs: b.docs }))).toEqual(Array.from({ length: 10 }, (_, n) => ({ n, docs: BATCH })));
      expect(batches.reduce((a, b) => a + b.attempts, 0)).toBe(10 + retried);
      await waitFor(async () => (await tp.db.pool.query("select 1 from apfa.job_history where run_id = $1 and task = 'build_index'", [runId])).rowCount, (n) => n! > 0, "build_index history");
      const h = (await tp.db.pool.query<{ task: string; outcome: string; n: string }>(
        "select task, outcome, count(*) as n from apfa.job_history where run_id = $1 group by 1, 2 order by 1, 2", [runId],
      )).rows;
      expect(h).toEqual([
        { task: "build_index", outcome: "success", n: "1" },
        { task: "embed_all", outcome: "retry", n: "1" },
        { task: "embed_all", outcome: "success", n: "1" },
        ...(retried ? [{ task: "embed_batch", outcome: "retry", n: String(retried) }] : []),
        { task: "embed_batch", outcome: "success", n: "10" },
      ]);
      expect(await batchFiles(runId)).toEqual(expectedFiles(10));
      expect((await docsOf(runId)).map((d) => d.id)).toEqual(Array.from({ length: DOCS }, (_, i) => id(i)));
    } finally {
      tp.pipeline.source = real;
    }
  }, 180_000);
});
