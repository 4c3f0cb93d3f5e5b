/**
 * hnsw's build-time recall check with and without logged queries, against queries it never saw (the table in
 * docs/index-engines.md, *Logged queries*). Synthetic near-duplicate data: `docs` "documents" drawn around
 * `topics` centres (noise norm `spread`), then `copies` noisy copies of each, the copy noise `f` × the one that
 * puts a copy at its document's median nearest-neighbour cosine. Queries are new documents of the same topics:
 * 500 handed to the build as logged queries, 200 others held out. Builds on one thread, so a run repeats exactly.
 * Prints one JSON line per build.
 * `node --import tsx bench/logged-query-recall.ts [docs 200] [copies 100] [dims 128] [spread 0.8] [topics 20] [f 0.25]`.
 * @module
 */
import * as fsp from "node:fs/promises";
import { queryProbe } from "../plugins/index/_recall.ts";
import hnsw from "../plugins/index/hnsw.ts";
import type { IndexArtifact, IndexEngine } from "../runtime/contracts.ts";
import { silentLogger } from "../runtime/log.ts";
import { normalizeRows, randomUnitVectors, writeArtifact } from "../test/conformance/index.ts";
import { gaussian, medianNeighbourCosine, noiseForCosine } from "./vectors.ts";

const args = process.argv.slice(2).map(Number);
const [docsN, copies, dims, spread, topics, f] = [200, 100, 128, 0.8, 20, 0.25].map((d, i) => (Number.isFinite(args[i]) ? args[i] : d));
const ctx = { baseDir: "/", log: silentLogger, env: {} };
const centres = randomUnitVectors(topics, dims, 5);

/** `n` documents around the topic centres. */
function documents(n: number, seed: number): Float32Array {
  const g = gaussian(seed);
  const sigma = spread / Math.sqrt(dims);
  const v = new Float32Array(n * dims);
  for (let i = 0; i < n; i++) for (let j = 0; j < dims; j++) v[i * dims + j] = centres[(i % topics) * dims + j] + sigma * g();
  return normalizeRows(v, dims);
}

const base = documents(docsN, 11);
const median = medianNeighbourCosine({ dims, base });
const noise = noiseForCosine(median) * f;
const corpus = new Float32Array(docsN * copies * dims);
const g = gaussian(99);
for (let i = 0; i < docsN * copies; i++) {
  for (let j = 0; j < dims; j++) corpus[i * dims + j] = base[(i % docsN) * dims + j] + (i >= docsN ? (noise / Math.sqrt(dims)) * g() : 0);
}
normalizeRows(corpus, dims);
const count = docsN * copies;
const logged = documents(500, 1234);
const heldOut = documents(200, 5678);
console.log(JSON.stringify({ count, dims, median_neighbour_cos: +median.toFixed(3), copy_cos: +(1 / Math.sqrt(1 + noise * noise)).toFixed(3) }));

/** Recall@10 of the built version, opened as a server opens it, on the held-out queries. */
async function heldOutRecall(art: IndexArtifact): Promise<number> {
  const dir = await writeArtifact(art);
  const s = await (hnsw.create(hnsw.options.parse({}), ctx) as IndexEngine).open(dir, { dims, count });
  const probe = queryProbe(corpus, dims, 10, heldOut);
  const answers: number[][] = [];
  for (let i = 0; i < 200; i++) answers.push((await s.search(heldOut.slice(i * dims, (i + 1) * dims), 10)).rows);
  await s.close();
  await fsp.rm(dir, { recursive: true, force: true });
  return probe.score(answers);
}

for (const queries of [undefined, logged]) {
  const t0 = performance.now();
  const art = await (hnsw.create(hnsw.options.parse({ on_recall_miss: "accept", build_threads: 1 }), ctx) as IndexEngine).build(corpus, dims, queries ? { queries } : {});
  const build_s = +((performance.now() - t0) / 1000).toFixed(1);
  const r = art.recall!;
  console.log(JSON.stringify({
    logged_queries: queries ? 500 : 0, build_s, params: r.params, measured: +r.measured.toFixed(3), corpus: r.corpus, queries: r.queries,
    held_out: +(await heldOutRecall(art)).toFixed(3),
    tried: r.tried.map((t) => ({ ...t.params, recall: +t.recall.toFixed(3), corpus: t.corpus && +t.corpus.toFixed(3), queries: t.queries && +t.queries.toFixed(3) })),
  }));
}
