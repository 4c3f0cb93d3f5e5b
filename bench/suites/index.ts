/**
 * Index suite, per size (10k, 100k; --large adds the ann suite's 1M comparison with FAISS) × 384 on realistic vectors (bench/vectors.ts):
 * build time against raw concatenation of the batches, load time (engine.open + docs, as the server loads a
 * version) against `fs.readFileSync` of the index file, search p50/p95 of `flat` against usearch `exactSearch`
 * called directly (and faiss-node's IndexFlatIP where installed), and `hnsw` recall@10 and speed-up.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import flat from "../../plugins/index/flat.ts";
import hnsw from "../../plugins/index/hnsw.ts";
import type { IndexArtifact, IndexEngine, Searcher } from "../../runtime/contracts.ts";
import { silentLogger } from "../../runtime/log.ts";
import { openDocTable } from "../../server/doc-table.ts";
import { median, num, ratioText, saveChart, tempDir, timeMs, type BenchContext, type Ratio, type SuiteOutput, type Table } from "../lib.ts";
import { barChart } from "../svg.ts";
import { docsJsonl, expand, medianNeighbourCosine, noiseForCosine, realVectors } from "../vectors.ts";
import { faissFlat, measureSearch } from "./index-search.ts";

const DIMS = 384;
const K = 10;
const pctx = { baseDir: "/", log: silentLogger, env: {} };

/** The version-loading path of server/index-holder.ts, timed in its two parts: engine.open, then docs.jsonl scanned for its line offsets. */
async function loadVersion(engine: IndexEngine, dir: string, count: number): Promise<{ searcher: Searcher; openMs: number; docsMs: number }> {
  let t = performance.now();
  const searcher = await engine.open(dir, { dims: DIMS, count });
  const openMs = performance.now() - t;
  t = performance.now();
  const docs = await openDocTable(path.join(dir, "docs.jsonl"), { sizeHint: count });
  const docsMs = performance.now() - t;
  await docs.close();
  if (docs.count !== count) throw new Error(`docs.jsonl has ${docs.count} rows, expected ${count}`);
  return { searcher, openMs, docsMs };
}

function concat(batches: Float32Array[], count: number): Float32Array {
  const out = new Float32Array(count * DIMS);
  let off = 0;
  for (const b of batches) {
    out.set(b, off);
    off += b.length;
  }
  return out;
}

export async function indexSuite(ctx: BenchContext): Promise<SuiteOutput> {
  const q = ctx.quick;
  const rv = await realVectors(q ? 100 : 1000, q ? 20 : 200, DIMS, ctx.log);
  const nnCos = medianNeighbourCosine(rv);
  const noise = noiseForCosine(nnCos);
  // 1M (--large) is measured by the ann suite, side by side with FAISS; building it twice would double the run.
  const sizes = q ? [10_000] : [10_000, 100_000];
  const reps = q ? 3 : 7;
  const engines = {
    flat: await flat.create(flat.options.parse({}), pctx),
    hnsw: await hnsw.create(hnsw.options.parse({}), pctx),
    hnsw256: await hnsw.create(hnsw.options.parse({ expansion_search: 256 }), pctx),
  };
  const build: Table = { title: `Build (${DIMS}-d, median of ${reps})`, columns: ["vectors", "raw concat ms", "flat build ms", "flat ÷ raw", "hnsw build ms", "hnsw ÷ raw"], rows: [], note: "raw = concatenating the 1,000-row batches into one Float32Array (what build_index does first); build = engine.build on the result; hnsw is built once" };
  const load: Table = { title: `Load (${DIMS}-d, median of ${reps}; files in the page cache)`, columns: ["vectors", "engine", "readFileSync ms", "engine.open ms", "docs ms", "open + docs ms", "÷ raw"], rows: [], note: "open + docs is what the server does to load a version (server/index-holder.ts): engine.open, then docs.jsonl scanned for its line offsets (server/doc-table.ts); raw = fs.readFileSync of the engine's index file" };
  const exact: Table = { title: `Exact search, k = ${K}, ${rv.queryCount} real queries`, columns: ["vectors", "exactSearch p50 ms", "p95", "apfa flat p50 ms", "p95", "flat ÷ raw p50", "flat ÷ raw p95", "exactSearch 1 thread p50", "faiss-node p50 ms", "p95"], rows: [], note: "usearch exactSearch with threads = 0 (all cores, as flat calls it) and with 1 thread, and faiss-node IndexFlatIP, called directly on the same vectors; flat goes through the Searcher" };
  const approx: Table = { title: `HNSW (default options: connectivity 16, grown by the build's recall check where it misses; expansion_add 128) against exact search`, columns: ["vectors", "expansion_search", "p50 ms", "p95 ms", "speed-up over flat p50", "recall@10 (rows)", "recall@10 (source docs)"], rows: [], note: `queries are use-lite embeddings of ${rv.queryCount} corpus docs not in the index; rows past the ${rv.base.length / DIMS} embedded docs are copies perturbed to cosine ${nnCos.toFixed(3)} from their source (the corpus's median nearest-neighbour cosine), so each source has up to ${Math.ceil(Math.max(...sizes) / (rv.base.length / DIMS))} near-tied copies; "source docs" counts a hit when it is a copy of a document in the exact top 10` };
  const ratios: Ratio[] = [];
  const notes: string[] = [];
  const chart: Record<string, number[]> = { raw: [], flat: [], faiss: [], hnsw: [], concat: [], fbuild: [], read: [], fload: [], hload: [] };

  for (const n of sizes) {
    const label = n >= 1e6 ? `${n / 1e6}M` : `${n / 1e3}k`;
    ctx.log(`${label}: vectors`);
    let batches = expand(rv, n, 1000, noise);
    const dir = tempDir(`index-${label}`);
    try {
      const tc: number[] = [];
      const tb: number[] = [];
      const vectors = concat(batches, n);
      for (let i = 0; i < reps; i++) {
        tc.push(await timeMs(() => concat(batches, n)));
        tb.push(await timeMs(() => engines.flat.build(vectors, DIMS)));
      }
      batches = [];
      const arts: Record<"flat" | "hnsw", IndexArtifact> = { flat: await engines.flat.build(vectors, DIMS), hnsw: undefined as unknown as IndexArtifact };
      ctx.log(`${label}: hnsw build`);
      const hb = await timeMs(async () => (arts.hnsw = await engines.hnsw.build(vectors, DIMS)));
      const docs = docsJsonl(rv.docs, n);
      for (const name of ["flat", "hnsw"] as const) {
        fs.mkdirSync(path.join(dir, name));
        for (const [f, bytes] of Object.entries(arts[name].files)) fs.writeFileSync(path.join(dir, name, f), bytes);
        fs.writeFileSync(path.join(dir, name, "docs.jsonl"), docs);
      }
      const [c, b] = [tc, tb].map(median);
      build.rows.push([label, num(c), num(b), ratioText(b / c), num(hb), ratioText(hb / c)]);
      ratios.push({ id: `index/${label}/flat_build`, label: `${label}: flat build ÷ raw concatenation`, value: b / c, better: "lower", goal: 2 });
      chart.concat.push(c);
      chart.fbuild.push(b);

      ctx.log(`${label}: load`);
      for (const name of ["flat", "hnsw"] as const) {
        const t = { read: [] as number[], open: [] as number[], docs: [] as number[], both: [] as number[] };
        for (let i = 0; i < reps; i++) {
          t.read.push(await timeMs(() => fs.readFileSync(path.join(dir, name, arts[name].main))));
          const v = await loadVersion(engines[name], path.join(dir, name), n);
          await v.searcher.close();
          t.open.push(v.openMs);
          t.docs.push(v.docsMs);
          t.both.push(v.openMs + v.docsMs);
        }
        const [r, o, d, l] = [t.read, t.open, t.docs, t.both].map(median);
        load.rows.push([label, name, num(r), num(o), num(d), num(l), ratioText(l / r)]);
        ratios.push({ id: `index/${label}/${name}_load`, label: `${label}: ${name} load (open + docs) ÷ readFileSync`, value: l / r, better: "lower", goal: 2 });
        if (name === "flat") chart.read.push(r);
        chart[name === "flat" ? "fload" : "hload"].push(l);
      }

      ctx.log(`${label}: search`);
      const searchers = {
        flat: (await loadVersion(engines.flat, path.join(dir, "flat"), n)).searcher,
        hnsw: (await loadVersion(engines.hnsw, path.join(dir, "hnsw"), n)).searcher,
        hnsw256: (await loadVersion(engines.hnsw256, path.join(dir, "hnsw"), n)).searcher,
      };
      const faiss = faissFlat(vectors, DIMS);
      const s = await measureSearch({ vectors, dims: DIMS, k: K, queries: rv.queries, sourceRows: rv.base.length / DIMS, searchers, faiss });
      for (const x of Object.values(searchers)) await x.close();
      exact.rows.push([label, num(s.p50.raw, 3), num(s.p95.raw, 3), num(s.p50.flat, 3), num(s.p95.flat, 3), ratioText(s.p50.flat / s.p50.raw), ratioText(s.p95.flat / s.p95.raw), num(s.p50.raw1, 3),
        faiss ? num(s.p50.faiss, 3) : "not installed", faiss ? num(s.p95.faiss, 3) : "–"]);
      for (const e of ["hnsw", "hnsw256"] as const) {
        approx.rows.push([label, e === "hnsw" ? "64 (default)" : "256", num(s.p50[e], 3), num(s.p95[e], 3), ratioText(s.p50.flat / s.p50[e]), num(s.recall[e]!, 3), num(s.docRecall[e]!, 3)]);
      }
      ratios.push(
        { id: `index/${label}/flat_search_p50`, label: `${label}: flat search p50 ÷ exactSearch`, value: s.p50.flat / s.p50.raw, better: "lower", goal: 1.5 },
        { id: `index/${label}/flat_search_p95`, label: `${label}: flat search p95 ÷ exactSearch`, value: s.p95.flat / s.p95.raw, better: "lower", goal: 1.5 },
        { id: `index/${label}/hnsw_recall10`, label: `${label}: hnsw recall@10 (rows, ÷ exact)`, value: s.recall.hnsw!, better: "higher" },
        { id: `index/${label}/hnsw_speedup`, label: `${label}: hnsw speed-up over flat (p50)`, value: s.p50.flat / s.p50.hnsw, better: "higher" },
      );
      if (faiss && s.recall.faiss! < 0.999) notes.push(`${label}: faiss-node IndexFlatIP returned ${(s.recall.faiss! * 100).toFixed(1)}% of the exact rows (ties at equal scores).`);
      for (const e of ["raw", "flat", "faiss", "hnsw"] as const) chart[e].push(s.p50[e]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const cats = sizes.map((n) => (n >= 1e6 ? `${n / 1e6}M` : `${n / 1e3}k`));
  const charts = [
    saveChart(ctx, "index-search", "Search p50 by index size", barChart({ title: "Search p50 (k = 10)", xLabel: "vectors × 384", yLabel: "ms", categories: cats,
      series: [{ name: "usearch exactSearch", values: chart.raw }, { name: "apfa flat", values: chart.flat }, { name: "faiss-node flat", values: chart.faiss }, { name: "apfa hnsw", values: chart.hnsw }] })),
    saveChart(ctx, "index-build-load", "Build and load time by index size", barChart({ title: "Build and load", xLabel: "vectors × 384", yLabel: "ms", categories: cats,
      series: [{ name: "raw concat", values: chart.concat }, { name: "flat build", values: chart.fbuild }, { name: "readFileSync", values: chart.read }, { name: "flat load", values: chart.fload }, { name: "hnsw load", values: chart.hload }] })),
  ];
  return { tables: [build, load, exact, approx], ratios, charts, notes };
}
