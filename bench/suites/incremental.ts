/**
 * Incremental suite: what a run costs when little of the corpus changed. Per corpus (100k docs with the
 * `bench-hash` embedder, 10k with `use-lite`, the default model), a full run, then runs with 0 %, 0.1 %, 1 %,
 * 10 % and 100 % of the documents changed (60 % edits, 20 % inserts, 20 % deletes of the changed count) written
 * into the jsonl source before each run. It checks that a run embeds exactly the edited and inserted documents,
 * and sets the unchanged run's time against the full run and against a raw baseline of the work it cannot skip:
 * read the corpus file, SHA-256 every text, and copy the previous version's vectors into one Float32Array.
 * Embedding 100k documents with use-lite takes over an hour here, so its 100k full run is estimated from 10k.
 * @module
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import pg from "pg";
import { generateCorpus, type CorpusDoc } from "../../examples/corpus.ts";
import { loadOrFail } from "../../runtime/commands/common.ts";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { followRun } from "../../runtime/progress.ts";
import { createRun } from "../../runtime/runs.ts";
import type { Manifest } from "../../runtime/versions.ts";
import {
  buildWait, createBenchDatabase, median, NO_SCHEDULES, num, ratioText, ROOT, saveChart, spawnTs, stopChild, tempDir, waitMessage, writePipeline,
  type BenchContext, type Ratio, type SuiteOutput, type Table,
} from "../lib.ts";
import { lineChart } from "../svg.ts";

/** Fractions of the corpus changed before each run after the first (full) one. */
const STEPS = [0, 0.001, 0.01, 0.1, 1];
/** Of the changed count: 60 % edits, 20 % inserts, the rest (20 %) deletes. */
const EDIT = 0.6;
const INSERT = 0.2;
/** Same width as use-lite, so the hash corpus's version files (read and verified by every run) are as large. */
const HASH_DIMS = 512;

interface Corpus {
  id: string;
  label: string;
  /** "100k", "300": the document count as labels show it. */
  size: string;
  docs: number;
  embedder: { plugin: string; options?: Record<string, unknown> };
}

type Change = Record<"edits" | "inserts" | "deletes", number>;

interface RunResult {
  step: string;
  pct: number;
  change: Change;
  /** The run's counters (apfa.runs docs_*). */
  read: number; embedded: number; reused: number; changed: number; removed: number;
  /** Seconds: created_at → finished_at, and its phases (wait: fan-in → build_index starts; build: that job). */
  wall: number; pickup: number; enumerate: number; embed: number; wait: number; build: number;
  buildMs: { load: number; assemble: number; engine: number };
  /** embedded = edits + inserts. */
  exact: boolean;
  /** reused, removed and changed match the change applied. */
  counts: boolean;
}

type Raw = Record<"readMs" | "hashMs" | "vectorsMs" | "totalMs", number>;

interface CorpusResult {
  corpus: Corpus;
  /** The runs shown: the median unchanged run stands for its repeats (unless a repeat's counters were wrong). */
  runs: RunResult[];
  /** Fan-in → build_index start of every run, repeats included. */
  waits: number[];
  raw: Raw;
}

interface Env {
  ctx: BenchContext;
  dir: string;
  url: string;
  pool: pg.Pool;
}

/** mulberry32, so every run of the suite changes the same documents. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `k` distinct indices below `n` (partial Fisher–Yates). */
function pick(r: () => number, n: number, k: number): number[] {
  const ix = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(r() * (n - i));
    [ix[i], ix[j]] = [ix[j], ix[i]];
  }
  return ix.slice(0, k);
}

/** The corpus after one step's edits, inserts and deletes, and their counts. */
function applyChange(docs: CorpusDoc[], fresh: CorpusDoc[], pct: number, step: number, r: () => number): { docs: CorpusDoc[]; change: Change } {
  const total = pct === 0 ? 0 : Math.max(1, Math.round(docs.length * pct));
  const edits = Math.round(total * EDIT);
  const inserts = Math.round(total * INSERT);
  const deletes = total - edits - inserts;
  const chosen = pick(r, docs.length, edits + deletes);
  // Prepended, so the change falls inside the characters the embedder sees whatever its max_chars.
  for (const i of chosen.slice(0, edits)) docs[i] = { ...docs[i], text: `Revised in step ${step}: ${docs[i].text}` };
  const gone = new Set(chosen.slice(edits));
  const out = docs.filter((_, i) => !gone.has(i));
  for (let k = 0; k < inserts; k++) out.push({ ...fresh[(step * 7919 + k) % fresh.length], id: `new-${step}-${k}` });
  return { docs: out, change: { edits, inserts, deletes } };
}

function writeCorpus(file: string, docs: CorpusDoc[]): void {
  fs.writeFileSync(file, docs.map((d) => JSON.stringify(d)).join("\n") + "\n");
}

/** The work an unchanged run cannot skip, done directly: read and hash the source, copy the latest vectors. */
function rawBaseline(corpusFile: string, storeDir: string): Raw {
  const t0 = performance.now();
  const texts: string[] = [];
  for (const line of fs.readFileSync(corpusFile, "utf8").split("\n")) if (line) texts.push((JSON.parse(line) as { text: string }).text);
  const t1 = performance.now();
  for (const t of texts) crypto.createHash("sha256").update(t).digest("base64url");
  const t2 = performance.now();
  const version = (JSON.parse(fs.readFileSync(path.join(storeDir, "indexes/latest"), "utf8")) as { version: string }).version;
  const m = JSON.parse(fs.readFileSync(path.join(storeDir, "indexes", version, "manifest.json"), "utf8")) as Manifest;
  if (!m.reuse) throw new Error(`version ${version} has no reuse section`);
  const raw = fs.readFileSync(path.join(storeDir, "indexes", version, m.reuse.vectors.file));
  const vectors = new Float32Array(m.count * m.dims);
  new Uint8Array(vectors.buffer).set(raw.subarray(m.reuse.vectors.offset, m.reuse.vectors.offset + vectors.byteLength));
  const t3 = performance.now();
  return { readMs: t1 - t0, hashMs: t2 - t1, vectorsMs: t3 - t2, totalMs: t3 - t0 };
}

async function timedRun(env: Env, config: PipelineConfig, step: string, pct: number, change: Change, before: number, full = false): Promise<RunResult> {
  const runId = await createRun(env.pool, config, "bench", { full });
  const r = await followRun(env.pool, runId, { tty: false, write: () => {}, intervalMs: 50 });
  if (r.status !== "succeeded") throw new Error(`[apfa] [bench:incremental] run ${runId} (${step}) ${r.status}: ${r.error}`);
  const t = (await env.pool.query<{ wall: number; pickup: number; enumerate: number; embed: number; build: number }>(
    `select extract(epoch from finished_at - created_at)::float8 as wall, extract(epoch from started_at - created_at)::float8 as pickup,
            extract(epoch from enumerated_at - started_at)::float8 as enumerate, extract(epoch from embedded_at - enumerated_at)::float8 as embed,
            extract(epoch from finished_at - embedded_at)::float8 as build
       from apfa.runs where id = $1`,
    [runId],
  )).rows[0];
  const wait = await buildWait(env.pool, runId);
  const s = (r.stats ?? {}) as Record<string, number>;
  const [read, embedded, reused, changed, removed] = [r.docs_read, r.docs_embedded, r.docs_reused, r.docs_changed, r.docs_removed].map(Number);
  return {
    step, pct, change, read, embedded, reused, changed, removed, ...t, wait, build: t.build - wait,
    buildMs: { load: s.build_load_ms ?? NaN, assemble: s.build_assemble_ms ?? NaN, engine: s.build_engine_ms ?? NaN },
    exact: embedded === change.edits + change.inserts,
    counts: removed === change.deletes && changed === change.edits && reused === (full ? 0 : before - change.edits - change.deletes),
  };
}

async function measureCorpus(env: Env, c: Corpus, reps: number): Promise<CorpusResult> {
  const { ctx } = env;
  const dir = path.join(env.dir, c.id);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "corpus.jsonl");
  const storeDir = path.join(dir, "store");
  let docs = generateCorpus({ count: c.docs });
  const fresh = generateCorpus({ count: Math.ceil(c.docs * 0.25) + 10, seed: 7 });
  writeCorpus(file, docs);
  // The shipped pipeline.yaml's queues and batch size, so the runs pay the default's per-batch costs.
  const yaml = writePipeline(dir, {
    name: `incremental-${c.id}`,
    database: { url: env.url },
    store: { plugin: "fs", options: { dir: storeDir } },
    queues: { embedding: 4, indexing: 1, maintenance: 1 },
    stages: {
      source: { plugin: "jsonl", options: { path: file } },
      embedder: c.embedder,
      index: { plugin: "flat" },
      notifier: { plugin: "postgres", options: { url: env.url } },
      generator: { plugin: "template" },
    },
    batch_size: 250,
    run: { timeout: "2h", max_attempts: 2 },
    schedules: NO_SCHEDULES,
  });
  const config = await loadOrFail(yaml);
  // One worker at a time: graphile-worker hands any pipeline's jobs to any worker on the database.
  const child = spawnTs(path.join(ROOT, "bench/child/worker.ts"), [yaml], { profileDir: ctx.profileDir, log: ctx.logFile });
  try {
    await waitMessage(child, (m) => (m && typeof m === "object" && "ready" in m ? true : undefined), 600_000);
    ctx.log(`${c.label}: full run`);
    const runs = [await timedRun(env, config, "full", NaN, { edits: 0, inserts: c.docs, deletes: 0 }, 0, true)];
    const waits = [runs[0].wait];
    let raw: Raw | undefined;
    const r = rng(1234);
    for (const [i, pct] of STEPS.entries()) {
      const before = docs.length;
      let change: Change;
      ({ docs, change } = applyChange(docs, fresh, pct, i + 1, r));
      writeCorpus(file, docs);
      const step = `${pct * 100} %`;
      ctx.log(`${c.label}: ${step} changed (${change.edits} edits, ${change.inserts} inserts, ${change.deletes} deletes)`);
      if (pct > 0) {
        runs.push(await timedRun(env, config, step, pct, change, before));
        waits.push(runs[runs.length - 1].wait);
        continue;
      }
      // The unchanged run is the headline figure and takes seconds, so it is repeated and its median run kept.
      const same: RunResult[] = [];
      for (let k = 0; k < reps; k++) same.push(await timedRun(env, config, step, pct, change, before));
      waits.push(...same.map((x) => x.wait));
      const mid = [...same].sort((a, b) => a.wall - b.wall)[same.length >> 1];
      runs.push(...same.filter((x) => x !== mid && (!x.exact || !x.counts)), mid);
      const raws = Array.from({ length: reps }, () => rawBaseline(file, storeDir));
      const med = (k: keyof Raw) => median(raws.map((x) => x[k]));
      raw = { readMs: med("readMs"), hashMs: med("hashMs"), vectorsMs: med("vectorsMs"), totalMs: med("totalMs") };
    }
    return { corpus: c, runs, waits, raw: raw! };
  } finally {
    await stopChild(child);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function incrementalSuite(ctx: BenchContext): Promise<SuiteOutput> {
  const db = await createBenchDatabase();
  const dir = tempDir("incremental");
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  pool.on("error", () => {}); // sessions end when the database is dropped
  pool.on("connect", (client) => client.on("error", () => {}));
  const env: Env = { ctx, dir, url: db.url, pool };
  try {
    await migrate(pool, silentLogger);
    const q = ctx.quick;
    const size = (n: number) => (n >= 1000 ? `${n / 1000}k` : String(n));
    const hashDocs = q ? 5_000 : 100_000;
    const liteDocs = q ? 300 : 10_000;
    const corpora: Corpus[] = [
      { id: `bench-hash-${size(hashDocs)}`, label: `bench-hash ${size(hashDocs)}`, size: size(hashDocs), docs: hashDocs, embedder: { plugin: path.join(ROOT, "bench/fixtures/hash-embedder.ts"), options: { dims: HASH_DIMS } } },
      // As pipeline.yaml configures it: two model copies, one per core.
      { id: `use-lite-${size(liteDocs)}`, label: `use-lite ${size(liteDocs)}`, size: size(liteDocs), docs: liteDocs, embedder: { plugin: "use-lite", options: { threads: 2 } } },
    ];
    const results: CorpusResult[] = [];
    for (const c of corpora) results.push(await measureCorpus(env, c, 3));
    return report(ctx, results);
  } finally {
    await pool.end().catch(() => {});
    await db.drop().catch((err) => ctx.log(`dropping ${db.name} failed: ${(err as Error).message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function report(ctx: BenchContext, results: CorpusResult[]): SuiteOutput {
  const tables: Table[] = [];
  const ratios: Ratio[] = [];
  const notes: string[] = [];
  const yn = (b: boolean) => (b ? "yes" : "**no**");
  const unchanged = (x: CorpusResult) => x.runs.findLast((r) => r.pct === 0)!;
  const fullRun = (x: CorpusResult) => x.runs[0];
  for (const x of results) {
    const full = fullRun(x).wall;
    tables.push({
      title: `${x.corpus.label}: ${x.corpus.docs.toLocaleString("en-US")} sample-corpus docs, ${x.corpus.embedder.plugin.endsWith(".ts") ? `bench-hash ${HASH_DIMS}-d` : "use-lite 512-d, threads 2"}, batch_size 250, flat index`,
      columns: ["run", "edits / inserts / deletes", "docs read", "embedded", "reused", "removed", "embedded = edits + inserts", "reused, removed as expected", "wall s", "÷ full run",
        "pickup s", "enumerate s", "embed s", "build_index wait s", "build_index s", "build load / assemble / engine ms"],
      rows: x.runs.map((r) => [r.step, `${r.change.edits} / ${r.change.inserts} / ${r.change.deletes}`, r.read, r.embedded, r.reused, r.removed, yn(r.exact), yn(r.counts),
        num(r.wall, 2), r === x.runs[0] ? "1" : num(r.wall / full, 4), num(r.pickup, 2), num(r.enumerate, 2), num(r.embed, 2), num(r.wait, 2), num(r.build, 2),
        `${num(r.buildMs.load, 0)} / ${num(r.buildMs.assemble, 0)} / ${num(r.buildMs.engine, 0)}`]),
      note: "changes are cumulative, each step applied to the jsonl source before its run; wall = apfa.runs created_at → finished_at = pickup (created → embed_all starts) + enumerate (embed_all: read, hash, " +
        "compare with the base's rows.jsonl, batches out) + embed (last batch enumerated → fan-in) + build_index wait (fan-in → the job starts, from apfa.job_history) + build_index (load the base, assemble, " +
        "engine.build, write, publish; 0 / 0 / 0 ms when nothing changed and the base version stands); the 0 % row is the median of 3 unchanged runs",
    });
    for (const r of x.runs.filter((y) => !y.exact || !y.counts)) {
      notes.push(`${x.corpus.label}, ${r.step} run: embedded ${r.embedded} (edits + inserts = ${r.change.edits + r.change.inserts}), changed ${r.changed} (edits ${r.change.edits}), reused ${r.reused}, removed ${r.removed} (deletes ${r.change.deletes}): the counters do not match the change applied.`);
    }
  }

  const raw: Table = {
    title: "Unchanged run against the raw baseline (the work it cannot skip)",
    columns: ["corpus", "unchanged run s", "raw read + parse ms", "raw SHA-256 ms", "raw vectors ms", "raw total ms", "run ÷ raw"],
    rows: [],
    note: "raw = fs.readFileSync of the corpus, JSON.parse per line, node:crypto SHA-256 of every text, then the latest version's vector file read and copied into one Float32Array; median of 3, in the bench process right after the unchanged runs",
  };
  for (const x of results) {
    const u = unchanged(x).wall;
    const v = (u * 1000) / x.raw.totalMs;
    raw.rows.push([x.corpus.label, num(u, 2), num(x.raw.readMs), num(x.raw.hashMs), num(x.raw.vectorsMs), num(x.raw.totalMs), ratioText(v)]);
    const lite = x.corpus.embedder.plugin === "use-lite";
    ratios.push(
      // The hash embedder makes a full run nearly free, so its ratio measures the pipeline, not the goal's model.
      { id: `incremental/${x.corpus.id}/unchanged_vs_full`, label: `${x.corpus.label}: unchanged run ÷ full run${lite ? "" : " (no goal: the hash embedder costs next to nothing)"}`, value: u / fullRun(x).wall, better: "lower", ...(lite ? { goal: 0.02 } : {}) },
      { id: `incremental/${x.corpus.id}/unchanged_vs_raw`, label: `${x.corpus.label}: unchanged run ÷ raw read + SHA-256 + vector copy`, value: v, better: "lower", goal: 2 },
    );
  }
  tables.push(raw);

  const [hash, lite] = results;
  const scale = hash.corpus.docs / lite.corpus.docs;
  const liteFull = fullRun(lite).wall;
  const estFull = liteFull * scale;
  const u = unchanged(hash).wall;
  const hs = hash.corpus.size;
  tables.push({
    title: `Default model at ${hs}: the unchanged run measured, the use-lite full run ESTIMATED`,
    columns: ["figure", "value"],
    rows: [
      [`use-lite full run, ${lite.corpus.size} docs (measured)`, `${num(liteFull)} s (${num(lite.corpus.docs / liteFull)} docs/s)`],
      [`use-lite full run, ${hs} docs (ESTIMATE: ${lite.corpus.size} time × ${num(scale, 0)})`, `${num(estFull)} s`],
      [`unchanged run, ${hs} docs (measured with bench-hash ${HASH_DIMS}-d)`, `${num(u, 2)} s`],
      ["unchanged ÷ estimated full run (goal ≤ 0.02)", num(u / estFull, 4)],
      ["unchanged run under 60 s", u < 60 ? "yes" : "**no**"],
    ],
    note: "an unchanged run embeds nothing and never loads the model (embed_all hashes and compares, build_index keeps the base version), so its time depends on the corpus and the vector width, not on the model; bench-hash writes 512-d vectors like use-lite",
  });
  ratios.push(
    { id: `incremental/use-lite-${hs}-estimate/unchanged_vs_full`, label: `use-lite ${hs}: unchanged run ÷ full run (ESTIMATE: full run = ${lite.corpus.label} × ${num(scale, 0)})`, value: u / estFull, better: "lower", goal: 0.02 },
    { id: `incremental/${hash.corpus.id}/unchanged_run_s`, label: `${hash.corpus.label}: unchanged run (seconds)`, value: u, better: "lower", ...(ctx.quick ? {} : { goal: 60 }) },
  );

  // Log-scale x cannot show 0, so the unchanged run sits at 0.01 % (the axis label says so). Shares of each
  // corpus's own full run keep the fast corpus readable next to use-lite's minutes (seconds are in the tables).
  const x0 = (p: number) => (p === 0 ? 0.01 : p * 100);
  const chart = saveChart(ctx, "incremental-runs", "Run time by share of documents changed, against the full run", lineChart({
    title: "Run time by % of documents changed",
    xLabel: "% of documents changed (log scale; the 0 % run is plotted at 0.01)",
    yLabel: "run time, % of the same corpus's full run",
    logX: true,
    refLine: { y: 100, label: "full run" },
    series: results.map((x) => ({ name: x.corpus.label, points: x.runs.slice(1).map((r): [number, number] => [x0(r.pct), (r.wall / fullRun(x).wall) * 100]) })),
  }));

  if (results.every((x) => x.runs.every((r) => r.exact && r.counts))) notes.push("Every run embedded exactly its edits plus inserts (deletes embed nothing), and reused and removed matched the change applied.");
  const waits = results.flatMap((x) => x.waits);
  const slow = waits.filter((w) => w >= 0.25);
  if (slow.length) {
    notes.push(`build_index started 0.25 s or more after the fan-in in ${slow.length} of ${waits.length} runs (up to ${num(Math.max(...slow), 2)} s, in steps of about 0.5 s, the workers.poll_interval), ` +
      "as if the serial indexing queue's job missed its notification and waited for polls; in an unchanged run of a small corpus that wait is most of the run.");
  }
  const small = hash.runs.find((r) => r.pct === STEPS[1]);
  if (small) {
    const parts = small.buildMs.load + small.buildMs.assemble + small.buildMs.engine;
    notes.push(`${hash.corpus.label}: the ${small.step} run took ${num(small.wall, 2)} s, ${num(small.wall / u, 1)} × the unchanged run; for ${small.embedded} new vectors build_index rebuilds the whole version ` +
      `(load the base ${num(small.buildMs.load, 0)} ms, assemble ${num(small.buildMs.assemble, 0)} ms, engine ${num(small.buildMs.engine, 0)} ms, write and publish ${num(small.build - parts / 1000, 2)} s; waited ${num(small.wait, 2)} s to start).`);
  }
  notes.push(`Full runs use \`--full\` semantics on an empty store; each corpus then goes through ${STEPS.map((p) => `${p * 100} %`).join(", ")} changed, each step 60 % edits (text prefixed, so the embedded part changes), 20 % inserts and 20 % deletes; the corpus size stays the same. One worker process per corpus (bench/child/worker.ts, model loaded and warmed before the first run), queues as pipeline.yaml (embedding 4).`);
  if (ctx.quick) notes.push(`Quick mode: ${hash.corpus.label} and ${lite.corpus.label} instead of 100k and 10k; steps below one document change one.`);
  return { tables, ratios, charts: [chart], notes };
}
