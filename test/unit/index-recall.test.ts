import { describe, expect, it } from "vitest";
import hnsw, { META, servedEf } from "../../plugins/index/hnsw.ts";
import { between, clears, mean, queryProbe, recallProbe, sampleRows } from "../../plugins/index/_recall.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import type { Pipeline } from "../../runtime/pipeline.ts";
import { buildVersion, type NewPart } from "../../runtime/stages/build.ts";
import { publishVersion, recallMissed, type Manifest } from "../../runtime/versions.ts";
import { bruteForce, expectNarrowed, normalizeRows, randomUnitVectors, rng, writeArtifact } from "../conformance/index.ts";

const ctx = { baseDir: "/", log: silentLogger, env: {} };
const make = (opts: Record<string, unknown> = {}) => hnsw.create(hnsw.options.parse(opts), ctx) as IndexEngine;

/** `protos` random vectors, each followed by noisy copies, rows grouped by prototype (as an id sort leaves them). */
function nearDuplicates(protos: number, copies: number, dims: number): Float32Array {
  const base = randomUnitVectors(protos, dims, 5);
  const next = rng(6);
  const v = new Float32Array(protos * copies * dims);
  for (let p = 0; p < protos; p++) {
    for (let c = 0; c < copies; c++) {
      const at = (p * copies + c) * dims;
      for (let j = 0; j < dims; j++) v[at + j] = base[p * dims + j] + (c ? (next() - 0.5) * 0.08 : 0);
    }
  }
  return normalizeRows(v, dims);
}

/** One batch part carrying `vectors`, as the build stage reads it back from the embed stage. */
function part(vectors: Float32Array, dims: number): NewPart {
  const rows = vectors.length / dims;
  const docs = new TextEncoder().encode(Array.from({ length: rows }, (_, i) => JSON.stringify({ id: `d${String(i).padStart(6, "0")}`, text: `t${i}` })).join("\n") + "\n");
  return { n: 0, docs, vectors, rows, dims, modelId: "m", maxChars: 100 };
}

const build = (engine: IndexEngine, engineName: string, vectors: Float32Array, dims: number, warn?: (m: string) => void, queries?: Float32Array) =>
  buildVersion({ pipeline: "t", runId: null, engine, engineName, engineKey: "k", embedderKey: "e", parts: [part(vectors, dims)], reuse: [], warn, queries });

/** `copies` noisy copies (noise `noise`, seeded) of each of `protos` fixed random vectors. */
function noisyCopies(protos: number, copies: number, dims: number, noise: number, seed: number): Float32Array {
  const base = randomUnitVectors(protos, dims, 5);
  const next = rng(seed);
  const v = new Float32Array(protos * copies * dims);
  for (let p = 0; p < protos; p++) {
    for (let c = 0; c < copies; c++) for (let j = 0; j < dims; j++) v[(p * copies + c) * dims + j] = base[p * dims + j] + (next() - 0.5) * noise;
  }
  return normalizeRows(v, dims);
}

describe("sampleRows", () => {
  it("does not alias with a corpus that repeats: every tenth row of 1M would hold 100 of 1,000 documents", () => {
    const rows = sampleRows(1_000_000, 100_000);
    expect(rows.length).toBe(100_000);
    for (let i = 1; i < rows.length; i++) expect(rows[i]).toBeGreaterThan(rows[i - 1]);
    expect(rows[rows.length - 1]).toBeLessThan(1_000_000);
    // Row r holds document r mod 1,000 (the ann suite's near-duplicate construction).
    expect(new Set(Array.from(rows, (r) => r % 1000)).size).toBe(1000);
    const strided = Array.from({ length: 100_000 }, (_, i) => i * 10);
    expect(new Set(strided.map((r) => r % 1000)).size).toBe(100);
  });
});

describe("recall check", () => {
  it("samples one row from each equal stratum, the same rows every time, and scores ties at the k-th score as hits", () => {
    const rows = sampleRows(10, 4);
    expect(Array.from(rows)).toEqual(Array.from(sampleRows(10, 4)));
    rows.forEach((r, i) => expect(r >= (i * 10) / 4 && r < ((i + 1) * 10) / 4).toBe(true));
    expect(Array.from(sampleRows(3, 300))).toEqual([0, 1, 2]);
    for (const [count, n] of [[300, 210], [2100, 210], [7, 6]]) {
      const r = sampleRows(count, n);
      expect(r.length).toBe(n);
      for (let i = 1; i < n; i++) expect(r[i]).toBeGreaterThan(r[i - 1]);
      expect(r[n - 1]).toBeLessThan(count);
    }
    // Three identical rows and one far away: for row 0, rows 1 and 2 tie as its nearest; either is a hit.
    const v = new Float32Array([1, 0, 1, 0, 1, 0, 0, 1]);
    const probe = recallProbe(v, 2, 1, 4);
    expect(probe.score([[0, 2], [1, 0], [2, 0], [3, 0]])).toBe(1);
    expect(probe.score([[0, 3], [1, 0], [2, 0], [3, 0]])).toBe(0.75);
  });

  it("scores queries from outside the corpus against their exact top k, excluding nothing", () => {
    const v = new Float32Array([1, 0, 0.8, 0.6, 0, 1]);
    const probe = queryProbe(v, 2, 1, new Float32Array([0.6, 0.8, 1, 0]));
    expect(Array.from(probe.rows)).toEqual([-1, -1]);
    expect(probe.score([[1, 0], [0, 1]])).toBe(1);
    expect(probe.score([[2, 1], [0, 1]])).toBe(0.5);
  });

  it("finds the exact truth for more queries than one exactSearch call may take over a large corpus", () => {
    // 2^25 (row, query) pairs a call: 279 queries over 120k rows, so 559 go in three calls, the last one query alone.
    const dims = 4;
    const count = 120_000;
    const v = randomUnitVectors(count, dims, 31);
    const q = randomUnitVectors(559, dims, 32);
    const probe = queryProbe(v, dims, 5, q);
    for (const i of [0, 1, 278, 279, 557, 558]) {
      const truth = bruteForce(v, dims, q.subarray(i * dims, (i + 1) * dims), 5);
      expect(probe.kth[i]).toBeCloseTo(truth.all[truth.rows[4]], 5);
    }
  });

  it("bisects between a miss and a meet until they are within an eighth", () => {
    // A doubling missed at 16 and met at 32: the midpoints 24, then 20 or 28, then nothing (within 32 / 8).
    expect(between(16, 32)).toBe(24);
    expect(between(16, 24)).toBe(20);
    expect(between(24, 32)).toBe(28);
    expect(between(28, 32)).toBeUndefined();
    expect(between(1, 2)).toBeUndefined();
    expect(between(1, 3)).toBe(2);
  });

  it("a narrowed setting must clear the target by the sample's error, not just reach it", () => {
    const at = (hits: number[]) => Float64Array.from(hits, (h) => h / 10);
    // 500 queries averaging 0.952: 8 or 10 hits each. Reaches 0.95, but within its error.
    const close = at(Array.from({ length: 500 }, (_, i) => (i % 25 < 6 ? 8 : 10)));
    expect(mean(close)).toBeCloseTo(0.952, 6);
    expect(clears(close, 0.95)).toBe(false);
    expect(clears(close, 0.94)).toBe(true);
    // All ten hits every time: no error at all.
    expect(clears(at(Array(50).fill(10)), 1)).toBe(true);
    expect(mean(new Float64Array(0))).toBe(1);
  });

  it("hnsw tunes on logged queries when they find less than corpus rows, and the manifest records both", async () => {
    // Near-copies of 100 documents; the queries are further from the documents than the copies are from each
    // other, as real questions are. Corpus rows alone are satisfied at a lower expansion_search.
    const dims = 32;
    const corpus = noisyCopies(100, 40, dims, 0.08, 6);
    const queries = noisyCopies(100, 2, dims, 0.5, 99);
    const opts = { connectivity: 4, max_connectivity: 4, build_threads: 1, expansion_search: 16, target_recall: 0.95, recall_sample: 200 };
    const alone = (await make(opts).build(corpus, dims)).recall!;
    expect(alone).toMatchObject({ met: true, method: "held-out" });
    expect(alone.queries).toBeUndefined();

    const v = await build(make(opts), "hnsw", corpus, dims, undefined, queries);
    const r = v.manifest.recall!;
    expect(r).toMatchObject({ engine: "hnsw", met: true, method: "held-out+logged-queries", sample: 200, corpus: { sample: 200 }, queries: { sample: 200 } });
    // The lower figure is the one held to the target: the queries'.
    expect(r.measured).toBe(Math.min(r.corpus!.measured, r.queries!.measured));
    expect(r.queries!.measured).toBeLessThan(r.corpus!.measured);
    expect(r.measured).toBeGreaterThanOrEqual(0.95);
    // At a setting that satisfied corpus rows alone, the queries missed the target, so the tuning went further,
    // then back down to the least setting that cleared it on both.
    const enoughAlone = r.tried.find((t) => t.params.expansion_search >= alone.params.expansion_search && t.corpus! >= 0.95);
    expect(enoughAlone?.queries, JSON.stringify(r.tried)).toBeLessThan(0.95);
    expect(r.params.expansion_search).toBeGreaterThan(alone.params.expansion_search);
    expect(expectNarrowed(r, "expansion_search")).toBe(true);
    // (Whether corpus rows alone narrowed depends on how close their first setting came to the target; the test
    // "hnsw lowers an expansion_search that meets the target at once" covers that.)
    expect(JSON.parse(new TextDecoder().decode(v.files[META])).expansion_search).toBe(r.params.expansion_search);
  });

  it("when no expansion_search lets the logged queries reach the target, a denser graph is built for them", async () => {
    const dims = 32;
    const corpus = noisyCopies(100, 40, dims, 0.08, 6);
    const queries = noisyCopies(100, 2, dims, 0.5, 99);
    const opts = { connectivity: 4, max_connectivity: 16, build_threads: 1, expansion_search: 16, max_expansion_search: 32, target_recall: 0.95, recall_sample: 200 };
    const alone = (await make(opts).build(corpus, dims)).recall!;
    expect(alone).toMatchObject({ met: true, params: { connectivity: 4 } });
    const r = (await make(opts).build(corpus, dims, { queries })).recall!;
    expect(r.tried.filter((t) => t.params.connectivity === 4).every((t) => t.queries! < 0.95)).toBe(true);
    expect(r.params.connectivity, JSON.stringify(r.tried)).toBeGreaterThan(4);
    expect(r.measured).toBe(r.queries!.measured);
  });

  it("an incremental update measures on logged queries too", async () => {
    const dims = 32;
    const corpus = noisyCopies(50, 20, dims, 0.08, 6);
    const engine = make({ connectivity: 8, build_threads: 1, recall_sample: 50 });
    const art = await engine.build(corpus, dims);
    const next = await engine.update!({ files: art.files, count: 1000, dims }, {
      vectors: corpus, dims, prevRow: Int32Array.from({ length: 1000 }, (_, i) => i), queries: noisyCopies(50, 1, dims, 0.5, 99),
    });
    expect(next?.recall).toMatchObject({ method: "leave-one-out+logged-queries", corpus: { sample: 50 }, queries: { sample: 50 } });
  });

  it("holds its sample out of the graph while it measures, then serves those rows too", async () => {
    const dims = 32;
    const corpus = noisyCopies(60, 20, dims, 0.08, 6);
    const art = await make({ connectivity: 8, build_threads: 1, recall_sample: 60 }).build(corpus, dims);
    expect(art.recall).toMatchObject({ method: "held-out", sample: 60 });
    const dir = await writeArtifact(art);
    const s = await make().open(dir, { dims, count: 1200 });
    let found = 0;
    for (const row of sampleRows(1200, 60)) if ((await s.search(corpus.slice(row * dims, (row + 1) * dims), 10)).rows.includes(row)) found++;
    expect(found).toBe(60);
    await s.close();
  });

  it("an update holds out rows it adds, and starts from the expansion_search its base version chose", async () => {
    const dims = 32;
    const corpus = noisyCopies(100, 30, dims, 0.5, 6);
    const engine = make({ connectivity: 4, max_connectivity: 4, build_threads: 1, expansion_search: 10, recall_sample: 100, on_recall_miss: "accept" });
    const art = await engine.build(corpus.slice(0, 2500 * dims), dims);
    const chosen = art.recall!.params.expansion_search;
    expect(chosen, JSON.stringify(art.recall)).toBeGreaterThan(10);
    const next = await engine.update!({ files: art.files, count: 2500, dims }, {
      vectors: corpus, dims, prevRow: Int32Array.from({ length: 3000 }, (_, i) => (i < 2500 ? i : -1)),
    });
    // 500 rows added: 100 of them held out.
    expect(next?.recall).toMatchObject({ method: "held-out", sample: 100 });
    expect(next!.recall!.tried[0].params.expansion_search).toBe(chosen);
    // and never narrows below it.
    expect(next!.recall!.params.expansion_search).toBeGreaterThanOrEqual(chosen);
  });

  it("hnsw lowers an expansion_search that meets the target at once on held-out rows and logged queries, and serves the least that clears it", async () => {
    const dims = 32;
    const vectors = randomUnitVectors(3000, dims, 12);
    const engine = make({ connectivity: 16, build_threads: 1, expansion_search: 512, target_recall: 0.9, recall_sample: 200 });
    // On held-out rows alone, the configured value is a floor: they may be kinder than questions from outside.
    const alone = (await engine.build(vectors, dims)).recall!;
    expect(alone).toMatchObject({ method: "held-out", met: true, params: { expansion_search: 512 } });
    expect(alone.tried).toHaveLength(1);
    const art = await engine.build(vectors, dims, { queries: randomUnitVectors(200, dims, 13) });
    const r = art.recall!;
    expect(r.method).toBe("held-out+logged-queries");
    expect(r.tried[0]).toMatchObject({ params: { expansion_search: 512 } });
    expect(r.met).toBe(true);
    expect(r.params.expansion_search, JSON.stringify(r.tried)).toBeLessThan(512);
    expect(JSON.parse(new TextDecoder().decode(art.files[META]))).toMatchObject({ expansion_search: r.params.expansion_search, configured: 512 });
    // Served with the check's value under the same options; a value raised above the build's since wins.
    expect(servedEf(512, { expansion_search: r.params.expansion_search, configured: 512 })).toBe(r.params.expansion_search);
    expect(servedEf(1024, { expansion_search: r.params.expansion_search, configured: 512 })).toBe(1024);
    // A version from before `configured` (its check only raised the option): the larger, as it was served then.
    expect(servedEf(64, { expansion_search: 128 })).toBe(128);
    expect(servedEf(256, { expansion_search: 128 })).toBe(256);
    expect(servedEf(64, {})).toBe(64);
  });

  it("keeps doubling expansion_search from under k, where usearch searches with k + 1 candidates whatever it is told", async () => {
    const dims = 32;
    const corpus = noisyCopies(100, 30, dims, 0.5, 6);
    const r = (await make({ connectivity: 4, max_connectivity: 4, build_threads: 1, expansion_search: 1, recall_sample: 100 }).build(corpus, dims)).recall!;
    // ef 1, 2, 4 and 8 are the same search, so no "gain" between them ends the doubling.
    expect(r.met, JSON.stringify(r.tried)).toBe(true);
    expect(Math.max(...r.tried.map((t) => t.params.expansion_search))).toBeGreaterThan(11);
  });

  it("ignores logged queries of another width", async () => {
    const dims = 32;
    const v = await build(make({ connectivity: 8, build_threads: 1, recall_sample: 50 }), "hnsw", noisyCopies(20, 10, dims, 0.08, 6), dims, undefined, new Float32Array(31 * 3));
    expect(v.manifest.recall).toMatchObject({ method: "held-out", sample: 20 });
    expect(v.manifest.recall!.queries).toBeUndefined();
  });

  it("hnsw measures its recall, raises expansion_search until the target, and serves with what it chose", async () => {
    const dims = 32;
    const vectors = nearDuplicates(100, 40, dims);
    const engine = make({ connectivity: 4, build_threads: 1, expansion_search: 1, target_recall: 0.95, recall_sample: 200 });
    const art = await engine.build(vectors, dims);
    const r = art.recall!;
    expect(r).toMatchObject({ k: 10, target: 0.95, sample: 200, method: "held-out", met: true });
    expect(r.measured).toBeGreaterThanOrEqual(0.95);
    expect(r.tried.length, JSON.stringify(r.tried)).toBeGreaterThan(1);
    expect(r.tried[0].params).toEqual({ connectivity: 4, expansion_search: 1 });
    expect(r.tried.find((t) => t.params.connectivity === r.params.connectivity && t.params.expansion_search === r.params.expansion_search)!.recall).toBe(r.measured);
    expectNarrowed(r, "expansion_search");
    expect(JSON.parse(new TextDecoder().decode(art.files[META])).expansion_search).toBe(r.params.expansion_search);
    const v = await build(engine, "hnsw", vectors, dims);
    expect(v.manifest).toMatchObject({ engine: "hnsw", recall: { engine: "hnsw", met: true, params: r.params } });
  });

  it("builds a denser graph when no expansion_search reaches the target, and serves it with default options", async () => {
    // 300 near-copies of each of 8 documents: each document's node keeps at most 2 × connectivity of them.
    const dims = 32;
    const vectors = nearDuplicates(8, 300, dims);
    const engine = make({ connectivity: 4, build_threads: 1, target_recall: 0.95, recall_sample: 200 });
    const art = await engine.build(vectors, dims);
    const r = art.recall!;
    const used = [...new Set(r.tried.map((t) => t.params.connectivity))];
    expect(used[0]).toBe(4);
    expect(used.length, JSON.stringify(r.tried)).toBeGreaterThan(1);
    expect(r).toMatchObject({ met: true, params: { connectivity: used.at(-1) } });
    // Opened with default options, it serves at what the check chose: new copies of the same documents (queries
    // from outside the graph, as the check's held-out rows were) find their true top 10.
    const dir = await writeArtifact(art);
    const s = await make().open(dir, { dims, count: 2400 });
    const fresh = queryProbe(vectors, dims, 10, noisyCopies(8, 25, dims, 0.08, 77));
    const answers = [];
    for (let i = 0; i < 200; i++) answers.push((await s.search(fresh.queries.slice(i * dims, (i + 1) * dims), 10)).rows);
    expect(fresh.score(answers)).toBeGreaterThanOrEqual(0.9);
    await s.close();
  });

  describe("a target the engine cannot reach", () => {
    const dims = 64;
    const vectors = randomUnitVectors(3000, dims, 9);
    // Two links per node and a cap of 2 on expansion_search cannot find 10 true neighbours of random vectors.
    const weak = (on_recall_miss: string) => make({ build_threads: 1, connectivity: 2, max_connectivity: 2, expansion_add: 2, expansion_search: 1, max_expansion_search: 2, target_recall: 0.99, on_recall_miss });

    it("fails the build with an error naming the option, when on_recall_miss is fail", async () => {
      const err = await weak("fail").build(vectors, dims).catch((e: unknown) => e);
      expect(isApfaError(err, "index")).toBe(true);
      expect((err as Error).message).toMatch(/recall@10 0\.\d{3} at expansion_search \d \(connectivity 2\) is under target_recall 0\.99/);
      expect((err as Error).message).toContain("on_recall_miss");
    });

    it("serves the version with exact search (flat) and warns, when on_recall_miss is exact", async () => {
      const warned: string[] = [];
      const v = await build(weak("exact"), "hnsw", vectors, dims, (m) => warned.push(m));
      expect(v.manifest.engine).toBe("flat");
      expect(v.manifest.main).toBe("index.faiss");
      expect(v.manifest.recall).toMatchObject({ engine: "hnsw", met: false, fallback: "flat", target: 0.99 });
      expect(warned.join()).toMatch(/served with exact search/);
    });

    it("keeps the approximate index and records the miss, when on_recall_miss is accept", async () => {
      const v = await build(weak("accept"), "hnsw", vectors, dims);
      expect(v.manifest.engine).toBe("hnsw");
      expect(v.manifest.recall).toMatchObject({ met: false, params: { connectivity: 2 } });
      expect(v.manifest.recall!.measured).toBeLessThan(0.99);
    });
  });
});

describe("publishing a version under its recall target", () => {
  const manifest = { version: "a".repeat(64), recall: { k: 10, target: 0.95, measured: 0.6, met: false, engine: "hnsw" } } as unknown as Manifest;
  // The check runs before the store or database is touched, so a pipeline of config alone reaches it.
  const pipeline = (on_recall_miss?: string) => ({ config: { stages: { index: { options: { on_recall_miss } } } } }) as unknown as Pipeline;

  it("is refused unless the pipeline accepts recall misses", async () => {
    const err = await publishVersion(pipeline("exact"), manifest).catch((e: unknown) => e);
    expect(isApfaError(err, "index")).toBe(true);
    expect((err as Error).message).toMatch(/measured recall@10 0\.600, under its target 0\.95; it is not published unless stages\.index\.options\.on_recall_miss is accept/);
    expect(recallMissed(manifest)).toBe(true);
    expect(recallMissed({ ...manifest, recall: { ...manifest.recall!, fallback: "flat" } })).toBe(false);
  });
});
