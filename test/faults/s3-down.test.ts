/**
 * The S3 server (s3rver, real protocol) goes down in the middle of a run: uploads retry with backoff — within
 * the job and through graphile-worker's retries — and the run completes once it is back, every id exactly once.
 */
import * as path from "node:path";
import { afterAll, expect, it } from "vitest";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { createRun } from "../../runtime/runs.ts";
import { withTestDatabase, type TestDatabase } from "../helpers/pg.ts";
import { startS3, type TestS3 } from "../helpers/s3.ts";
import { FIXTURES, finished, makeProject, ready, sleep, spawnWorker, waitFor, type WorkerProc } from "./harness.ts";
import { assertExactlyOnce } from "./harness.ts";
import { collect } from "../../runtime/streams.ts";
import s3Store from "../../plugins/store/s3.ts";

let db: TestDatabase | undefined;
let s3: TestS3 | undefined;
const workers: WorkerProc[] = [];

afterAll(async () => {
  for (const w of workers) if (w.proc.exitCode === null) w.proc.kill("SIGKILL");
  await Promise.all(workers.map((w) => w.exited));
  await db?.drop();
  await s3?.cleanup();
});

it("a run survives the store going away for several seconds", async () => {
  db = await withTestDatabase({ prefix: "apfa_fault" });
  s3 = await startS3();
  const storeOpts = { endpoint: s3.endpoint, bucket: s3.bucket, retries: 2 };
  const p = await makeProject(3000, {
    database: { url: db.url },
    store: { plugin: "s3", options: storeOpts },
    queues: { embedding: 2 },
    batch_size: 150,
    stages: {
      source: { plugin: "jsonl", options: { path: "docs.jsonl" } },
      embedder: { plugin: path.join(FIXTURES, "hash-embedder.ts"), options: { delay_ms: 150 } },
      notifier: { plugin: "postgres", options: { url: db.url } },
    },
    run: { max_attempts: 25 },
  });
  await migrate(db.pool, silentLogger);
  workers.push(spawnWorker(p.yaml, s3.env), spawnWorker(p.yaml, s3.env));
  await Promise.all(workers.map((w) => ready(w)));
  const runId = await createRun(db.pool, p.config, "fault-test");
  await waitFor(async () => (await db!.pool.query("select 1 from apfa.batches where run_id = $1 and status = 'done'", [runId])).rowCount! > 2, 60_000, "some batches done");
  await s3.stop();
  await sleep(6000);
  await s3.restart();
  const run = await finished(db.pool, runId, 240_000);
  expect(run.status, run.error ?? "").toBe("succeeded");
  // Some uploads failed while it was down and were retried.
  const logs = workers.flatMap((w) => w.logs).join("\n");
  expect(logs).toMatch(/retrying|will retry/);
  const store = await s3Store.create(s3Store.options.parse(storeOpts), { baseDir: p.dir, log: silentLogger, env: s3.env });
  const docs = new TextDecoder().decode(await collect(await store.getStream(`indexes/${run.index_version}/docs.jsonl`)));
  assertExactlyOnce(docs.split("\n").filter(Boolean).map((l) => (JSON.parse(l) as { id: string }).id), p.ids);
}, 400_000);
