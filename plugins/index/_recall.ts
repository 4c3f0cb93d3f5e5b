/**
 * Build-time recall check for approximate engines: how many of the true top-k neighbours a searcher returns,
 * measured on rows of the corpus itself against exact search over the same vectors.
 *
 * Method (leave-one-out): `sample` rows, spread evenly through the corpus, are the queries. The row itself is
 * dropped from both the exact and the approximate answer (it would be a free hit at rank 1), so each query asks
 * for its k nearest *other* rows. A returned row counts as a hit when its true inner product with the query is
 * at least the exact k-th one's (less 1e-6): with exact duplicates many rows tie at the k-th score and any of
 * them is a correct answer, which a comparison of row numbers would count as a miss.
 *
 * The query point sits in the graph, so the walk is guided to it; docs/index-engines.md gives the measured gap
 * to queries from outside the corpus. So when the server has logged real queries (runtime/query-samples.ts), the
 * build measures on those too (`queryProbe`), and the lower of the two figures is the one held to the target.
 * @module
 */
import { createRequire } from "node:module";
import type * as Usearch from "usearch";
import type { IndexRecall } from "../../runtime/contracts.ts";

const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;

/** What the manifest records about an engine's measured recall. */
export type RecallReport = IndexRecall;

/** The exact neighbours of the sampled rows, computed once and scored against any number of settings. */
export interface RecallProbe {
  k: number;
  /** sample × dims, a fresh buffer (usearch reads typed arrays from their buffer's start). */
  queries: Float32Array;
  /** Per query: the exact k-th best inner product with another row. */
  kth: Float32Array;
  /** Per query its own row, left out of its answer (-1 for a query from outside the corpus). */
  rows: Int32Array;
  /** Scores one batch answer: per query, `k + 1` row numbers (self included or not), best first. */
  score(answers: ArrayLike<number>[]): number;
  /** The same answer's recall per query (`score` is their mean). */
  scores(answers: ArrayLike<number>[]): Float64Array;
}

/** `n` rows spread evenly over `count` (all of them when count ≤ n). */
export function sampleRows(count: number, n: number): Int32Array {
  const m = Math.min(count, n);
  return Int32Array.from({ length: m }, (_, i) => Math.floor(((i + 0.5) * count) / m));
}

/** Exact top-k (self excluded) of `sample` corpus rows; `vectors` must be count × dims. */
export function recallProbe(vectors: Float32Array, dims: number, k: number, sample: number): RecallProbe {
  const count = vectors.length / dims;
  const rows = sampleRows(count, sample);
  const queries = new Float32Array(rows.length * dims);
  rows.forEach((r, i) => queries.set(vectors.subarray(r * dims, (r + 1) * dims), i * dims));
  return probe(vectors, dims, Math.min(k, count - 1), queries, rows);
}

/**
 * Exact top-k of `queries` (n × dims) that are not corpus rows, such as the logged query vectors of real
 * searches (runtime/query-samples.ts): nothing is excluded from their answers, and `rows` holds -1 for each.
 */
export function queryProbe(vectors: Float32Array, dims: number, k: number, queries: Float32Array): RecallProbe {
  const count = vectors.length / dims;
  const n = Math.floor(queries.length / dims);
  return probe(vectors, dims, Math.min(k, count), queries.slice(0, n * dims), new Int32Array(n).fill(-1));
}

/** The k-th best score of each query, the query's own row (`self[i]`, -1 for none) left out. */
function probe(vectors: Float32Array, dims: number, kk: number, queries: Float32Array, self: Int32Array): RecallProbe {
  const rows = self;
  const data = vectors.byteOffset === 0 ? vectors : vectors.slice();
  const ip = (q: number, row: number) => {
    let s = 0;
    for (let j = 0; j < dims; j++) s += queries[q * dims + j] * data[row * dims + j];
    return s;
  };
  const kth = new Float32Array(rows.length);
  if (kk >= 1 && rows.length) {
    const extra = rows.some((r) => r >= 0) ? 1 : 0;
    const m = usearch.exactSearch(data, queries, dims, kk + extra, usearch.MetricKind.IP, 0);
    const keys = rows.length === 1 ? [(m as Usearch.Matches).keys] : Array.from(rows, (_, i) => (m as Usearch.BatchMatches).get(i).keys);
    keys.forEach((ks, i) => {
      const others = Array.from(ks, Number).filter((r) => r !== rows[i]).slice(0, kk);
      kth[i] = Math.min(...others.map((r) => ip(i, r)));
    });
  }
  const scores = (answers: ArrayLike<number>[]) =>
    Float64Array.from(answers, (ans, i) => {
      if (kk < 1) return 1;
      let taken = 0;
      let hits = 0;
      for (let j = 0; j < ans.length && taken < kk; j++) {
        const r = ans[j];
        if (r === rows[i] || r < 0) continue;
        taken++;
        if (ip(i, r) >= kth[i] - 1e-6) hits++;
      }
      return hits / kk;
    });
  return {
    k: kk,
    rows,
    queries,
    kth,
    score: (answers) => mean(scores(answers)),
    scores,
  };
}

/**
 * Whether per-query recalls clear `target` by their sampling error: the mean less 1.645 standard errors (a
 * one-sided 95 % bound) is at least the target. A setting narrowed below the one a doubling met must clear it so:
 * on 1M catalogue rows, IVF recall@10 at one nprobe differed by up to 0.007 between two sets of 500 queries, and a
 * setting that just met the target on one set missed it on the other.
 */
export function clears(perQuery: Float64Array, target: number): boolean {
  const n = perQuery.length;
  const m = mean(perQuery);
  const variance = n > 1 ? perQuery.reduce((a, b) => a + (b - m) ** 2, 0) / (n - 1) : 0;
  return m - 1.645 * Math.sqrt(variance / Math.max(1, n)) >= target;
}

/** The mean of per-query recalls (1 for none: nothing to miss). */
export function mean(perQuery: Float64Array): number {
  return perQuery.length ? perQuery.reduce((a, b) => a + b, 0) / perQuery.length : 1;
}

/**
 * The next search setting to measure when `lo` missed the target and `hi` met it: their midpoint, or undefined
 * once they are within an eighth of `hi` (or adjacent). The checks double a setting until it meets the target, so
 * the setting they stop at can be up to twice the least that would do, and every search pays for the excess (an
 * IVF probe of 32 lists where 24 would do scans a third more vectors). Bisecting down to an eighth costs about
 * three more measurements; a midpoint counts as meeting the target only when it `clears` it.
 */
export function between(lo: number, hi: number): number | undefined {
  return hi - lo <= Math.max(1, hi / 8) ? undefined : Math.round((lo + hi) / 2);
}
