/**
 * Embedding suite: the raw embedder (model called directly, same batch size) against the full pipeline
 * (createRun → worker → embed_batch fan-out → fan-in → build_index) on the same sample-corpus documents, for
 * use-lite and a MiniLM-L6-shaped q8 BERT; then batch-size and worker-concurrency sweeps with docs/s, p95 batch
 * latency (apfa.batches.duration_ms) and the worker process's peak RSS (VmHWM).
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import pg from "pg";
import { generateCorpus } from "../../examples/corpus.ts";
import { loadOrFail } from "../../runtime/commands/common.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { createRun } from "../../runtime/runs.ts";
import { MINILM_L6_SHAPE, makeBertModel } from "../../test/fixtures/tiny-bert.ts";
import {
  buildWait, createBenchDatabase, median, NO_SCHEDULES, num, peakRssMiB, ratioText, repeatDocs, ROOT, saveChart, spawnTs, stopChild,
  tempDir, waitMessage, writePipeline, type BenchContext, type Ratio, type SuiteOutput, type Table,
} from "../lib.ts";
import { barChart, lineChart } from "../svg.ts";

interface Model {
  id: string;
  label: string;
  stage: { plugin: string; options?: Record<string, unknown> };
}

interface Env {
  ctx: BenchContext;
  dir: string;
  url: string;
  pool: pg.Pool;
  seq: number;
}

/** Seconds per phase of a run, from apfa.runs timestamps. */
interface Phases {
  pickup: number;
  enumerate: number;
  embed: number;
  /** Fan-in commit → build_index starting (graphile-worker pickup of the serial indexing queue). */
  buildWait: number;
  build: number;
}

interface PipelineStats {
  docsPerS: number;
  phases: Phases;
  batches: number;
  p50: number;
  p95: number;
  rssMiB: number;
}

interface RawStats {
  docsPerS: number;
  rssMiB: number;
}

const CHILD = (f: string) => path.join(ROOT, "bench/child", f);

/** The corpus file of `n` documents (the 1,000-doc sample corpus, repeated with suffixed ids past 1,000). */
function corpusFile(env: Env, n: number): string {
  const file = path.join(env.dir, `corpus-${n}.jsonl`);
  if (!fs.existsSync(file)) {
    const docs = repeatDocs(generateCorpus({ count: Math.min(n, 1000) }), n);
    fs.writeFileSync(file, docs.map((d) => JSON.stringify(d)).join("\n") + "\n");
  }
  return file;
}

function pipelineYaml(env: Env, model: Model, docs: number, batch: number, concurrency: number): string {
  return writePipeline(env.dir, {
    name: "bench",
    database: { url: env.url },
    store: { plugin: "fs", options: { dir: path.join(env.dir, "store") } },
    queues: { embedding: concurrency, indexing: 1, maintenance: 1 },
    stages: {
      source: { plugin: "jsonl", options: { path: corpusFile(env, docs) } },
      embedder: model.stage,
      index: { plugin: "flat" },
      notifier: { plugin: "postgres", options: { url: env.url } },
      generator: { plugin: "template" },
    },
    batch_size: batch,
    run: { timeout: "2h", max_attempts: 2 },
    schedules: NO_SCHEDULES,
  }, `pipeline-${env.seq++}.yaml`);
}

const logFile = (env: Env) => env.ctx.logFile;

async function rawRun(env: Env, model: Model, docs: number, batch: number): Promise<RawStats> {
  const yaml = pipelineYaml(env, model, docs, batch, 1);
  const child = spawnTs(CHILD("embed-raw.ts"), [yaml, corpusFile(env, docs)], { profileDir: env.ctx.profileDir, log: logFile(env) });
  const r = await waitMessage(child, (m) => (m && typeof m === "object" && "ms" in m ? (m as { docs: number; ms: number; rssMiB: number }) : undefined), 3_600_000);
  await stopChild(child);
  return { docsPerS: r.docs / (r.ms / 1000), rssMiB: r.rssMiB };
}

async function pipelineRun(env: Env, model: Model, docs: number, batch: number, concurrency: number): Promise<PipelineStats> {
  const yaml = pipelineYaml(env, model, docs, batch, concurrency);
  const child = spawnTs(CHILD("worker.ts"), [yaml], { profileDir: env.ctx.profileDir, log: logFile(env) });
  try {
    await waitMessage(child, (m) => (m && typeof m === "object" && "ready" in m ? true : undefined), 300_000);
    const runId = await createRun(env.pool, await loadOrFail(yaml), "bench");
    for (;;) {
      const r = (await env.pool.query<{ status: string; error: string | null; secs: number; docs: string } & Phases>(
        `select status, error, extract(epoch from finished_at - created_at)::float8 as secs, docs_embedded as docs,
                extract(epoch from started_at - created_at)::float8 as pickup, extract(epoch from enumerated_at - started_at)::float8 as enumerate,
                extract(epoch from embedded_at - enumerated_at)::float8 as embed, extract(epoch from finished_at - embedded_at)::float8 as build
           from apfa.runs where id = $1`,
        [runId],
      )).rows[0];
      if (r.status === "failed" || r.status === "cancelled") throw new Error(`[apfa] [bench:embedding] run ${runId} ${r.status}: ${r.error}`);
      if (r.status === "succeeded") {
        const b = (await env.pool.query<{ n: number; p50: number; p95: number }>(
          `select count(*)::int as n, percentile_cont(0.5) within group (order by duration_ms) as p50,
                  percentile_cont(0.95) within group (order by duration_ms) as p95 from apfa.batches where run_id = $1`,
          [runId],
        )).rows[0];
        const phases = { pickup: r.pickup, enumerate: r.enumerate, embed: r.embed, buildWait: await buildWait(env.pool, runId), build: r.build };
        phases.build -= phases.buildWait;
        return { docsPerS: Number(r.docs) / r.secs, phases, batches: b.n, p50: b.p50, p95: b.p95, rssMiB: peakRssMiB(child.pid) };
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  } finally {
    await stopChild(child);
  }
}

export async function embeddingSuite(ctx: BenchContext): Promise<SuiteOutput> {
  const db = await createBenchDatabase();
  const dir = tempDir("embedding");
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  pool.on("error", () => {}); // sessions end when the database is dropped
  pool.on("connect", (client) => client.on("error", () => {}));
  const env: Env = { ctx, dir, url: db.url, pool, seq: 0 };
  try {
    await migrate(pool, silentLogger);
    ctx.log("generating the MiniLM-L6-shaped model");
    await makeBertModel(path.join(dir, "minilm"), MINILM_L6_SHAPE);
    const models: Model[] = [
      { id: "use-lite", label: "use-lite (512-d)", stage: { plugin: "use-lite" } },
      { id: "minilm-q8", label: "MiniLM-L6 shape q8 (384-d)", stage: { plugin: "transformers", options: { model: path.join(dir, "minilm"), dtype: "q8" } } },
    ];
    return await measure(env, models);
  } finally {
    await pool.end().catch(() => {});
    await db.drop().catch((err) => ctx.log(`dropping ${db.name} failed: ${(err as Error).message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function measure(env: Env, models: Model[]): Promise<SuiteOutput> {
  const { ctx } = env;
  const q = ctx.quick;
  const docs = q ? 32 : 1000;
  const batch = q ? 16 : 250;
  const conc = 4;
  const reps = q ? 1 : 3;
  const tables: Table[] = [];
  const ratios: Ratio[] = [];
  const charts: SuiteOutput["charts"] = [];
  const notes: string[] = [];
  const raw = new Map<string, RawStats>();
  const piped = new Map<string, number>();

  const head: Table = {
    title: `Raw embedder vs full pipeline: ${docs} sample-corpus docs, batch_size ${batch}, embedding concurrency ${conc}`,
    columns: ["model", "raw docs/s", "pipeline docs/s", "pipeline ÷ raw", "goal", "raw peak RSS MiB", "worker peak RSS MiB"],
    rows: [],
    note: `median of ${reps} interleaved run${reps > 1 ? "s" : ""} each; pipeline time is apfa.runs created_at → finished_at (enumerate, embed, fan-in, build, publish)`,
  };
  const breakdown: Table = {
    title: "Where the pipeline's time goes (median run)",
    columns: ["model", "raw embedding s", "pipeline s", "created → picked up", "enumerate (embed_all)", "batches (last enumerated → fan-in)", "fan-in → build_index starts", "build_index + publish"],
    rows: [],
    note: "from apfa.runs created_at, started_at, enumerated_at, embedded_at, finished_at; batches start while embed_all is still enumerating when the embedding queue has free slots",
  };
  for (const m of models) {
    const rs: RawStats[] = [];
    const ps: PipelineStats[] = [];
    for (let i = 0; i < reps; i++) {
      ctx.log(`${m.id}: raw ${i + 1}/${reps}`);
      rs.push(await rawRun(env, m, docs, batch));
      ctx.log(`${m.id}: pipeline ${i + 1}/${reps}`);
      ps.push(await pipelineRun(env, m, docs, batch, conc));
    }
    const r = { docsPerS: median(rs.map((x) => x.docsPerS)), rssMiB: median(rs.map((x) => x.rssMiB)) };
    raw.set(m.id, r);
    const p = median(ps.map((x) => x.docsPerS));
    piped.set(m.id, p);
    const value = p / r.docsPerS;
    ratios.push({ id: `embedding/${m.id}/pipeline_vs_raw`, label: `${m.label}: pipeline ÷ raw docs/s`, value, better: "higher", goal: 0.95 });
    head.rows.push([m.label, num(r.docsPerS), num(p), ratioText(value), "≥ 0.95", num(r.rssMiB, 0), num(median(ps.map((x) => x.rssMiB)), 0)]);
    const mid = [...ps].sort((a, b) => a.docsPerS - b.docsPerS)[ps.length >> 1].phases;
    breakdown.rows.push([m.label, num(docs / r.docsPerS), num(docs / p), num(mid.pickup, 3), num(mid.enumerate, 3), num(mid.embed), num(mid.buildWait, 3), num(mid.build, 3)]);
  }
  tables.push(head, breakdown);
  charts.push(saveChart(ctx, "embedding-raw-vs-pipeline", "Raw embedder vs full pipeline (docs/s)", barChart({
    title: "Raw embedder vs full pipeline", xLabel: "model", yLabel: "docs/s", categories: models.map((m) => m.label),
    series: [{ name: "raw embedder", values: models.map((m) => raw.get(m.id)!.docsPerS) },
      { name: "full pipeline", values: models.map((m) => piped.get(m.id)!) }],
  })));

  // MiniLM is the sweeps' default: it is the faster model here, so the pipeline's own overheads show more.
  const sweepModels = ctx.large ? models : models.slice(1);
  for (const m of sweepModels) {
    const base = raw.get(m.id)!;
    const sizes = q ? [16, 64] : [100, 500, 1000, 2000, 5000];
    const bt = await sweep(env, m, base, "batch", sizes.map((b) => ({ x: b, docs: Math.max(docs, b), batch: b, conc })));
    bt.title = `Batch size (${m.label}, embedding concurrency ${conc}; batch sizes above ${docs} repeat the corpus with suffixed ids)`;
    tables.push(bt);
    const cs = q ? [1, 4] : [1, 2, 4, 8, 16];
    const cb = q ? 8 : 100;
    const cdocs = q ? 32 : 1600;
    const ct = await sweep(env, m, base, "concurrency", cs.map((c) => ({ x: c, docs: cdocs, batch: cb, conc: c })));
    ct.title = `Worker concurrency (${m.label}, batch_size ${cb}, ${cdocs} docs = ${cdocs / cb} batches, one worker process)`;
    tables.push(ct);
    for (const [t, kind] of [[bt, "batch"], [ct, "concurrency"]] as const) {
      const xs = t.rows.map((r) => Number(r[0]));
      const col = (i: number) => t.rows.map((r) => Number(String(r[i]).replace(/,/g, "")));
      charts.push(saveChart(ctx, `embedding-${kind}-${m.id}`, `${m.label}: docs/s and p95 batch latency by ${kind}`, lineChart({
        title: `${m.label} by ${kind === "batch" ? "batch size" : "worker concurrency"}`, xLabel: kind === "batch" ? "batch_size (log scale)" : "embedding concurrency (log scale)",
        yLabel: "docs/s", logX: true, series: [{ name: "pipeline docs/s", points: xs.map((x, i) => [x, col(3)[i]]) },
          { name: "raw docs/s", points: xs.map((x) => [x, base.docsPerS]) }],
      })));
      notes.push(recommend(t, kind));
    }
  }
  return { tables, ratios, charts, notes };
}

async function sweep(env: Env, m: Model, base: RawStats, kind: string, cfgs: Array<{ x: number; docs: number; batch: number; conc: number }>): Promise<Table> {
  const t: Table = {
    title: "",
    columns: [kind === "batch" ? "batch_size" : "concurrency", "docs", "batches", "docs/s", "÷ raw", "p50 batch ms", "p95 batch ms", "p95 ÷ raw batch time", "peak RSS MiB", "RSS ÷ raw"],
    rows: [],
    note: "raw batch time = batch_size ÷ raw docs/s; RSS is the worker process's VmHWM (model, runners, batches in flight)",
  };
  for (const c of cfgs) {
    env.ctx.log(`${m.id}: ${kind} ${c.x}`);
    const s = await pipelineRun(env, m, c.docs, c.batch, c.conc);
    const ideal = (c.batch / base.docsPerS) * 1000;
    t.rows.push([c.x, c.docs, s.batches, num(s.docsPerS), ratioText(s.docsPerS / base.docsPerS), num(s.p50, 0), num(s.p95, 0), ratioText(s.p95 / ideal), num(s.rssMiB, 0), ratioText(s.rssMiB / base.rssMiB)]);
  }
  return t;
}

/**
 * The data's pick. Run-to-run noise on this shared machine is about ±10%, so every setting within 10% of the
 * best docs/s counts as equally fast; of those, the one with the lowest p95 batch latency (batch size) or peak
 * RSS, then the lowest value (concurrency) wins.
 */
function recommend(t: Table, kind: "batch" | "concurrency"): string {
  const rows = t.rows.map((r) => ({ x: Number(r[0]), dps: Number(String(r[3]).replace(/,/g, "")), p95: Number(String(r[6]).replace(/,/g, "")), rss: Number(String(r[8]).replace(/,/g, "")) }));
  const best = Math.max(...rows.map((r) => r.dps));
  const worst = Math.min(...rows.map((r) => r.dps));
  const near = rows.filter((r) => r.dps >= best * 0.9);
  const pick = [...near].sort((a, b) => (kind === "batch" ? a.p95 - b.p95 : a.rss - b.rss || a.x - b.x))[0];
  const spread = `docs/s ranges ${num(worst)}–${num(best)} (${Math.round((1 - worst / best) * 100)}%)`;
  return kind === "batch"
    ? `Batch size: ${spread}; ${near.map((r) => r.x).join(", ")} are within 10% of the best; of those, ${pick.x} has the lowest p95 batch latency (${num(pick.p95, 0)} ms), so it is the data's choice for \`batch_size\`.`
    : `Concurrency: ${spread}; ${near.map((r) => r.x).join(", ")} are within 10% of the best; of those, ${pick.x} has the lowest peak RSS (${num(pick.rss, 0)} MiB), so it is the data's choice for \`queues.embedding\` on this machine.`;
}
