/**
 * SIGKILL one of three worker processes at different points of a 10,000-document run — while embedding,
 * while uploading artifacts, while building the index. The reaper releases the dead worker's jobs, the run
 * completes, and the published index holds every document id exactly once. Then the same during an
 * incremental run that re-embeds the changed 10 % of the corpus (edits, inserts and deletes mixed).
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterEach, expect, it } from "vitest";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { createRun } from "../../runtime/runs.ts";
import { withTestDatabase, type TestDatabase } from "../helpers/pg.ts";
import { assertExactlyOnce, FIXTURES, finished, indexIds, makeProject, ready, sleep, spawnWorker, waitFor, type WorkerProc } from "./harness.ts";

let db: TestDatabase | undefined;
let workers: WorkerProc[] = [];

afterEach(async () => {
  for (const w of workers) if (w.proc.exitCode === null) w.proc.kill("SIGKILL");
  await Promise.all(workers.map((w) => w.exited));
  workers = [];
  await db?.drop();
  db = undefined;
});

/** The pid of the worker process holding a locked job of `task`, if any. */
async function holderOf(task: string): Promise<number | undefined> {
  const r = await db!.pool.query<{ pid: number }>(
    `select w.pid from graphile_worker.jobs j join apfa.workers w on j.locked_by = any(w.graphile_worker_ids)
      where j.task_identifier = $1 and j.locked_at is not null and w.stopped_at is null and w.reaped_at is null
      order by random() limit 1`,
    [task],
  );
  return r.rows[0]?.pid;
}

/** A 10,000-document project on a fresh database (its pool alongside), and three worker processes on it, ready. */
async function threeWorkers(o: { store: object; batch_size: number; embedDelayMs: number }) {
  db = await withTestDatabase({ prefix: "apfa_fault" });
  const p = await makeProject(10_000, {
    database: { url: db.url },
    store: o.store,
    queues: { embedding: 2 },
    batch_size: o.batch_size,
    stages: {
      source: { plugin: "jsonl", options: { path: "docs.jsonl" } },
      embedder: { plugin: path.join(FIXTURES, "hash-embedder.ts"), options: { delay_ms: o.embedDelayMs } },
      notifier: { plugin: "postgres", options: { url: db.url } },
    },
    workers: { heartbeat_interval: "1s", heartbeat_timeout: "4s" },
    run: { max_attempts: 10 },
  });
  await migrate(db.pool, silentLogger);
  workers = [0, 1, 2].map(() => spawnWorker(p.yaml));
  await Promise.all(workers.map((w) => ready(w)));
  return { ...p, pool: db.pool };
}

for (const when of ["embedding", "uploading", "building"] as const) {
  it(`kill -9 while ${when}: the run completes with every id exactly once`, async () => {
    const p = await threeWorkers({
      store: { plugin: path.join(FIXTURES, "slow-fs-store.ts"), options: { dir: "store", put_delay_ms: when === "uploading" ? 400 : 60 } },
      batch_size: 250,
      embedDelayMs: when === "embedding" ? 400 : 50,
    });
    const runId = await createRun(p.pool, p.config, "fault-test");

    let victim: number;
    if (when === "building") {
      victim = await waitFor(() => holderOf("build_index"), 120_000, "build_index to be running");
    } else {
      await sleep(1000 + Math.random() * 1500);
      victim = await waitFor(() => holderOf("embed_batch"), 60_000, "an embed_batch job to be running");
    }
    const killed = workers.find((w) => w.proc.pid === victim)!;
    expect(killed, `pid ${victim} is one of ours`).toBeDefined();
    killed.proc.kill("SIGKILL");

    const run = await finished(p.pool, runId, 180_000);
    expect(run.status, run.error ?? "").toBe("succeeded");
    assertExactlyOnce(await indexIds(path.join(p.dir, "store"), run.index_version!), p.ids);
    const reaped = await p.pool.query("select id from apfa.workers where pid = $1 and reaped_at is not null", [victim]);
    expect(reaped.rowCount).toBe(1);
  }, 300_000);
}

it("kill -9 during an incremental run of 10,000 documents with 10 % changed: every current id exactly once", async () => {
  // Slow enough that the changed batches are still running when the victim is chosen.
  const p = await threeWorkers({ store: { plugin: "fs", options: { dir: "store" } }, batch_size: 100, embedDelayMs: 1500 });
  const first = await finished(p.pool, await createRun(p.pool, p.config, "fault-test"), 180_000);
  expect(first.status, first.error ?? "").toBe("succeeded");

  // 600 edits, 200 deletes, 200 inserts.
  const file = path.join(p.dir, "docs.jsonl");
  const docs = (await fsp.readFile(file, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { id: string; text: string });
  const edited = new Set(docs.filter((_, i) => i % 10 === 3 && i < 6000).map((d) => d.id));
  const deleted = new Set(docs.filter((_, i) => i % 10 === 7 && i < 2000).map((d) => d.id));
  const now = docs.filter((d) => !deleted.has(d.id)).map((d) => (edited.has(d.id) ? { ...d, text: `${d.text} (revised terms)` } : d));
  for (let i = 0; i < 200; i++) now.push({ id: `new-${i}`, text: `new savings product ${i}` });
  await fsp.writeFile(file, now.map((d) => JSON.stringify(d)).join("\n") + "\n");

  const runId = await createRun(p.pool, p.config, "fault-test");
  const victim = await waitFor(() => holderOf("embed_batch"), 60_000, "an embed_batch job of the incremental run to be running");
  workers.find((w) => w.proc.pid === victim)!.proc.kill("SIGKILL");

  const run = await finished(p.pool, runId, 180_000);
  expect(run.status, run.error ?? "").toBe("succeeded");
  expect(run.base_version).toBe(first.index_version);
  expect([Number(run.docs_embedded), Number(run.docs_changed), Number(run.docs_removed), Number(run.docs_reused)]).toEqual([800, 600, 200, 9200]);
  const ids = await indexIds(path.join(p.dir, "store"), run.index_version!);
  assertExactlyOnce(ids, now.map((d) => d.id));
  const served = (await fsp.readFile(path.join(p.dir, "store", "indexes", run.index_version!, "docs.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { id: string; text: string });
  expect(served.filter((d) => d.text.endsWith("(revised terms)")).length).toBe(600);
  const reaped = await p.pool.query("select id from apfa.workers where pid = $1 and reaped_at is not null", [victim]);
  expect(reaped.rowCount).toBe(1);
}, 400_000);
