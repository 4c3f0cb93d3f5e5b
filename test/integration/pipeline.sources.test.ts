/**
 * A whole run (orchestrator → embed_batch fan-out → fan-in → build_index → published version) with the hash test
 * embedder against the other real backends: a Postgres-query source of 20,000 rows, and the s3 store on a real
 * S3 server (s3rver). One fresh database for the file; each test opens its own pipeline on it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Store } from "../../runtime/contracts.ts";
import { layout } from "../../runtime/keys.ts";
import { silentLogger } from "../../runtime/log.ts";
import { createRun, getRun, type RunRow } from "../../runtime/runs.ts";
import { startWorker, type WorkerHandle } from "../../runtime/worker.ts";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import s3Store from "../../plugins/store/s3.ts";
import type { HashEmbedder } from "../fixtures/plugins/hash-embedder.ts";
import { asDatabase, HASH_EMBEDDER, testConfig, withTestDatabase, type TestDatabase } from "../helpers/pg.ts";
import { migrate } from "../../runtime/migrate.ts";
import { createPlugin, openPipeline, type Pipeline } from "../../runtime/pipeline.ts";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import * as os from "node:os";
import { startS3, type TestS3 } from "../helpers/s3.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DIMS = 32;
interface TestPipeline {
  pipeline: Pipeline;
  config: PipelineConfig;
  db: TestDatabase;
  dir: string;
  close(): Promise<void>;
}

/**
 * A pipeline on the file's database with the given store and source (whole, not deep-merged over the fs/jsonl
 * defaults of openTestPipeline, whose option objects would leak into these plugins' strict options); hash
 * embedder, flat index, postgres notifier. `env` is what the store plugin sees (s3 credentials).
 */
async function openWith(stages: { store: object; source: object; embedder?: object }, extra: object, env: Record<string, string> = {}): Promise<TestPipeline> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-sources-"));
  const config = await testConfig(
    {
      name: "test",
      database: { url: db.url },
      store: stages.store,
      stages: {
        source: stages.source,
        embedder: { plugin: HASH_EMBEDDER, options: { dims: DIMS, ...stages.embedder } },
        index: { plugin: "flat" },
        notifier: { plugin: "postgres", options: { url: db.url } },
      },
      ...extra,
    },
    { file: path.join(dir, "pipeline.yaml"), env },
  );
  await migrate(db.pool, silentLogger);
  const store = await createPlugin<Store>("store", config.store, { baseDir: config.baseDir, log: silentLogger, env });
  const pipeline = await openPipeline(config, silentLogger, { db: asDatabase(db), store });
  return {
    pipeline,
    config,
    db,
    dir,
    async close() {
      await pipeline.close().catch(() => {});
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

type Doc = { id: string; text: string; metadata: Record<string, unknown> };

async function finished(tp: TestPipeline, runId: string, ms = 150_000): Promise<RunRow> {
  const until = Date.now() + ms;
  for (;;) {
    const r = await getRun(tp.db.pool, runId);
    if (r && ["succeeded", "failed", "cancelled"].includes(r.status)) return r;
    if (Date.now() > until) throw new Error(`timed out waiting for run ${runId}; last: ${JSON.stringify(r)}`);
    await sleep(100);
  }
}

const parseDocs = (bytes: Uint8Array): Doc[] => new TextDecoder().decode(bytes).split("\n").filter(Boolean).map((l) => JSON.parse(l) as Doc);

/** Runs the pipeline once on an in-process worker serving every queue; returns the finished run. */
async function fullRun(tp: TestPipeline): Promise<RunRow> {
  let worker: WorkerHandle | undefined;
  try {
    worker = await startWorker(tp.pipeline, { cron: false });
    const runId = await createRun(tp.db.pool, tp.config, "test");
    const run = await finished(tp, runId);
    return run;
  } finally {
    await worker?.stop("test done");
  }
}

/** The run's published version: its row, the `latest` pointer and its docs.jsonl, read through `store`. */
async function published(tp: TestPipeline, run: RunRow, store: Store) {
  const row = (await tp.db.pool.query<{ version: string; count: string; dims: number; published: boolean }>(
    "select version, count, dims, published_at is not null as published from apfa.index_versions where run_id = $1", [run.id],
  )).rows;
  const latest = JSON.parse(new TextDecoder().decode(await store.get(layout.latest))) as { version: string };
  const docs = parseDocs(await store.get(layout.indexFile(run.index_version!, "docs.jsonl")));
  return { row, latest, docs };
}

let db: TestDatabase;
beforeAll(async () => {
  db = await withTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

describe("a run from a Postgres query of 20,000 rows", () => {
  const ROWS = 20_000;
  const BATCH = 2000;
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    await tp?.close();
  });

  it("embeds every row once in 10 batches and publishes a version with the other columns as metadata", async () => {
    await db.pool.query("create schema s; create table s.t (id text primary key, body text not null, category text not null)");
    await db.pool.query(
      `insert into s.t (id, body, category)
       select 'row-' || lpad(i::text, 5, '0'), 'row ' || i || ' is about ' || md5(i::text), 'cat-' || (i % 7)
         from generate_series(0, $1 - 1) as i`,
      [ROWS],
    );
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-sources-fs-"));
    tp = await openWith(
      {
        store: { plugin: "fs", options: { dir: path.join(dir, "store") } },
        source: { plugin: "postgres", options: { url: db.url, query: "select id, body, category from s.t order by id", id_column: "id", text_column: "body" } },
        embedder: { delay_ms: 20 },
      },
      { batch_size: BATCH, queues: { embedding: 4 } },
    );
    const close = tp.close;
    tp.close = async () => {
      await close();
      await fsp.rm(dir, { recursive: true, force: true });
    };
    const run = await fullRun(tp);
    expect(run.error).toBeNull();
    expect(run.status).toBe("succeeded");
    expect({ total: run.batches_total, done: run.batches_done, failed: run.batches_failed }).toEqual({ total: 10, done: 10, failed: 0 });
    expect(Number(run.docs_read)).toBe(ROWS);
    expect(Number(run.docs_embedded)).toBe(ROWS);
    expect(Number(run.docs_skipped)).toBe(0);
    const batches = (await db.pool.query<{ n: number; docs: number }>("select n, docs from apfa.batches where run_id = $1 order by n", [run.id])).rows;
    expect(batches).toEqual(Array.from({ length: 10 }, (_, n) => ({ n, docs: BATCH })));

    const embedder = (await tp.pipeline.embedder()) as HashEmbedder;
    expect(embedder.stats.maxActive).toBeGreaterThan(1);
    expect(embedder.stats.maxActive).toBeLessThanOrEqual(4);

    const { row, latest, docs } = await published(tp, run, tp.pipeline.store);
    expect(row).toEqual([{ version: run.index_version, count: String(ROWS), dims: DIMS, published: true }]);
    expect(latest.version).toBe(run.index_version);
    const id = (i: number) => `row-${String(i).padStart(5, "0")}`;
    // Every id exactly once, in the query's order.
    expect(docs.map((d) => d.id)).toEqual(Array.from({ length: ROWS }, (_, i) => id(i)));
    for (const i of [0, 1, 6, 7, 12_345, ROWS - 1]) {
      expect(docs[i].metadata).toEqual({ category: `cat-${i % 7}` });
      expect(docs[i].text).toMatch(new RegExp(`^row ${i} is about [0-9a-f]{32}$`));
    }
  }, 240_000);
});

describe("a run into the s3 store on s3rver", () => {
  const DOCS = 5000;
  const BATCH = 500;
  let tp: TestPipeline | undefined;
  let s3: TestS3 | undefined;
  let reader: Store | undefined;
  afterAll(async () => {
    await tp?.close();
    await reader?.close?.();
    await s3?.cleanup();
  });

  it("writes the batch artifacts and the published version to the bucket", async () => {
    s3 = await startS3();
    const storeOpts = { endpoint: s3.endpoint, bucket: s3.bucket };
    tp = await openWith(
      { store: { plugin: "s3", options: storeOpts }, source: { plugin: "jsonl", options: { path: "docs.jsonl" } } },
      { batch_size: BATCH, queues: { embedding: 4 } },
      s3.env,
    );
    expect(tp.pipeline.store.describe()).toBe(`s3:${s3.endpoint}/${s3.bucket}/`);
    const id = (i: number) => `doc-${String(i).padStart(5, "0")}`;
    const lines = Array.from({ length: DOCS }, (_, i) => JSON.stringify({ id: id(i), text: `document ${i}: ${"lorem ipsum ".repeat(1 + (i % 5))}`, kind: i % 2 ? "loan" : "account" }));
    await fsp.writeFile(path.join(tp.dir, "docs.jsonl"), lines.join("\n") + "\n");

    const run = await fullRun(tp);
    expect(run.error).toBeNull();
    expect(run.status).toBe("succeeded");
    expect({ total: run.batches_total, done: run.batches_done }).toEqual({ total: 10, done: 10 });
    expect(Number(run.docs_embedded)).toBe(DOCS);

    // Read back through a separate client, so what is checked is what the server holds.
    reader = await s3Store.create(s3Store.options.parse(storeOpts), { baseDir: tp.dir, log: silentLogger, env: s3.env });
    const keys: string[] = [];
    for await (const o of reader.list(layout.batchPrefix(run.id))) keys.push(o.key);
    const npy = keys.filter((k) => k.endsWith(".npy")).sort();
    const docKeys = keys.filter((k) => k.endsWith(".docs.jsonl")).sort();
    expect(npy).toEqual(Array.from({ length: 10 }, (_, n) => layout.batchVectors(run.id, n)));
    expect(docKeys).toEqual(Array.from({ length: 10 }, (_, n) => layout.batchDocs(run.id, n)));
    const npyStat = await reader.stat(layout.batchVectors(run.id, 0));
    expect(npyStat?.size).toBeGreaterThan(BATCH * DIMS * 4);

    const { row, latest, docs } = await published(tp, run, reader);
    expect(latest.version).toBe(run.index_version);
    expect(row).toEqual([{ version: run.index_version, count: String(DOCS), dims: DIMS, published: true }]);
    expect(docs.map((d) => d.id)).toEqual(Array.from({ length: DOCS }, (_, i) => id(i)));
    expect(new Set(docs.map((d) => d.id)).size).toBe(DOCS);
    expect(docs[1].metadata).toEqual({ kind: "loan" });
  }, 240_000);
});
