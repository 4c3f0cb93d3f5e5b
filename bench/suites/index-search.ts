/**
 * The index suite's search measurement: per real query, usearch `exactSearch` called directly (all cores, as
 * `flat` calls it, and one thread), the `flat` Searcher, faiss-node's IndexFlatIP when installed, and `hnsw`
 * at its default `expansion_search` and at 256, in a rotating order so no engine always follows another.
 * @module
 */
import { createRequire } from "node:module";
import type * as Usearch from "usearch";
import type { Searcher } from "../../runtime/contracts.ts";
import { percentile, timeMs } from "../lib.ts";

const require = createRequire(import.meta.url);
const usearch = require("usearch") as typeof Usearch;

interface FaissIndex {
  add(x: number[]): void;
  search(x: number[], k: number): { labels: number[] };
}

/** faiss-node's IndexFlatIP holding `vectors`, or undefined when the optional addon is not installed. */
export function faissFlat(vectors: Float32Array, dims: number): FaissIndex | undefined {
  let f: { IndexFlatIP: new (d: number) => FaissIndex };
  try {
    f = require("faiss-node");
  } catch {
    return undefined;
  }
  const index = new f.IndexFlatIP(dims);
  for (let i = 0; i < vectors.length; i += 8192 * dims) index.add(Array.from(vectors.subarray(i, i + 8192 * dims)));
  return index;
}

export type Engine = "raw" | "raw1" | "flat" | "faiss" | "hnsw" | "hnsw256";

export interface SearchStats {
  p50: Record<Engine, number>;
  p95: Record<Engine, number>;
  /** Share of the exact top-k rows each engine returned (1 for exact engines barring ties). */
  recall: Partial<Record<Engine, number>>;
  /** Share of the exact top-k rows' source documents (row mod `sourceRows`) among each engine's results' sources. */
  docRecall: Partial<Record<Engine, number>>;
}

export async function measureSearch(opts: {
  vectors: Float32Array;
  dims: number;
  k: number;
  queries: Float32Array;
  sourceRows: number;
  searchers: { flat: Searcher; hnsw: Searcher; hnsw256: Searcher };
  faiss?: FaissIndex;
}): Promise<SearchStats> {
  const { vectors, dims, k, searchers, faiss } = opts;
  const qn = opts.queries.length / dims;
  const times: Record<Engine, number[]> = { raw: [], raw1: [], flat: [], faiss: [], hnsw: [], hnsw256: [] };
  const hits: Partial<Record<Engine, number>> = {};
  const docHits: Partial<Record<Engine, number>> = {};
  const warm = Math.min(10, qn);
  for (let w = -warm; w < qn; w++) {
    const qi = (w + qn) % qn;
    const qv = opts.queries.slice(qi * dims, (qi + 1) * dims);
    const qa = faiss ? Array.from(qv) : [];
    const exact = Array.from((usearch.exactSearch(vectors, qv, dims, k, usearch.MetricKind.IP, 0) as Usearch.Matches).keys, Number);
    const truth = new Set(exact);
    const truthDocs = new Set(exact.map((r) => r % opts.sourceRows));
    const score = (e: Engine, rows: number[]) => {
      if (w < 0) return;
      hits[e] = (hits[e] ?? 0) + rows.filter((r) => truth.has(r)).length;
      const docs = new Set(rows.map((r) => r % opts.sourceRows));
      docHits[e] = (docHits[e] ?? 0) + [...truthDocs].filter((d) => docs.has(d)).length / truthDocs.size;
    };
    const runs: Array<[Engine, () => Promise<unknown> | unknown]> = [
      ["raw", () => usearch.exactSearch(vectors, qv, dims, k, usearch.MetricKind.IP, 0)],
      ["raw1", () => usearch.exactSearch(vectors, qv, dims, k, usearch.MetricKind.IP, 1)],
      ["flat", async () => score("flat", (await searchers.flat.search(qv, k)).rows)],
      ["hnsw", async () => score("hnsw", (await searchers.hnsw.search(qv, k)).rows)],
      ["hnsw256", async () => score("hnsw256", (await searchers.hnsw256.search(qv, k)).rows)],
    ];
    if (faiss) runs.push(["faiss", () => score("faiss", faiss.search(qa, k).labels)]);
    for (let j = 0; j < runs.length; j++) {
      const [name, fn] = runs[(j + Math.max(w, 0)) % runs.length];
      const ms = await timeMs(fn);
      if (w >= 0) times[name].push(ms);
    }
  }
  const pct = (p: number) => Object.fromEntries(Object.entries(times).map(([e, xs]) => [e, xs.length ? percentile(xs, p) : NaN])) as Record<Engine, number>;
  const per = (m: Partial<Record<Engine, number>>, d: number) => Object.fromEntries(Object.entries(m).map(([e, v]) => [e, v / d]));
  return { p50: pct(50), p95: pct(95), recall: per(hits, k * qn), docRecall: per(docHits, qn) };
}
