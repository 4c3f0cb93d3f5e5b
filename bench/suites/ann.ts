/**
 * ANN suite: apfa's engines side by side with FAISS (Debian's python3-faiss, run by bench/faiss-ann.py on the
 * same .npy files) in one run. Two data sets — a clustered Gaussian mixture and the near-duplicate construction
 * of bench/vectors.ts (real embeddings plus perturbed copies) — at 100k × 384 (5k quick; 100k and 1M with
 * --large; APFA_BENCH_ANN_SETS="near-duplicate 1M,..." runs only the sets it names, and APFA_BENCH_ANN_ENGINES
 * "hnsw,faiss,py-hnsw,py-ivf" only the engines it names besides exact search), 200 held-out queries,
 * exact top-10 as truth. Per engine and setting: build seconds, bytes per
 * vector, p50/p95 ms per query, recall@10; and a recall-vs-QPS chart per data set, one line per engine.
 * @module
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import type * as Usearch from "usearch";
import faiss, { faissNodeInstalled, META as FAISS_META } from "../../plugins/index/faiss.ts";
import flat from "../../plugins/index/flat.ts";
import hnsw, { META } from "../../plugins/index/hnsw.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { silentLogger } from "../../runtime/log.ts";
import { encodeNpy } from "../../runtime/npy.ts";
import { num, percentile, ROOT, saveChart, tempDir, type BenchContext, type Ratio, type SuiteOutput, type Table } from "../lib.ts";
import { lineChart } from "../svg.ts";
import { expand, gaussian, medianNeighbourCosine, noiseForCosine, realVectors } from "../vectors.ts";

const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;
const DIMS = 384;
const K = 10;
const QUERIES = 200;
const EFS = [16, 32, 64, 128, 256, 512];
const pctx = { baseDir: "/", log: silentLogger, env: {} };

/**
 * The engines a run measures besides exact search: apfa's `hnsw` and `faiss` engines, and FAISS's HNSW and IVF in
 * Python (`py-hnsw`, `py-ivf`); all unless APFA_BENCH_ANN_ENGINES names some, to rerun a costly part alone.
 */
const ENGINES = ["hnsw", "faiss", "py-hnsw", "py-ivf"] as const;
function enginesToRun(env: string | undefined): Set<(typeof ENGINES)[number]> {
  const named = env?.split(",").map((x) => x.trim()).filter(Boolean);
  if (!named?.length) return new Set(ENGINES);
  const unknown = named.filter((x) => !(ENGINES as readonly string[]).includes(x));
  if (unknown.length) throw new Error(`APFA_BENCH_ANN_ENGINES: unknown engine ${JSON.stringify(unknown[0])} (known: ${ENGINES.join(", ")})`);
  return new Set(named as (typeof ENGINES)[number][]);
}

/** One measured (engine, setting) point. */
export interface Point {
  engine: string;
  setting: string;
  build_s: number;
  bytes_per_vector: number;
  p50_ms: number;
  p95_ms: number;
  recall: number;
}

function unit(v: Float32Array): Float32Array {
  for (let r = 0; r < v.length / DIMS; r++) {
    let s = 0;
    for (let j = r * DIMS; j < (r + 1) * DIMS; j++) s += v[j] * v[j];
    const inv = 1 / Math.sqrt(s || 1);
    for (let j = r * DIMS; j < (r + 1) * DIMS; j++) v[j] *= inv;
  }
  return v;
}

/** `n` points of a 1,000-centre Gaussian mixture on the sphere (noise norm 0.75, cosine ≈ 0.8 to the centre). */
function mixture(n: number, seed: number): Float32Array {
  const c = unit(Float32Array.from({ length: 1000 * DIMS }, gaussian(17)));
  const g = gaussian(seed);
  const pick = gaussian(seed + 1);
  const v = new Float32Array(n * DIMS);
  for (let r = 0; r < n; r++) {
    const at = Math.floor(Math.abs(pick() * 7919)) % 1000;
    for (let j = 0; j < DIMS; j++) v[r * DIMS + j] = c[at * DIMS + j] + (0.75 / Math.sqrt(DIMS)) * g();
  }
  return unit(v);
}

/** Exact top-k row numbers per query (usearch exactSearch; both arrays start at their buffer's byte 0). */
function exactTruth(base: Float32Array, queries: Float32Array): Int32Array[] {
  const m = usearch.exactSearch(base, queries, DIMS, K, usearch.MetricKind.IP, 0) as Usearch.BatchMatches;
  return Array.from({ length: queries.length / DIMS }, (_, i) => Int32Array.from(m.get(i).keys, Number));
}

async function measure(engine: IndexEngine, dir: string, n: number, queries: Float32Array, truth: Int32Array[]): Promise<Pick<Point, "p50_ms" | "p95_ms" | "recall">> {
  const s = await engine.open(dir, { dims: DIMS, count: n });
  const times: number[] = [];
  let hits = 0;
  for (let i = 0; i < truth.length; i++) {
    const q = queries.slice(i * DIMS, (i + 1) * DIMS);
    const t = performance.now();
    const { rows } = await s.search(q, K);
    times.push(performance.now() - t);
    const want = new Set(truth[i]);
    hits += rows.filter((r) => want.has(r)).length;
  }
  await s.close();
  return { p50_ms: percentile(times, 50), p95_ms: percentile(times, 95), recall: hits / (K * truth.length) };
}

function writeFiles(dir: string, files: Record<string, Uint8Array>): number {
  fs.mkdirSync(dir, { recursive: true });
  for (const [f, b] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), b);
  return Object.entries(files).filter(([f]) => f !== META).reduce((a, [, b]) => a + b.byteLength, 0);
}

/** apfa's engines: flat, then hnsw per quantisation (its recall check on, then swept over expansion_search). */
async function apfaPoints(ctx: BenchContext, dir: string, base: Float32Array, queries: Float32Array, truth: Int32Array[], checks: Table, label: string, withHnsw: boolean): Promise<Point[]> {
  const n = base.length / DIMS;
  const out: Point[] = [];
  const f = await flat.create(flat.options.parse({}), pctx);
  let t = performance.now();
  const fa = await f.build(base, DIMS);
  const fb = (performance.now() - t) / 1000;
  const fbytes = writeFiles(path.join(dir, "flat"), fa.files);
  out.push({ engine: "apfa flat", setting: "exact", build_s: fb, bytes_per_vector: fbytes / n, ...(await measure(f, path.join(dir, "flat"), n, queries, truth)) });
  ctx.log(`${label} point ${JSON.stringify(out[0])}`);
  // At 1M each graph is built once, at FAISS's M 16, with the recall check off: the check rebuilds with doubled
  // connectivity where it misses, and on the near-duplicate set each 1M build takes 10-20 minutes here (the
  // million suite measures the check at 1M on a real run). i8 is left out there: at 100k its recall plateaus
  // under 0.95 on both data sets whatever the connectivity.
  const large = n >= 1_000_000;
  const quantizations = !withHnsw ? [] : ctx.quick ? (["f32", "i8"] as const) : large ? (["f32", "f16"] as const) : (["f32", "f16", "i8"] as const);
  for (const quantization of quantizations) {
    ctx.log(`${label}: apfa hnsw ${quantization} build`);
    const e = await hnsw.create(hnsw.options.parse(large ? { quantization, connectivity: 16, target_recall: 0 } : { quantization }), pctx);
    t = performance.now();
    const art = await e.build(base, DIMS);
    const bs = (performance.now() - t) / 1000;
    const d = path.join(dir, `hnsw-${quantization}`);
    const bytes = writeFiles(d, art.files);
    const r = art.recall; // none at 1M, where the check is off
    const chosen = r?.params.expansion_search;
    // The sweep opens the same graph at each ef; the check's recorded choice would otherwise be served instead.
    fs.writeFileSync(path.join(d, META), JSON.stringify({ built_count: n, removed_since_build: 0 }));
    const efs = ctx.quick ? [16, 64, 256] : large ? [...EFS, 1024, 2048] : EFS;
    for (const ef of [...new Set([...efs, ...(chosen ? [chosen] : [])])].sort((a, b) => a - b)) {
      const s = await hnsw.create(hnsw.options.parse({ quantization, expansion_search: ef }), pctx);
      const m = await measure(s, d, n, queries, truth);
      const p: Point = { engine: `apfa hnsw ${quantization}`, setting: `M ${r?.params.connectivity ?? 16} ef ${ef}${ef === chosen ? " (check's choice)" : ""}`, build_s: bs, bytes_per_vector: bytes / n, ...m };
      out.push(p);
      ctx.log(`${label} point ${JSON.stringify(p)}`);
      if (r && ef === chosen) {
        checks.rows.push([label, quantization, r.tried.map((x) => `${x.params.connectivity}/${x.params.expansion_search}: ${x.recall.toFixed(3)}`).join(", "), `M ${r.params.connectivity} ef ${chosen}`, num(r.measured, 3), num(m.recall, 3), r.met ? "met" : `missed (${art.fallback ? "exact fallback" : "kept"})`]);
      }
    }
  }
  return out;
}

/** The IVF list count bench/faiss-ann.py uses at `n` rows, so apfa's `faiss` engine builds the same index. */
const nlistFor = (n: number, quick: boolean) => (quick ? 64 : n <= 200_000 ? 256 : 1024);

/**
 * apfa's own `faiss` engine on the IVF index FAISS's rows use (`IVF<nlist>,Flat`), built with its recall check on
 * and served as a server serves it (a worker thread, inverted lists memory-mapped), then swept over nprobe; or the
 * reason it was not measured. The check's row says what a pipeline without logged queries would be served with.
 */
async function apfaFaissPoints(ctx: BenchContext, dir: string, base: Float32Array, queries: Float32Array, truth: Int32Array[], label: string): Promise<Point[] | string> {
  if (!faissNodeInstalled()) return `${label}: apfa faiss not measured: faiss-node is not installed (scripts/build-faiss-node.sh)`;
  const n = base.length / DIMS;
  const factory = `IVF${nlistFor(n, ctx.quick)},Flat`;
  ctx.log(`${label}: apfa faiss ${factory} build`);
  const e = await faiss.create(faiss.options.parse({ factory }), pctx);
  const t = performance.now();
  const art = await e.build(base, DIMS);
  const bs = (performance.now() - t) / 1000;
  const d = path.join(dir, "apfa-faiss");
  const bytes = writeFiles(d, art.files);
  const chosen = art.recall?.params.nprobe;
  // The sweep opens the same index at each nprobe; the check's recorded choice would otherwise be served instead.
  fs.rmSync(path.join(d, FAISS_META), { force: true });
  const out: Point[] = [];
  for (const nprobe of [...new Set([1, 2, 4, 8, 16, 32, 64, ...(chosen ? [chosen] : [])])].sort((a, b) => a - b)) {
    const s = await faiss.create(faiss.options.parse({ factory, nprobe }), pctx);
    const p: Point = { engine: `apfa faiss ${factory}`, setting: `nprobe ${nprobe}${nprobe === chosen ? ` (check's choice, ${art.recall!.measured.toFixed(3)})` : ""}`, build_s: bs, bytes_per_vector: bytes / n, ...(await measure(s, d, n, queries, truth)) };
    out.push(p);
    ctx.log(`${label} point ${JSON.stringify(p)}`);
  }
  return out;
}

/** FAISS's points from bench/faiss-ann.py, or undefined (with the reason) when python3-faiss is missing. */
function faissPoints(dir: string, quick: boolean, kinds: string[]): Point[] | string {
  const py = fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const r = spawnSync(py, [path.join(ROOT, "bench/faiss-ann.py"), dir, ...(quick ? ["quick"] : [])], { encoding: "utf8", maxBuffer: 1 << 26, env: { ...process.env, APFA_FAISS_ANN: kinds.join(",") } });
  if (r.status !== 0) return `FAISS not measured: ${py} bench/faiss-ann.py exited ${r.status}: ${(r.stderr || String(r.error)).trim().split("\n").at(-1)} (apt-get install python3-faiss python3-numpy)`;
  return r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Point);
}

/** The first point of `engine` (in sweep order) reaching `recall`. */
const firstAt = (pts: Point[], engine: string, recall: number) => pts.find((p) => p.engine === engine && p.recall >= recall);

export async function annSuite(ctx: BenchContext): Promise<SuiteOutput> {
  // Quick (CI) proves the suite runs in about a minute; its figures are not the report's.
  const sizes = ctx.quick ? [5_000] : ctx.large ? [100_000, 1_000_000] : [100_000];
  // A rerun of some sets only (e.g. "near-duplicate 1M"); the report's ann section then holds only those.
  const only = process.env.APFA_BENCH_ANN_SETS?.split(",").map((x) => x.trim()).filter(Boolean);
  const running = enginesToRun(process.env.APFA_BENCH_ANN_ENGINES);
  const rv = await realVectors(ctx.quick ? 100 : 1000, QUERIES, DIMS, ctx.log);
  const noise = noiseForCosine(medianNeighbourCosine(rv));
  const tables: Table[] = [];
  const ratios: Ratio[] = [];
  const notes: string[] = [];
  const charts: SuiteOutput["charts"] = [];
  const checks: Table = { title: "hnsw's build-time recall check against held-out queries", columns: ["data", "quantization", "M/ef tried: check recall", "chosen", "check recall@10 (held-out corpus rows)", "outside queries' recall@10 at that ef", "target 0.95"], rows: [],
    note: "the check queries with corpus rows it held out of the graph while measuring, then inserted; outside queries = the suite's 200 queries from outside the corpus, exact top-10 truth" };
  for (const n of sizes) {
    const label = n >= 1e6 ? `${n / 1e6}M` : `${n / 1e3}k`;
    // Near-duplicate first: it is the data set that tells the engines apart.
    for (const data of ["near-duplicate", "mixture"] as const) {
      const name = `${data} ${label}`;
      if (only && !only.includes(name)) continue;
      ctx.log(`${name}: vectors and exact truth`);
      let base: Float32Array;
      let queries: Float32Array;
      if (data === "mixture") {
        base = mixture(n, 101);
        queries = mixture(QUERIES, 202);
      } else {
        base = new Float32Array(n * DIMS);
        let off = 0;
        for (const part of expand(rv, n, 10_000, noise)) (base.set(part, off), (off += part.length));
        queries = rv.queries.slice();
      }
      const truth = exactTruth(base, queries);
      const dir = tempDir(`ann-${data}-${label}`);
      try {
        const npy = (file: string, v: Float32Array, rows: number, cols: number) => fs.writeFileSync(path.join(dir, file), Buffer.concat(encodeNpy(v, rows, cols)));
        npy("base.npy", base, n, DIMS);
        npy("queries.npy", queries, QUERIES, DIMS);
        npy("truth.npy", Float32Array.from(truth.flatMap((t) => Array.from(t))), QUERIES, K);
        const pts = await apfaPoints(ctx, dir, base, queries, truth, checks, name, running.has("hnsw"));
        const af = running.has("faiss") ? await apfaFaissPoints(ctx, dir, base, queries, truth, name) : [];
        if (typeof af === "string") notes.push(af);
        else pts.push(...af);
        ctx.log(`${name}: FAISS`);
        const fp = faissPoints(dir, ctx.quick, ["hnsw", "ivf"].filter((x) => running.has(`py-${x}` as (typeof ENGINES)[number])));
        if (typeof fp === "string") notes.push(fp);
        else pts.push(...fp);
        // Each point also goes to the suite's log (apfa's as they are measured), so an interrupted large run keeps
        // what it measured.
        if (typeof fp !== "string") for (const p of fp) ctx.log(`${name} point ${JSON.stringify(p)}`);
        tables.push({ title: `${name} × ${DIMS}: build, memory, latency, recall@10`, columns: ["engine", "setting", "build s", "bytes / vector", "p50 ms", "p95 ms", "QPS (1 / p50)", "recall@10"],
          rows: pts.map((p) => [p.engine, p.setting, num(p.build_s, 1), num(p.bytes_per_vector, 0), num(p.p50_ms, 3), num(p.p95_ms, 3), num(1000 / p.p50_ms, 0), num(p.recall, 3)]),
          note: "p50/p95 of one query per call (as a server searches); apfa hnsw and FAISS HNSW walk one query on one thread, flat scans on every core; bytes / vector = the index file(s) ÷ rows" });
        const engines = [...new Set(pts.map((p) => p.engine))];
        charts.push(saveChart(ctx, `ann-${data}-${label}`, `Recall against queries per second, ${name}`, lineChart({
          title: `${name} × ${DIMS}: recall@10 vs QPS`, xLabel: "recall@10", yLabel: "queries per second (1 / p50)",
          series: engines.map((e) => ({ name: e, points: pts.filter((p) => p.engine === e).map((p) => [p.recall, 1000 / p.p50_ms] as [number, number]).sort((a, b) => a[0] - b[0]) })),
        })));
        const exact = pts.find((p) => p.engine === "apfa flat")!;
        const ours = firstAt(pts, "apfa hnsw f32", 0.95);
        const theirs = firstAt(pts, "faiss HNSWFlat M16", 0.95);
        const small = ["f16", "i8"].map((q) => firstAt(pts, `apfa hnsw ${q}`, 0.95)).filter(Boolean) as Point[];
        const f32 = pts.find((p) => p.engine === "apfa hnsw f32");
        const id = `ann/${data}/${label}`;
        if (!f32) {
          // hnsw not measured in this run (APFA_BENCH_ANN_ENGINES): no hnsw ratios.
        } else if (ours) ratios.push({ id: `${id}/hnsw_speedup_at_0.95`, label: `${name}: apfa hnsw (first ef with recall ≥ 0.95) speed-up over exact, p50`, value: exact.p50_ms / ours.p50_ms, better: "higher", goal: 10 });
        else {
          const best = pts.filter((p) => p.engine === "apfa hnsw f32").reduce((a, b) => (b.recall > a.recall ? b : a));
          notes.push(`${name}: apfa hnsw f32 did not reach recall 0.95 in its sweep (best ${best.recall.toFixed(3)}, ${best.setting})`);
        }
        const ivf = pts.find((p) => p.engine.startsWith("apfa faiss") && p.recall >= 0.95);
        if (ivf) ratios.push({ id: `${id}/faiss_ivf_speedup_at_0.95`, label: `${name}: apfa faiss ${ivf.engine.split(" ").at(-1)} (first nprobe with recall ≥ 0.95) speed-up over exact, p50`, value: exact.p50_ms / ivf.p50_ms, better: "higher", goal: 10 });
        if (ours && theirs) ratios.push({ id: `${id}/qps_vs_faiss_at_0.95`, label: `${name}: apfa hnsw ÷ FAISS HNSW queries per second, each at its first setting with recall ≥ 0.95`, value: theirs.p50_ms / ours.p50_ms, better: "higher", goal: 1 });
        if (small.length && f32) {
          const best = small.reduce((a, b) => (a.bytes_per_vector < b.bytes_per_vector ? a : b));
          ratios.push({ id: `${id}/memory_at_0.95`, label: `${name}: smallest hnsw with recall ≥ 0.95 (${best.engine.split(" ").at(-1)}) bytes ÷ f32 hnsw bytes`, value: best.bytes_per_vector / f32.bytes_per_vector, better: "lower", goal: 0.6 });
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  tables.push(checks);
  return { tables, ratios, charts, notes };
}
