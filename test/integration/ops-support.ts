/**
 * Shared set-up of the ops-*.test.ts files: a fresh database `apfa_ops_<random>` (dropped by `close`), a temp
 * dir holding a real `pipeline.yaml` (fs store, jsonl corpus, the hash test embedder, flat engine, Postgres
 * notifier, cron schedules disabled unless overridden), the migrated schema and an open Pipeline. Workers are
 * started in process on demand; `file` is what `apfa … -c` gets for the tests that spawn real processes.
 * @module
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { stringify } from "yaml";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import type { Logger } from "../../runtime/contracts.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { openPipeline, type Pipeline } from "../../runtime/pipeline.ts";
import { ACTIVE_STATUSES, createRun, getRun, type RunRow } from "../../runtime/runs.ts";
import { startWorker, type WorkerHandle, type WorkerOptions } from "../../runtime/worker.ts";
import { asDatabase, deepMerge, HASH_EMBEDDER, testConfig, withTestDatabase, type TestDatabase } from "../helpers/pg.ts";

type Obj = Record<string, unknown>;

/** Polls `pred` every 100 ms until it returns something truthy; throws naming `what` after `ms`. */
export async function until<T>(what: string, pred: () => T | Promise<T>, ms = 30_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface OpsEnv {
  dir: string;
  file: string;
  config: PipelineConfig;
  db: TestDatabase;
  pipeline: Pipeline;
  workers: WorkerHandle[];
  /** Rewrites the corpus with `count` documents `doc-0…` whose text names `tag` (a new tag, a new version). */
  writeCorpus(count: number, tag: string): Promise<void>;
  startWorker(opts?: WorkerOptions): Promise<WorkerHandle>;
  runToEnd(trigger?: string): Promise<RunRow>;
  waitForRun(id: string, ms?: number): Promise<RunRow>;
  close(): Promise<void>;
}

export async function openOpsEnv(opts: { overrides?: Obj; docs?: number; log?: Logger } = {}): Promise<OpsEnv> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-ops-"));
  const db = await withTestDatabase({ prefix: "apfa_ops", max: 10 });
  const file = path.join(dir, "pipeline.yaml");
  const base: Obj = {
    version: 1,
    name: "ops",
    database: { url: db.url },
    store: { plugin: "fs", options: { dir: "store" } },
    stages: {
      source: { plugin: "jsonl", options: { path: "corpus.jsonl" } },
      embedder: { plugin: HASH_EMBEDDER },
      index: { plugin: "flat" },
      notifier: { plugin: "postgres", options: { url: db.url } },
    },
    batch_size: 10,
    schedules: { rebuild: { enabled: false }, cleanup: { enabled: false }, stats: { enabled: false } },
    server: { port: 0, swap_poll_s: 1, cache_dir: "cache", auth: { mode: "none" } },
  };
  const text = stringify(deepMerge(base, opts.overrides ?? {}));
  await fsp.writeFile(file, text);
  const writeCorpus = async (count: number, tag: string) => {
    const lines = Array.from({ length: count }, (_, i) => JSON.stringify({ id: `doc-${i}`, text: `budget advice ${i} about ${tag}`, metadata: { n: i } }));
    await fsp.writeFile(path.join(dir, "corpus.jsonl"), lines.join("\n") + "\n");
  };
  await writeCorpus(opts.docs ?? 30, "first");
  let pipeline: Pipeline | undefined;
  try {
    const config = await testConfig(text, { file });
    const log = opts.log ?? silentLogger;
    await migrate(db.pool, log);
    pipeline = await openPipeline(config, log, { db: asDatabase(db) });
    const p = pipeline;
    const env: OpsEnv = {
      dir, file, config, db, pipeline: p, workers: [], writeCorpus,
      async startWorker(o = {}) {
        const w = await startWorker(p, { cron: false, heartbeatMs: 500, ...o });
        env.workers.push(w);
        return w;
      },
      waitForRun: (id, ms = 30_000) =>
        until(`run ${id} to finish`, async () => {
          const r = await getRun(db.pool, id);
          return r && !ACTIVE_STATUSES.includes(r.status) ? r : undefined;
        }, ms),
      async runToEnd(trigger = "test") {
        return env.waitForRun(await createRun(db.pool, config, trigger));
      },
      async close() {
        for (const w of env.workers.splice(0)) await w.stop("test finished").catch(() => {});
        await p.close().catch(() => {});
        await db.drop();
        await fsp.rm(dir, { recursive: true, force: true });
      },
    };
    return env;
  } catch (err) {
    await pipeline?.close().catch(() => {});
    await db.drop().catch(() => {});
    await fsp.rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Waits until graphile-worker no longer holds job `id` (done or failed for good) and its history is written. */
export async function jobFinished(env: OpsEnv, id: string, ms = 30_000): Promise<void> {
  await until(`job ${id} to finish`, async () => {
    const r = await env.db.pool.query(
      `select 1 from apfa.job_history h where h.job_id = $1 and h.outcome in ('success', 'failed')
         and not exists (select 1 from graphile_worker._private_jobs j where j.id = $1 and j.attempts < j.max_attempts)`,
      [id],
    );
    return r.rowCount;
  }, ms);
}

/** Parses a Prometheus text exposition into `name{labels}` → value (labels sorted as printed). */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*(?:\{.*\})?)\s+(\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}
