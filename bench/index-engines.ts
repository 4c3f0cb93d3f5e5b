/**
 * Index-engine benchmark: open and search cost of each engine against a raw baseline measured in the same run.
 *
 *   npx tsx bench/index-engines.ts [count=100000] [dims=384] [engines=flat,hnsw]   (add "faiss" when installed)
 *
 * Baselines: `fs.readFileSync` of the same file for open; usearch `exactSearch` called directly on a plain
 * Float32Array for flat search. Runs are interleaved and the median is reported, because on a shared 2-core
 * machine neighbouring load moves single runs by 2x.
 * @module
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as os from "node:os";
import * as path from "node:path";
import type * as Usearch from "usearch";
import faiss from "../plugins/index/faiss.ts";
import flat from "../plugins/index/flat.ts";
import hnsw from "../plugins/index/hnsw.ts";
import type { IndexEngine, Searcher } from "../runtime/contracts.ts";
import { silentLogger } from "../runtime/log.ts";
import { randomUnitVectors } from "../test/conformance/index.ts";

const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;
const count = Number(process.argv[2] ?? 100_000);
const dims = Number(process.argv[3] ?? 384);
const engines = (process.argv[4] ?? "flat,hnsw").split(",");
const ctx = { baseDir: "/", log: silentLogger, env: {} };
const plugins = { flat, hnsw, faiss } as const;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const time = async (f: () => unknown) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};
const fmt = (ms: number) => `${ms.toFixed(2)} ms`;

console.log(`${count}×${dims} random unit vectors, ${os.cpus().length} cores, node ${process.version}`);
const vectors = randomUnitVectors(count, dims, 1);
const queries = Array.from({ length: 50 }, (_, i) => randomUnitVectors(1, dims, 1000 + i));
let truth: number[][] | undefined;

for (const name of engines) {
  const plugin = plugins[name as keyof typeof plugins];
  const engine = (await plugin.create(plugin.options.parse({}) as never, ctx)) as IndexEngine;
  const buildMs = await time(async () => {
    const art = await engine.build(vectors, dims);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `apfa-bench-${name}-`));
    for (const [file, bytes] of Object.entries(art.files)) fs.writeFileSync(path.join(dir, file), bytes);
    (engine as IndexEngine & { dir: string; main: string }).dir = dir;
    (engine as IndexEngine & { dir: string; main: string }).main = art.main;
  });
  const { dir, main } = engine as IndexEngine & { dir: string; main: string };
  const size = fs.statSync(path.join(dir, main)).size;
  console.log(`\n[${name}] build ${(buildMs / 1000).toFixed(1)} s, ${(size / 2 ** 20).toFixed(1)} MiB`);

  const opens: number[] = [];
  const raws: number[] = [];
  let searcher: Searcher | undefined;
  for (let rep = 0; rep < 5; rep++) {
    raws.push(await time(() => fs.readFileSync(path.join(dir, main))));
    await searcher?.close();
    opens.push(await time(async () => (searcher = await engine.open(dir, { dims, count }))));
  }
  const s = searcher!;
  console.log(`open ${fmt(median(opens))} vs readFileSync ${fmt(median(raws))}: ratio ${(median(opens) / median(raws)).toFixed(2)}`);

  const ours: number[] = [];
  const direct: number[] = [];
  const results: number[][] = [];
  for (const q of queries) {
    ours.push(await time(async () => results.push((await s.search(q, 10)).rows)));
    if (name === "flat") direct.push(await time(() => usearch.exactSearch(vectors, q, dims, 10, usearch.MetricKind.IP, 0)));
  }
  const per = median(ours);
  if (name === "flat") {
    truth = results;
    console.log(`search ${fmt(per)}/query vs direct exactSearch ${fmt(median(direct))}: ratio ${(per / median(direct)).toFixed(2)}`);
  } else {
    console.log(`search ${fmt(per)}/query`);
  }
  if (truth && name !== "flat") {
    const hits = results.reduce((n, rows, i) => n + rows.filter((r) => truth![i].includes(r)).length, 0);
    console.log(`recall@10 vs flat: ${(hits / (10 * queries.length)).toFixed(3)}`);
  }
  console.log(`memoryBytes ${s.memoryBytes}`);
  await s.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
