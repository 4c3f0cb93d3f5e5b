/**
 * Build-time recall check for approximate engines: how many of the true top-k neighbours a searcher returns,
 * measured on rows of the corpus itself against exact search over the same vectors.
 *
 * Two ways to ask with corpus rows:
 * - **Held out** (`heldOutProbe`, what `hnsw` uses): `sample` rows, spread evenly through the corpus, are left out
 *   of the graph while it is measured and inserted after. Each is a query from outside the index, and its truth
 *   is its exact top-k over the rows that are in it.
 * - **Leave-one-out** (`recallProbe`): the rows are in the index, and each is dropped from both the exact and the
 *   approximate answer (it would be a free hit at rank 1). Exact for an engine that scans what it probes (IVF),
 *   but kind to a graph: the walk is guided to the query's own node, whose links are its nearest rows. On the
 *   ann suite's 100k near-duplicate rows it said 0.991 where queries from outside got 0.735 (docs/index-engines.md).
 *
 * A returned row counts as a hit when its true inner product with the query is at least the exact k-th one's
 * (less 1e-6): with exact duplicates many rows tie at the k-th score and any of them is a correct answer, which
 * a comparison of row numbers would count as a miss.
 *
 * When the server has logged real queries (runtime/query-samples.ts), the build measures on those too
 * (`queryProbe`), and the lower of the two figures is the one held to the target.
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
  /** Rows the index held out while it was measured (`heldOutProbe`); they are in no answer and no truth. */
  heldOut?: Int32Array;
  /** Scores one batch answer: per query, `k + 1` row numbers (self included or not), best first. */
  score(answers: ArrayLike<number>[]): number;
  /** The same answer's recall per query (`score` is their mean). */
  scores(answers: ArrayLike<number>[]): Float64Array;
}

/**
 * `n` rows spread over `count` (all of them when count ≤ n), in order: one from each of `n` equal strata, at a
 * place within it drawn from a generator seeded by (count, n), so the same corpus size always gives the same rows
 * and a build stays reproducible. Not a fixed stride: rows `count / n` apart alias with a corpus that repeats with a
 * period sharing a factor with it (templated rows, copies of documents in turn). On the ann suite's near-duplicate
 * 1M set (document = row mod 1,000), every tenth row held 100 of the 1,000 documents, and a FAISS IVF index
 * trained on them reached recall@10 0.53 at nprobe 16 where one trained on all of them reaches 0.98.
 */
export function sampleRows(count: number, n: number): Int32Array {
  const m = Math.min(count, n);
  if (m === count) return Int32Array.from({ length: m }, (_, i) => i);
  let seed = (Math.imul(count, 0x9e3779b1) ^ Math.imul(m, 0x85ebca6b)) >>> 0;
  const next = () => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = Math.imul(seed ^ (seed >>> 15), seed | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Int32Array.from({ length: m }, (_, i) => {
    const lo = Math.floor((i * count) / m); // integer strata: they never overlap, and each holds a row
    return lo + Math.floor(next() * (Math.floor(((i + 1) * count) / m) - lo));
  });
}

/**
 * Exact top-`k` row numbers of each of `queries` (n × dims) over the corpus, best first, computed elsewhere (the
 * `faiss` engine's BLAS search); a row may be followed by more. The default is usearch's exactSearch.
 */
export type ExactTruth = (queries: Float32Array, k: number) => ArrayLike<number | bigint>[];

/** The rows {@link recallProbe} asks with, as queries (rows × dims, a fresh buffer). */
export function recallQueries(vectors: Float32Array, dims: number, sample: number): { rows: Int32Array; queries: Float32Array } {
  const rows = sampleRows(vectors.length / dims, sample);
  const queries = new Float32Array(rows.length * dims);
  rows.forEach((r, i) => queries.set(vectors.subarray(r * dims, (r + 1) * dims), i * dims));
  return { rows, queries };
}

/** Exact top-k (self excluded) of `sample` corpus rows; `vectors` must be count × dims. */
export function recallProbe(vectors: Float32Array, dims: number, k: number, sample: number, exact?: ExactTruth): RecallProbe {
  const count = vectors.length / dims;
  const { rows, queries } = recallQueries(vectors, dims, sample);
  return probe(vectors, dims, Math.min(k, count - 1), queries, rows, undefined, exact);
}

/** The fewest held-out rows a check measures on; with fewer, it asks leave-one-out. */
export const MIN_HELD_OUT = 20;

/** The held-out rows as probe queries: each one's exact top-k among the rows not held out. */
export function heldOutProbe(vectors: Float32Array, dims: number, k: number, held: Int32Array): RecallProbe {
  const count = vectors.length / dims;
  const queries = new Float32Array(held.length * dims);
  held.forEach((r, i) => queries.set(vectors.subarray(r * dims, (r + 1) * dims), i * dims));
  return probe(vectors, dims, Math.min(k, count - held.length), queries, held, held);
}

/**
 * Rows to hold out of a graph while its recall is measured: `sample` of `candidates` spread evenly, at most a
 * tenth of `count`; undefined when fewer than `MIN_HELD_OUT` would be (a corpus too small to spare them).
 */
export function holdOut(candidates: ArrayLike<number>, count: number, sample: number): Int32Array | undefined {
  const at = sampleRows(candidates.length, Math.min(sample, Math.floor(count / 10)));
  return at.length < MIN_HELD_OUT ? undefined : Int32Array.from(at, (i) => candidates[i]);
}

/**
 * Exact top-k of `queries` (n × dims) that are not corpus rows, such as the logged query vectors of real
 * searches (runtime/query-samples.ts): nothing is excluded from their answers, and `rows` holds -1 for each.
 * With `held`, the rows held out of the index while it is measured are in no answer and no truth.
 */
export function queryProbe(vectors: Float32Array, dims: number, k: number, queries: Float32Array, held?: Int32Array, exact?: ExactTruth): RecallProbe {
  const count = vectors.length / dims;
  const n = Math.floor(queries.length / dims);
  return probe(vectors, dims, Math.min(k, count - (held?.length ?? 0)), queries.slice(0, n * dims), new Int32Array(n).fill(-1), held, exact);
}

/**
 * (row, query) pairs one usearch `exactSearch` call may score: it holds every pair's distance twice (16 bytes a
 * pair) before sorting, so 300 queries over 1M rows would take 4.8 GB, and the 800 of a check with logged queries
 * 12.8 GB. 2^25 pairs is 512 MiB; a call of fewer queries costs the same work (measured at 200k × 384, 600
 * queries: 8.3 s in one call with a 1.9 GB peak, 8.9 s in calls of 64).
 */
const MAX_PAIRS = 2 ** 25;

/** Exact top-`k` row numbers of each query (n × dims) over `data`, in calls small enough for {@link MAX_PAIRS}. */
function exactKeys(data: Float32Array, queries: Float32Array, dims: number, k: number): BigUint64Array[] {
  const count = data.length / dims;
  const n = queries.length / dims;
  const per = Math.max(1, Math.floor(MAX_PAIRS / count));
  const out: BigUint64Array[] = [];
  for (let at = 0; at < n; at += per) {
    const m = Math.min(per, n - at);
    // A copy at offset 0 of its own buffer: usearch reads a typed array from its buffer's start.
    const part = at === 0 && m === n ? queries : queries.slice(at * dims, (at + m) * dims);
    const r = usearch.exactSearch(data, part, dims, k, usearch.MetricKind.IP, 0);
    if (m === 1) out.push((r as Usearch.Matches).keys);
    else for (let i = 0; i < m; i++) out.push((r as Usearch.BatchMatches).get(i).keys);
  }
  return out;
}

/** The k-th best score of each query, the query's own row (`self[i]`, -1 for none) and any `held` rows left out. */
function probe(vectors: Float32Array, dims: number, kk: number, queries: Float32Array, self: Int32Array, held?: Int32Array, exact?: ExactTruth): RecallProbe {
  const rows = self;
  const isHeld = new Uint8Array(held ? vectors.length / dims : 0);
  if (held) for (const r of held) isHeld[r] = 1;
  const out = (i: number, r: number) => r === rows[i] || (held !== undefined && isHeld[r] === 1);
  const data = vectors.byteOffset === 0 ? vectors : vectors.slice();
  const ip = (q: number, row: number) => {
    let s = 0;
    for (let j = 0; j < dims; j++) s += queries[q * dims + j] * data[row * dims + j];
    return s;
  };
  const kth = new Float32Array(rows.length);
  if (kk >= 1 && rows.length) {
    const extra = held ? held.length : rows.some((r) => r >= 0) ? 1 : 0;
    (exact ?? ((q, n) => exactKeys(data, q, dims, n)))(queries, kk + extra).forEach((ks, i) => {
      const others = Array.from(ks, Number).filter((r) => r >= 0 && !out(i, r)).slice(0, kk);
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
        if (r < 0 || out(i, r)) continue;
        taken++;
        if (ip(i, r) >= kth[i] - 1e-6) hits++;
      }
      return hits / kk;
    });
  return {
    k: kk,
    rows,
    ...(held ? { heldOut: held } : {}),
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

/** One measured setting of a recall check: what goes into `tried`, and whether it clears the target (`clears`). */
export interface Measured<E> {
  entry: E;
  sure: boolean;
}

/**
 * The least setting between `lo` (missed the target, or did not clear it) and `hi` (cleared it, measured as
 * `best`) that clears it, bisected to `between`'s precision.
 */
export async function bisect<E>(lo: number, hi: number, best: E, at: (v: number) => Measured<E> | Promise<Measured<E>>): Promise<E> {
  for (let mid = between(lo, hi); mid !== undefined; mid = between(lo, hi)) {
    const r = await at(mid);
    if (r.sure) [hi, best] = [mid, r.entry];
    else lo = mid;
  }
  return best;
}

/**
 * A check that met the target at its first setting, `start`, and cleared it by its sampling error, may start
 * far above what the corpus needs: on the ann suite's 100k mixture the faiss engine's default nprobe 16 took
 * 3.2 ms where nprobe 1 gave recall 1.000 in 0.5 ms. So the setting is halved while the half still clears the
 * target, down to `floor`, then bisected between the first half that did not and the last that did.
 */
export async function narrowDown<E>(start: number, best: E, floor: number, at: (v: number) => Measured<E> | Promise<Measured<E>>): Promise<E> {
  let hi = start;
  for (let v = Math.floor(start / 2); v >= floor; v = Math.floor(v / 2)) {
    const r = await at(v);
    if (!r.sure) return bisect(v, hi, best, at);
    [hi, best] = [v, r.entry];
  }
  return best;
}

/**
 * The search setting a version is served with: `chosen`, what its recall check chose, above or below the option;
 * but where the option has been raised above `configured` (its value at the build) since, or the version predates
 * `configured` (its check could only raise the option), the larger of the two, so raising the option still buys
 * recall without a rebuild. Without a choice, the option.
 */
export function servedSetting(option: number, chosen: number | undefined, configured: number | undefined): number {
  if (chosen === undefined) return option;
  if (configured === undefined || option > configured) return Math.max(option, chosen);
  return chosen;
}
