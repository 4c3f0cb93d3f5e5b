/**
 * Queue suite: no-op jobs through apfa's runtime (`startWorker`: one runner per queue, job history, worker
 * heartbeat, all on apfa's pool) against graphile-worker's own `run()` with the same concurrency, pool size and
 * poll interval, on a database of its own (graphile-worker's schema only, so it pays for none of apfa's triggers). Throughput drains N pre-inserted jobs; add-to-start latency adds one job
 * to an idle worker at a time and times `add_job` → task start (LISTEN/NOTIFY pickup).
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Logger, run, runMigrations, type Task } from "graphile-worker";
import pg from "pg";
import { loadOrFail } from "../../runtime/commands/common.ts";
import { durationMs } from "../../runtime/config/schema.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { openPipeline } from "../../runtime/pipeline.ts";
import { startWorker } from "../../runtime/worker.ts";
import {
  createBenchDatabase, median, NO_SCHEDULES, num, percentile, postgresCpuMs, ratioText, saveChart, tempDir, writePipeline,
  type BenchContext, type Ratio, type SuiteOutput, type Table,
} from "../lib.ts";
import { barChart } from "../svg.ts";

/** Every noop run calls `onRun`; both runtimes get the same task body. */
interface Probe {
  onRun: () => void;
}

interface Started {
  stop(): Promise<void>;
}

interface Throughput {
  jobsPerS: number;
  /** CPU ms per 1,000 jobs: the database's backends, and this (worker) process. */
  pgCpu: number;
  nodeCpu: number;
}

type Starter = (concurrency: number, probe: Probe) => Promise<Started>;

const POOL_MAX = 10; // what runtime/db.ts gives apfa's pool
const noopTask = (probe: Probe): Task => async () => probe.onRun();

/** graphile-worker's own `run()` on the database at `url`. */
function rawStarter(url: string, pollInterval: number): Starter {
  return async (concurrency, probe) => {
    const pool = new pg.Pool({ connectionString: url, max: POOL_MAX });
    pool.on("error", () => {});
    pool.on("connect", (client) => client.on("error", () => {}));
    const runner = await run({
      pgPool: pool, concurrency, taskList: { noop: noopTask(probe) }, noHandleSignals: true, pollInterval,
      logger: new Logger(() => () => {}),
    });
    return { stop: async () => (await runner.stop(), await pool.end()) };
  };
}

type Config = Awaited<ReturnType<typeof loadOrFail>>;

/** apfa's config for a maintenance-queue concurrency (everything else default), parsed once. */
function apfaConfigs(dir: string, url: string): (concurrency: number) => Promise<Config> {
  const configs = new Map<number, Config>();
  return async (concurrency) => {
    if (!configs.has(concurrency)) configs.set(concurrency, await loadOrFail(writePipeline(dir, {
      name: "bench", database: { url }, store: { plugin: "fs", options: { dir: path.join(dir, "store") } },
      queues: { embedding: 1, indexing: 1, maintenance: concurrency },
      stages: { source: { plugin: "jsonl", options: { path: path.join(dir, "empty.jsonl") } }, notifier: { plugin: "postgres", options: { url } } },
      schedules: NO_SCHEDULES,
    }, `queue-${concurrency}.yaml`)));
    return configs.get(concurrency)!;
  };
}

function apfaStarter(config: (concurrency: number) => Promise<Config>): Starter {
  return async (concurrency, probe) => {
    const p = await openPipeline(await config(concurrency), silentLogger);
    const w = await startWorker(p, { cron: false, tasks: { noop: noopTask(probe) } });
    return { stop: async () => (await w.stop(), await p.close()) };
  };
}

/** A database the jobs are added to, and the runtime that drains it. */
interface Target {
  pool: pg.Pool;
  db: string;
  start: Starter;
}

/**
 * Every drained job leaves a dead row in graphile-worker's jobs table, and each fetch walks past them until a
 * vacuum removes them. Postgres's autovacuum does that on a normal server; where it is off (as on the machines
 * this suite was written on), apfa's database, which also serves the triggers-only row, piled up twice the raw
 * one's dead rows and a later run fetched 30-40 % slower than an earlier one of the same code. Both databases are
 * vacuumed before every timed run, so each starts where autovacuum would leave it.
 */
async function vacuumJobs(pool: pg.Pool): Promise<void> {
  await pool.query("vacuum graphile_worker._private_jobs, graphile_worker._private_job_queues");
}

/** Jobs/s draining `n` jobs inserted before the worker starts (timed from start to every job committed done). */
async function throughput({ pool, db, start }: Target, concurrency: number, n: number): Promise<Throughput> {
  await vacuumJobs(pool);
  await pool.query("select graphile_worker.add_job('noop', '{}'::json) from generate_series(1, $1)", [n]);
  const pg0 = postgresCpuMs(db).snapshot;
  const cpu0 = process.cpuUsage();
  let ran = 0;
  let all!: () => void;
  const done = new Promise<void>((resolve) => (all = resolve));
  const t0 = performance.now();
  const w = await start(concurrency, { onRun: () => ++ran === n && all() });
  await done;
  while (Number((await pool.query("select count(*) as c from graphile_worker._private_jobs")).rows[0].c) > 0) await new Promise((r) => setTimeout(r, 5));
  const ms = performance.now() - t0;
  const pgCpu = postgresCpuMs(db, pg0).ms;
  const cpu = process.cpuUsage(cpu0);
  await w.stop();
  return { jobsPerS: n / (ms / 1000), pgCpu: (pgCpu / n) * 1000, nodeCpu: ((cpu.user + cpu.system) / 1000 / n) * 1000 };
}

/** ms from calling add_job to the task starting, one job at a time on an idle worker (`queueName` = a serial queue). */
async function latency({ pool, start }: Target, concurrency: number, samples: number, queueName: string | null = null): Promise<number[]> {
  let signal: (() => void) | undefined;
  await vacuumJobs(pool);
  const w = await start(concurrency, { onRun: () => signal?.() });
  const out: number[] = [];
  try {
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 0; i < samples; i++) {
      const ran = new Promise<void>((resolve) => (signal = resolve));
      const t0 = performance.now();
      await pool.query("select graphile_worker.add_job('noop', '{}'::json, queue_name := $1)", [queueName]);
      await ran;
      out.push(performance.now() - t0);
      // Idle again: the job's completion committed and its serial queue unlocked (else the next job would wait
      // on this one's bookkeeping, not on pickup).
      while (Number((await pool.query(
        "select (select count(*) from graphile_worker._private_jobs) + (select count(*) from graphile_worker._private_job_queues where locked_by is not null) as n",
      )).rows[0].n) > 0) await new Promise((r) => setTimeout(r, 2));
    }
  } finally {
    await w.stop();
  }
  return out;
}

export async function queueSuite(ctx: BenchContext): Promise<SuiteOutput> {
  const db = await createBenchDatabase();
  const rawDb = await createBenchDatabase();
  const dir = tempDir("queue");
  const open = (url: string) => {
    const p = new pg.Pool({ connectionString: url, max: 2 });
    p.on("error", () => {}); // sessions end when the database is dropped
    p.on("connect", (client) => client.on("error", () => {}));
    return p;
  };
  const pool = open(db.url);
  const rawPool = open(rawDb.url);
  try {
    await migrate(pool, silentLogger);
    await runMigrations({ pgPool: rawPool, logger: new Logger(() => () => {}) });
    fs.writeFileSync(path.join(dir, "empty.jsonl"), "");
    const config = apfaConfigs(dir, db.url);
    // graphile-worker gets apfa's configured poll interval (workers.poll_interval), so only the runtimes differ.
    const poll = durationMs((await config(1)).workers.poll_interval);
    const starters: Record<"raw" | "rawHistory" | "apfa", Target> = {
      raw: { pool: rawPool, db: rawDb.name, start: rawStarter(rawDb.url, poll) },
      // graphile-worker's run() on apfa's database: every outcome also writes its apfa.job_history row (trigger).
      rawHistory: { pool, db: db.name, start: rawStarter(db.url, poll) },
      apfa: { pool, db: db.name, start: apfaStarter(config) },
    };
    const n = ctx.quick ? 1000 : 10_000;
    const reps = ctx.quick ? 1 : 3;
    const concs = ctx.quick ? [4] : [1, 4, 16];
    const tables: Table[] = [];
    const ratios: Ratio[] = [];
    const tp: Table = {
      title: `No-op job throughput: ${n} jobs inserted, then drained (pool ${POOL_MAX}, pollInterval ${poll} ms for both)`,
      columns: ["concurrency", "graphile-worker run() jobs/s", "apfa startWorker jobs/s", "apfa ÷ raw", "goal", "Postgres CPU ms / 1k jobs: raw", "apfa", "worker-process CPU ms / 1k jobs: raw", "apfa"],
      rows: [],
      note: `median of ${reps} interleaved run${reps > 1 ? "s" : ""}; both databases vacuumed before each run (autovacuum is off here); timed from worker start until every job is committed done; CPU from /proc for the database's backends and process.cpuUsage() for the worker (in the bench process)`,
    };
    const tpRaw: number[] = [];
    const tpApfa: number[] = [];
    const med = (xs: Throughput[], k: keyof Throughput) => median(xs.map((x) => x[k]));
    const decomposition: Table = {
      title: "Where apfa's per-job cost goes (concurrency 4)",
      columns: ["runtime", "jobs/s", "÷ raw", "Postgres CPU ms / 1k jobs", "worker-process CPU ms / 1k jobs"],
      rows: [],
      note: "apfa.job_history is written by triggers in the transaction graphile-worker records each outcome in (migrations/000003; successes once per statement, 000006); the middle row is graphile-worker's own run() with its defaults on apfa's database, so it pays exactly the triggers and nothing else of apfa. apfa's own runners set graphile-worker's completeJobBatchDelay to 0, so the jobs that finish in one tick complete in one statement; the raw rows keep graphile-worker's defaults",
    };
    for (const c of concs) {
      const r: Throughput[] = [];
      const a: Throughput[] = [];
      const h: Throughput[] = [];
      // Warm-up (not timed): Postgres caches and plans, module loading, apfa's parsed config.
      await throughput(starters.raw, c, 200);
      await throughput(starters.apfa, c, 200);
      for (let i = 0; i < reps; i++) {
        ctx.log(`concurrency ${c}: run ${i + 1}/${reps}`);
        r.push(await throughput(starters.raw, c, n));
        a.push(await throughput(starters.apfa, c, n));
        if (c === 4) h.push(await throughput(starters.rawHistory, c, n));
      }
      tpRaw.push(med(r, "jobsPerS"));
      tpApfa.push(med(a, "jobsPerS"));
      const value = med(a, "jobsPerS") / med(r, "jobsPerS");
      ratios.push({ id: `queue/c${c}/throughput`, label: `no-op jobs/s at concurrency ${c}: apfa ÷ graphile-worker`, value, better: "higher", goal: 0.95 });
      tp.rows.push([c, num(med(r, "jobsPerS")), num(med(a, "jobsPerS")), ratioText(value), "≥ 0.95", num(med(r, "pgCpu")), num(med(a, "pgCpu")), num(med(r, "nodeCpu")), num(med(a, "nodeCpu"))]);
      if (h.length) {
        for (const [name, xs] of [["graphile-worker run()", r], ["run() on apfa's database (job_history triggers)", h], ["apfa startWorker", a]] as const) {
          decomposition.rows.push([name, num(med(xs, "jobsPerS")), ratioText(med(xs, "jobsPerS") / med(r, "jobsPerS")), num(med(xs, "pgCpu")), num(med(xs, "nodeCpu"))]);
        }
      }
    }
    tables.push(tp, decomposition);

    const samples = ctx.quick ? 50 : 300;
    const serialSamples = ctx.quick ? 20 : 100;
    ctx.log("add-to-start latency");
    const lat = { raw: [] as number[], apfa: [] as number[], rawSerial: [] as number[], apfaSerial: [] as number[] };
    for (let i = 0; i < 2; i++) {
      lat.raw.push(...(await latency(starters.raw, 4, samples / 2)));
      lat.apfa.push(...(await latency(starters.apfa, 4, samples / 2)));
      // apfa gives every concurrency-1 queue (indexing, maintenance) graphile-worker's serial queue_name.
      lat.rawSerial.push(...(await latency(starters.raw, 1, serialSamples / 2, "maintenance")));
      lat.apfaSerial.push(...(await latency(starters.apfa, 1, serialSamples / 2, "maintenance")));
    }
    const row = (name: string, xs: number[]) => [name, num(percentile(xs, 50)), num(percentile(xs, 95)), num(percentile(xs, 99)), num(Math.max(...xs))];
    const div = (a: number[], b: number[]) => [50, 95, 99].map((p) => ratioText(percentile(a, p) / percentile(b, p)));
    const lt: Table = {
      title: `Add-to-start latency: single jobs on an idle worker (${samples} without a queue name at concurrency 4; ${serialSamples} in a serial queue at concurrency 1)`,
      columns: ["runtime", "p50 ms", "p95 ms", "p99 ms", "max ms"],
      rows: [
        row("graphile-worker run()", lat.raw),
        row("apfa startWorker", lat.apfa),
        ["apfa ÷ raw", ...div(lat.apfa, lat.raw), ""],
        row("graphile-worker run(), serial queue", lat.rawSerial),
        row("apfa startWorker, serial queue", lat.apfaSerial),
        ["apfa ÷ raw, serial queue", ...div(lat.apfaSerial, lat.rawSerial), ""],
      ],
      note: "from before the add_job query to the task function running: the query round trip plus LISTEN/NOTIFY pickup. " +
        `apfa runs one graphile-worker runner per queue and one LISTEN per process: an insert's notification (migrations/000007, channel apfa_jobs) names the job's queue and wakes only that queue's runner, where graphile-worker's own jobs:insert would wake every runner and their fetches would contend for the serial queue's row (SKIP LOCKED); a serial runner that still comes up empty after being woken checks (a plain read) for a ready job of its own and fetches again instead of waiting a pollInterval (${poll} ms). Each sample starts once the previous job's completion has committed and its queue is unlocked`,
    };
    tables.push(lt);
    ratios.push(
      { id: "queue/latency_p50", label: "add-to-start p50: apfa ÷ graphile-worker", value: percentile(lat.apfa, 50) / percentile(lat.raw, 50), better: "lower" },
      { id: "queue/latency_p95", label: "add-to-start p95: apfa ÷ graphile-worker", value: percentile(lat.apfa, 95) / percentile(lat.raw, 95), better: "lower" },
      { id: "queue/serial_latency_p95", label: "add-to-start p95 in a serial queue: apfa ÷ graphile-worker", value: percentile(lat.apfaSerial, 95) / percentile(lat.rawSerial, 95), better: "lower", goal: 2 },
    );
    const lr = lat.raw;
    const la = lat.apfa;
    const charts = [
      saveChart(ctx, "queue-throughput", "No-op jobs/s by concurrency", barChart({
        title: "No-op jobs/s", xLabel: "concurrency", yLabel: "jobs/s", categories: concs.map(String),
        series: [{ name: "graphile-worker run()", values: tpRaw }, { name: "apfa startWorker", values: tpApfa }],
      })),
      saveChart(ctx, "queue-latency", "Add-to-start latency", barChart({
        title: "Add-to-start latency", xLabel: "percentile", yLabel: "ms", categories: ["p50", "p95", "p99", "serial p50", "serial p95", "serial p99"],
        series: [{ name: "graphile-worker run()", values: [...[50, 95, 99].map((p) => percentile(lr, p)), ...[50, 95, 99].map((p) => percentile(lat.rawSerial, p))] },
          { name: "apfa startWorker", values: [...[50, 95, 99].map((p) => percentile(la, p)), ...[50, 95, 99].map((p) => percentile(lat.apfaSerial, p))] }],
      })),
    ];
    return { tables, ratios, charts, notes: [] };
  } finally {
    await pool.end().catch(() => {});
    await rawPool.end().catch(() => {});
    await rawDb.drop().catch((err) => ctx.log(`dropping ${rawDb.name} failed: ${(err as Error).message}`));
    await db.drop().catch((err) => ctx.log(`dropping ${db.name} failed: ${(err as Error).message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
