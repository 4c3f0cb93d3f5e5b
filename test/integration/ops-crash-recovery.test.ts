/**
 * Crash recovery with real processes: two `apfa worker` processes share a run whose batches embed slowly
 * (hash embedder with a delay); the one holding an `embed_batch` job is SIGKILLed. graphile-worker alone would
 * leave that job locked for four hours; the survivor's reaper sees the dead worker's heartbeat go stale
 * (`workers.heartbeat_timeout: 4s`), releases its jobs with forceUnlockWorkers, re-runs the batch, and the run
 * completes within timeout + 30 s with every document in the index exactly once.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRun } from "../../runtime/runs.ts";
import { layout } from "../../runtime/keys.ts";
import { openOpsEnv, parseMetrics, until, type OpsEnv } from "./ops-support.ts";

const BIN = fileURLToPath(new URL("../../bin/apfa.mjs", import.meta.url));
const TIMEOUT_S = 4;
const DOCS = 60;

interface Proc {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
}

let env: OpsEnv;
const procs: Proc[] = [];

function startWorkerProcess(): Proc {
  const child = spawn(process.execPath, [BIN, "worker", "-c", env.file, "--no-cron", "--metrics-port", "0"], {
    cwd: path.dirname(env.file),
    env: { ...process.env, APFA_LOG_LEVEL: "info", APFA_LOG_FORMAT: "" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const lines: Array<Record<string, unknown>> = [];
  let buf = "";
  child.stderr!.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ msg: line });
      }
    }
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const p = { child, lines, exited };
  procs.push(p);
  return p;
}

beforeAll(async () => {
  env = await openOpsEnv({
    docs: DOCS,
    overrides: {
      queues: { embedding: 2, indexing: 1, maintenance: 1 },
      stages: { embedder: { options: { delay_ms: 1500 } } },
      workers: { heartbeat_interval: "1s", heartbeat_timeout: `${TIMEOUT_S}s` },
    },
  });
}, 60_000);

afterAll(async () => {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGTERM");
  await Promise.race([Promise.all(procs.map((p) => p.exited)), new Promise((r) => setTimeout(r, 15_000))]);
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  await env?.close();
}, 60_000);

describe("a SIGKILLed worker", () => {
  it("has its embed_batch job re-run by the other worker; the run completes with every document exactly once", async () => {
    const [a, b] = [startWorkerProcess(), startWorkerProcess()];
    const pids = new Set([a.child.pid, b.child.pid]);
    await until("both workers to register their graphile workers", async () => {
      const r = await env.db.pool.query<{ pid: number; n: number }>(
        "select pid, coalesce(array_length(graphile_worker_ids, 1), 0) as n from apfa.workers where stopped_at is null",
      );
      return r.rows.length === 2 && r.rows.every((w) => pids.has(w.pid) && w.n >= 4);
    }, 60_000);

    const runId = await createRun(env.db.pool, env.config, "crash-test");
    const held = await until("an embed_batch job a worker is running", async () => {
      const r = await env.db.pool.query<{ id: string; locked_by: string; worker: string; pid: number; n: number }>(
        `select j.id::text, j.locked_by, w.id as worker, w.pid, (j.payload->>'n')::int as n
           from apfa.jobs j join apfa.workers w on j.locked_by = any(w.graphile_worker_ids)
           join apfa.runs r on r.id = $1 and r.status = 'embedding'
           join apfa.batches b on b.run_id = r.id and b.n = (j.payload->>'n')::int and b.status = 'running'
          where j.task = 'embed_batch' and j.locked_by is not null order by j.id limit 1`,
        [runId],
      );
      return r.rows[0];
    }, 30_000);
    const victim = [a, b].find((p) => p.child.pid === held.pid)!;
    const survivor = victim === a ? b : a;
    expect(victim, "the job holder is one of the two spawned workers").toBeDefined();

    victim.child.kill("SIGKILL");
    await victim.exited;

    const run = await env.waitForRun(runId, (TIMEOUT_S + 30) * 1000);
    expect(run.status, run.error ?? "").toBe("succeeded");

    // The dead worker was reaped, and its batch re-ran to success on the survivor.
    const dead = await env.db.pool.query<{ reaped: boolean }>("select reaped_at is not null as reaped from apfa.workers where id = $1", [held.worker]);
    expect(dead.rows[0].reaped).toBe(true);
    const h = await env.db.pool.query<{ outcome: string; worker_id: string; survivor: boolean }>(
      `select h.outcome, h.worker_id, exists (select 1 from apfa.workers w where w.pid = $2 and h.worker_id = any(w.graphile_worker_ids)) as survivor
         from apfa.job_history h where h.job_id = $1`,
      [held.id, survivor.child.pid],
    );
    expect(h.rows).toEqual([expect.objectContaining({ outcome: "success", survivor: true })]);
    const batch = await env.db.pool.query<{ status: string; attempts: number }>("select status, attempts from apfa.batches where run_id = $1 and n = $2", [runId, held.n]);
    expect(batch.rows[0]).toEqual({ status: "done", attempts: 2 });
    expect(survivor.lines.some((l) => l.msg === "reaped a dead worker: its jobs are released to live workers" && l.dead_worker === held.worker)).toBe(true);

    // Every document exactly once, in the run's counters and in the published index.
    expect([run.batches_total, run.batches_done, run.batches_failed, Number(run.docs_embedded)]).toEqual([6, 6, 0, DOCS]);
    const docs = new TextDecoder().decode(await env.pipeline.store.get(layout.indexFile(run.index_version!, "docs.jsonl")));
    const ids = docs.split("\n").filter(Boolean).map((l) => (JSON.parse(l) as { id: string }).id);
    expect(ids.length).toBe(DOCS);
    expect([...ids].sort()).toEqual(Array.from({ length: DOCS }, (_, i) => `doc-${i}`).sort());

    // The survivor's metrics tell the same story.
    const port = (await env.db.pool.query<{ metrics_port: number }>("select metrics_port from apfa.workers where pid = $1 and stopped_at is null", [survivor.child.pid])).rows[0].metrics_port;
    const m = parseMetrics(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
    expect(m.get("apfa_workers_reaped_total")).toBe(1);
    expect(m.get("apfa_workers_online")).toBe(1);
  }, 150_000);
});
