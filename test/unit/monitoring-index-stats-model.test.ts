/**
 * The pieces of `compute_index_stats` that need no database: parsing the servers' search histograms, the
 * PromQL-style quantile, the windowed difference, and the flat → approximate migration model with its
 * estimates (docs/metrics.md states the model these numbers follow).
 */
import { describe, expect, it } from "vitest";
import { alternatives, assessMigration, bucketDelta, estimateExactP95Ms, histogramQuantile, parseHistogram } from "../../runtime/tasks/stats.ts";
import { createServerMetrics } from "../../server/metrics.ts";

describe("search histogram", () => {
  it("parses the server's own exposition and sums label sets by le", async () => {
    const m = createServerMetrics();
    m.search.observe(0.003);
    m.search.observe(0.003);
    m.search.observe(0.4);
    const b = parseHistogram(await m.registry.metrics(), "apfa_faiss_search_seconds");
    expect(b.at(-1)).toEqual([Infinity, 3]);
    expect(b.find(([le]) => le === 0.005)).toEqual([0.005, 2]);
    const two = parseHistogram('x_bucket{a="1",le="1"} 2\nx_bucket{a="2",le="1"} 3\nx_bucket{le="+Inf",a="1"} 4\nx_bucket{a="2",le="+Inf"} 3\n', "x");
    expect(two).toEqual([[1, 5], [Infinity, 7]]);
  });

  it("computes quantiles like histogram_quantile", () => {
    const b: Array<[number, number]> = [[0.001, 0], [0.0025, 90], [0.1, 90], [0.25, 100], [Infinity, 100]];
    expect(histogramQuantile(0.5, b)).toBeCloseTo(0.001 + 0.0015 * (50 / 90), 12);
    expect(histogramQuantile(0.95, b)).toBeCloseTo(0.175, 12);
    expect(histogramQuantile(0.95, [[1, 0], [Infinity, 10]])).toBe(1);
    expect(histogramQuantile(0.95, [[1, 0], [Infinity, 0]])).toBeNull();
  });

  it("differences two snapshots, and refuses when a counter went down (a restart)", () => {
    expect(bucketDelta([[1, 5], [Infinity, 9]], [[1, 2], [Infinity, 3]])).toEqual([[1, 3], [Infinity, 6]]);
    expect(bucketDelta([[1, 5], [Infinity, 9]], [[1, 6], [Infinity, 6]])).toBeNull();
    expect(bucketDelta([[1, 5]], undefined)).toBeNull();
    expect(bucketDelta([[1, 5], [Infinity, 5]], [[1, 5], [Infinity, 5]])).toEqual([[1, 0], [Infinity, 0]]);
  });
});

describe("migration model", () => {
  const flat = (count: number, dims = 384, p95Ms: number | null = null) => assessMigration({ engine: "flat", count, dims, docsBytes: count * 200, p95Ms });

  it("estimates exact-search p95 within 2× of the benchmark (10k × 384 flat: p95 13.8 ms on 2 cores)", () => {
    const est = estimateExactP95Ms(10_000, 384);
    expect(est).toBeGreaterThan(13.8 / 2);
    expect(est).toBeLessThan(13.8 * 2);
    expect(estimateExactP95Ms(100_000, 384)).toBeGreaterThan(5 * est);
  });

  it("keeps a small flat index flat", () => {
    const a = flat(10_000);
    expect(a.recommendation).toBe("keep flat");
    expect(a.urgency).toBeLessThan(0.3);
    expect(a.reasoning.p95_source).toBe("estimated");
    expect(a.reasoning.p95_ms).toBeCloseTo(estimateExactP95Ms(10_000, 384), 2);
  });

  it("urgency never falls as the index grows: plan at 30k × 384, migrate at 100k without measurements", () => {
    const sizes = [1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7];
    const u = sizes.map((n) => flat(n).urgency);
    for (let i = 1; i < u.length; i++) expect(u[i]).toBeGreaterThanOrEqual(u[i - 1]);
    expect(flat(3e4).recommendation).toBe("plan hnsw");
    expect(flat(1e5).recommendation).toBe("migrate to hnsw");
  });

  it("a fast measured p95 leaves the size term: plan at 1M × 384, migrate from ~2.8M", () => {
    expect(flat(1e6, 384, 5)).toMatchObject({ recommendation: "plan hnsw" });
    expect(flat(1e6, 384, 5).reasoning.size_term).toBeGreaterThan(0.3);
    expect(flat(3e6, 384, 5)).toMatchObject({ urgency: 1, recommendation: "migrate to hnsw" });
    expect(flat(1e5, 384, 5)).toMatchObject({ urgency: 0, recommendation: "keep flat" });
  });

  it("an observed p95 drives the latency term: a quarter of the budget is 0, half is 0.5, the budget is 1", () => {
    expect(flat(1000, 384, 12.5).reasoning.latency_term).toBe(0);
    expect(flat(1000, 384, 25).reasoning.latency_term).toBe(0.5);
    expect(flat(1000, 384, 50).reasoning.latency_term).toBe(1);
    expect(flat(1000, 384, 50).recommendation).toBe("migrate to hnsw");
    expect(flat(1000, 384, 30).recommendation).toBe("plan hnsw");
    expect(flat(1000, 384, 30).reasoning.p95_source).toBe("observed");
  });

  it("recommends IVF-PQ when the HNSW graph would not fit the memory budget", () => {
    const a = assessMigration({ engine: "flat", count: 50_000_000, dims: 768, docsBytes: 0, p95Ms: null });
    expect(a.recommendation).toMatch(/^migrate to faiss IVF\d+,PQ\d+$/);
    expect(a.reasoning.notes.join(" ")).toMatch(/HNSW would need .* GiB, over the 16\.0 GiB budget/);
    const [hnsw, , ivf] = a.reasoning.alternatives;
    expect(ivf.est_memory_bytes).toBeLessThan(hnsw.est_memory_bytes / 10);
  });

  it("recommends an i8-quantised graph when only that fits the memory budget", () => {
    const a = assessMigration({ engine: "flat", count: 12_000_000, dims: 384, docsBytes: 0, p95Ms: null });
    expect(a.recommendation).toBe("migrate to hnsw (quantization i8)");
  });

  it("acts on the version's measured recall: the graph size it needed, and a fallback it must not repeat", () => {
    const recall = { engine: "hnsw", measured: 0.97, target: 0.95, met: true, sample: 300, params: { connectivity: 64, expansion_search: 128 } };
    const a = assessMigration({ engine: "flat", count: 1_000_000, dims: 384, docsBytes: 0, p95Ms: 60, recall });
    expect(a.recommendation).toBe("migrate to hnsw connectivity 64");
    expect(a.reasoning.alternatives[0].options.connectivity).toBe(64);
    expect(a.reasoning.notes.join(" ")).toMatch(/hnsw measured recall@10 0\.970 \(target 0\.95\) at connectivity 64, expansion_search 128 on 300 corpus rows/);
    const logged = assessMigration({ engine: "flat", count: 1_000_000, dims: 384, docsBytes: 0, p95Ms: 60, recall: { ...recall, corpus: { sample: 300, measured: 0.99 }, queries: { sample: 500, measured: 0.97 } } });
    expect(logged.reasoning.notes.join(" ")).toMatch(/on 300 corpus rows \(0\.990\) and 500 logged queries \(0\.970\)/);
    const fell = assessMigration({ engine: "flat", count: 1_000_000, dims: 384, docsBytes: 0, p95Ms: 60, recall: { ...recall, measured: 0.8, met: false, fallback: "flat" } });
    // The check already grew the graph as far as it could: the advice is inverted lists, not a bigger graph.
    expect(fell.recommendation).toBe("migrate to faiss IVF4096,Flat");
    expect(fell.reasoning.chosen).toBe("faiss IVF4096,Flat");
    expect(fell.reasoning.alternatives.at(-1)!.est_memory_bytes).toBe(1e6 * (384 * 4 + 8) + 4096 * 384 * 4);
    expect(fell.reasoning.notes.join(" ")).toMatch(/hnsw missed its recall target even at connectivity 64, expansion_search 128/);
    const tight = assessMigration({ engine: "flat", count: 1_000_000, dims: 384, docsBytes: 0, p95Ms: 60, memoryBudgetBytes: 1024 ** 3, recall: { ...recall, measured: 0.8, met: false, fallback: "flat" } });
    expect(tight.recommendation).toBe("migrate to faiss IVF4096,SQ8");
    const quiet = assessMigration({ engine: "flat", count: 20_000, dims: 384, docsBytes: 0, p95Ms: 2, recall: { ...recall, measured: 0.8, met: false, fallback: "flat" } });
    expect(quiet.recommendation).toBe("keep flat");
    const ivfFell = assessMigration({ engine: "flat", count: 1_000_000, dims: 384, docsBytes: 0, p95Ms: 60, recall: { ...recall, engine: "faiss", params: { nprobe: 4096 }, measured: 0.9, met: false, fallback: "flat" } });
    expect(ivfFell.recommendation).toMatch(/^tune faiss: a finer code/);
    const under = assessMigration({ engine: "hnsw", count: 1_000_000, dims: 384, docsBytes: 0, p95Ms: 3, recall: { ...recall, measured: 0.8, met: false } });
    expect(under.recommendation).toBe("tune hnsw: recall 0.800 is under its target 0.95");
    expect(under.reasoning.notes.join(" ")).toMatch(/published as accepted; raise max_connectivity, or move to faiss IVF\d+,Flat/);
  });

  it("estimates HNSW and IVF-PQ costs from count and dims", () => {
    const [hnsw, i8, ivf] = alternatives(1_000_000, 384, 0);
    expect(i8.est_memory_bytes).toBe(hnsw.est_memory_bytes - 1e6 * 384 * 3);
    expect(hnsw.est_memory_bytes).toBe(Math.round(1e6 * (384 * 4 + 2 * 16 * 4 * (1 + 1 / 16) + 16)));
    // The benchmark built 10k × 384 in 7.2 s on 2 cores (~14 s of one core).
    const [small] = alternatives(10_000, 384, 0);
    expect(small.est_build_s).toBeGreaterThan(7);
    expect(small.est_build_s).toBeLessThan(28);
    // ... and searched it in 0.2 ms (p50).
    expect(small.est_search_ms).toBeGreaterThan(0.1);
    expect(small.est_search_ms).toBeLessThan(1);
    expect(ivf.options.factory).toBe("IVF4096,PQ96");
    expect(384 % Number(/PQ(\d+)/.exec(String(ivf.options.factory))![1])).toBe(0);
    expect(ivf.est_memory_bytes).toBe(1e6 * (96 + 8) + 4096 * 384 * 4 + 256 * 384 * 4);
    const [bigger] = alternatives(2_000_000, 384, 0);
    expect(bigger.est_build_s).toBeGreaterThan(2 * hnsw.est_build_s);
  });

  it("scores approximate engines on latency only and advises tuning them", () => {
    const fine = assessMigration({ engine: "hnsw", count: 5e7, dims: 384, docsBytes: 0, p95Ms: 3 });
    expect(fine).toMatchObject({ urgency: 0, recommendation: "keep hnsw" });
    expect(fine.reasoning.size_term).toBe(0);
    const slow = assessMigration({ engine: "hnsw", count: 5e7, dims: 384, docsBytes: 0, p95Ms: 60 });
    expect(slow).toMatchObject({ urgency: 1, recommendation: "tune hnsw" });
  });
});
