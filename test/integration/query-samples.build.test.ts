/**
 * A build_index run measures recall on the query vectors the server logged for the run's embedder (and only
 * those), and records both figures in the manifest.
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../runtime/log.ts";
import { followRun } from "../../runtime/progress.ts";
import { createQuerySampler } from "../../runtime/query-samples.ts";
import { createRun } from "../../runtime/runs.ts";
import { embedderKey } from "../../runtime/stages/identity.ts";
import { readManifest } from "../../runtime/versions.ts";
import { startWorker, type WorkerHandle } from "../../runtime/worker.ts";
import { openTestPipeline, type TestPipeline } from "../helpers/pg.ts";

describe("build_index with logged queries", () => {
  let tp: TestPipeline;
  let worker: WorkerHandle;
  beforeAll(async () => {
    tp = await openTestPipeline({ batch_size: 100, stages: { index: { plugin: "hnsw", options: { recall_sample: 50 } }, embedder: { options: { dims: 32 } } } });
    worker = await startWorker(tp.pipeline, { cron: false });
  }, 60_000);
  afterAll(async () => {
    await worker?.stop("test done");
    await tp?.close();
  });

  it("measures recall on the run's embedder's logged queries and records both figures", async () => {
    const embedder = await tp.pipeline.embedder();
    const opts = { db: tp.db.pool, dims: 32, rate: 1, keep: 2000, max_pending: 100, flush_s: 0, log: silentLogger };
    const mine = createQuerySampler({ ...opts, modelKey: await embedderKey(tp.config) });
    const other = createQuerySampler({ ...opts, modelKey: "another-model" });
    for (let i = 0; i < 30; i++) {
      const v = await embedder.embed([`which loan for rate ${i}?`]);
      mine.offer(v);
      other.offer(v);
    }
    other.offer(await embedder.embed(["one more"]));
    expect([await mine.flush(), await other.flush()]).toEqual([30, 31]);

    const docs = Array.from({ length: 400 }, (_, i) => JSON.stringify({ id: `d${String(i).padStart(4, "0")}`, text: `document ${i} about loans and rate ${i % 23}` }));
    await fsp.writeFile(path.join(tp.dir, "docs.jsonl"), docs.join("\n") + "\n");
    const run = await followRun(tp.db.pool, await createRun(tp.db.pool, tp.config, "test", {}), { tty: false, write: () => {}, intervalMs: 50 });
    expect(run.status).toBe("succeeded");
    const m = await readManifest(tp.pipeline.store, run.index_version!);
    // 50 asked, a tenth of the 400 rows held out of the graph.
    expect(m.recall).toMatchObject({ engine: "hnsw", method: "held-out+logged-queries", sample: 40, corpus: { sample: 40 }, queries: { sample: 30 } });
    expect(m.recall!.measured).toBe(Math.min(m.recall!.corpus!.measured, m.recall!.queries!.measured));
  }, 120_000);
});
