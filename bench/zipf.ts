/**
 * The load suite's query mix: a set of distinct queries built from the example corpus's templates, and a
 * seeded Zipf sampler over their ranks (rank r drawn with probability ∝ 1 / r^s), the shape real search
 * traffic has: a few queries very often, a long tail seldom.
 * @module
 */
import { generateCorpus, mulberry32 } from "../examples/corpus.ts";

/** `count` distinct queries (corpus texts cut to a query's length; a repeat gets a numbered variant). */
export function querySet(count: number, seed = 13): string[] {
  const seen = new Set<string>();
  for (const d of generateCorpus({ count, seed })) {
    const q = d.text.slice(0, 60).replace(/\s+\S*$/u, "");
    seen.add(seen.has(q) ? `${q} ${seen.size}` : q);
  }
  return [...seen];
}

/** Returns a function drawing ranks 0..n-1 with P(r) ∝ 1 / (r + 1)^s, from a seeded generator. */
export function zipfSampler(n: number, s: number, seed: number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let r = 0; r < n; r++) cdf[r] = sum += 1 / (r + 1) ** s;
  const rand = mulberry32(seed);
  return () => {
    const u = rand() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}
