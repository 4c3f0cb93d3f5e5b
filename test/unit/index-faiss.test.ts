import * as fsp from "node:fs/promises";
import * as os from "node:os";
import { createRequire } from "node:module";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import faiss, { exactTruth, faissNodeBuild, faissNodeInstalled, META, type FaissSearcher } from "../../plugins/index/faiss.ts";
import { queryProbe, recallProbe } from "../../plugins/index/_recall.ts";
import { buildVersion } from "../../runtime/stages/build.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { createLogger, silentLogger } from "../../runtime/log.ts";
import { expectNarrowed, randomUnitVectors, testIndexEngine, writeArtifact } from "../conformance/index.ts";

const ctx = { baseDir: "/", log: silentLogger, env: {} };
const make = (opts: Record<string, unknown> = {}) => faiss.create(faiss.options.parse(opts), ctx) as IndexEngine;

const require = createRequire(import.meta.url);
const installed = faissNodeInstalled();
/** OMP_WAIT_POLICY as the test process started: the engine sets it only where it is unset. */
const ompWaitPolicy = process.env.OMP_WAIT_POLICY;
const SKIP = "faiss-node is not installed (scripts/build-faiss-node.sh builds it)";

if (installed) {
  // FAISS HNSW answers at most about efSearch + k candidates however many are asked for, so a very selective
  // filter can come back short (docs/index-engines.md, "Filtered search"); what does come back must pass.
  testIndexEngine("faiss HNSW32", () => make({ factory: "HNSW32" }), { exact: false, minRecall: 0.9, filteredComplete: false, filteredMinRecall: 0.1 });
  // With nprobe = nlist every list is scanned, so IVF answers exactly: this proves nprobe reaches FAISS. The recall
  // check is off, since it would serve the least nprobe that meets its target instead.
  testIndexEngine("faiss IVF8,Flat nprobe=8", () => make({ factory: "IVF8,Flat", nprobe: 8, target_recall: 0 }), { exact: true });
  testIndexEngine("faiss Flat", () => make({ factory: "Flat" }), { exact: true });
} else {
  describe("index engine conformance: faiss", () => {
    it.skip(SKIP, () => {});
  });
}

describe("faiss engine", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });
  /** Builds a version over `count` random rows with `opts` and writes it to a directory removed after the suite. */
  const versionDir = async (opts: Record<string, unknown>, count: number, dims: number, seed: number) => {
    const dir = await writeArtifact(await make(opts).build(randomUnitVectors(count, dims, seed), dims));
    dirs.push(dir);
    return dir;
  };

  it("without faiss-node, build names the script that installs it", async (t) => {
    if (installed) t.skip("faiss-node is installed here");
    const err = await make().build(randomUnitVectors(10, 4), 4).catch((e: unknown) => e);
    expect(isApfaError(err, "index")).toBe(true);
    expect((err as Error).message).toMatch(/faiss-node is not installed; run scripts\/build-faiss-node\.sh/);
  });

  it("close lets the calls already sent finish: terminating the worker mid-search aborted the process", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 256;
    const count = 40_000;
    const dir = await versionDir({ factory: "Flat" }, count, dims, 8);
    for (let round = 0; round < 3; round++) {
      const s = await make({ factory: "Flat" }).open(dir, { dims, count });
      const asked = Array.from({ length: 6 }, (_, i) => s.search(randomUnitVectors(1, dims, 60 + i), 5).then((r) => r.rows.length));
      await s.close();
      expect(await Promise.all(asked)).toEqual([5, 5, 5, 5, 5, 5]);
      const late = await s.search(randomUnitVectors(1, dims, 70), 5).catch((e: unknown) => e);
      expect((late as Error).message).toMatch(/closed/);
    }
  });

  it("FAISS's OpenMP threads wait passively unless the environment says otherwise", async (t) => {
    if (!installed) t.skip(SKIP);
    await versionDir({ factory: "IVF8,Flat", nprobe: 8, target_recall: 0 }, 500, 8, 3);
    expect(process.env.OMP_WAIT_POLICY).toBe(ompWaitPolicy ?? "PASSIVE");
  });

  it("nprobe=1 on IVF loses recall that nprobe=nlist has (the option reaches FAISS at open)", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 16;
    const count = 2000;
    const v = randomUnitVectors(count, dims, 5);
    // The recall check off: with it a chosen nprobe would be stored beside the file and win at open.
    const art = await make({ factory: "IVF32,Flat", nprobe: 32, target_recall: 0 }).build(v, dims);
    expect(art.files[META]).toBeUndefined();
    const dir = await writeArtifact(art);
    dirs.push(dir);
    const wide = await make({ factory: "IVF32,Flat", nprobe: 32 }).open(dir, { dims, count });
    const narrow = await make({ factory: "IVF32,Flat", nprobe: 1 }).open(dir, { dims, count });
    let same = 0;
    for (let q = 0; q < 20; q++) {
      const query = randomUnitVectors(1, dims, 100 + q);
      const a = (await wide.search(query, 10)).rows;
      const b = (await narrow.search(query, 10)).rows;
      same += b.filter((r) => a.includes(r)).length;
    }
    expect(same).toBeLessThan(200 * 0.9);
    await wide.close();
    await narrow.close();
  });

  it("reports a bad factory string as an ApfaError from FAISS", async (t) => {
    if (!installed) t.skip(SKIP);
    const err = await make({ factory: "NoSuchIndex42" }).build(randomUnitVectors(10, 4), 4).catch((e: unknown) => e);
    expect(isApfaError(err, "index")).toBe(true);
    expect((err as Error).message).toMatch(/FAISS/);
  });

  it("keeps the event loop free while FAISS searches in its worker", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 64;
    const count = 20_000;
    const dir = await versionDir({ factory: "Flat" }, count, dims, 9);
    const s = await make({ factory: "Flat" }).open(dir, { dims, count });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const started = performance.now();
    const searches = Array.from({ length: 40 }, (_, i) => s.search(randomUnitVectors(1, dims, i), 10));
    await Promise.all(searches);
    clearInterval(timer);
    const ms = performance.now() - started;
    // A blocked loop would tick once at most; a free one ticks many times while the worker scans.
    expect(ticks).toBeGreaterThan(Math.min(5, ms / 10));
    await s.close();
  });

  it("searches that arrive together go to FAISS as one call, each with its own k and answer", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 32;
    const count = 5000;
    const dir = await versionDir({ factory: "IVF16,Flat", nprobe: 4, target_recall: 0 }, count, dims, 11);
    const s = (await make({ factory: "IVF16,Flat", nprobe: 4 }).open(dir, { dims, count })) as FaissSearcher;
    const queries = Array.from({ length: 24 }, (_, i) => randomUnitVectors(1, dims, 500 + i));
    const ks = queries.map((_, i) => 1 + (i % 12));
    const one: Array<{ rows: number[]; scores: number[] }> = [];
    for (let i = 0; i < queries.length; i++) one.push(await s.search(queries[i], ks[i]));
    expect(s._calls()).toBe(queries.length);
    const together = await Promise.all(queries.map((q, i) => s.search(q, ks[i])));
    expect(together.map((r) => r.rows)).toEqual(one.map((r) => r.rows));
    together.forEach((r, i) => {
      expect(r.rows).toHaveLength(ks[i]);
      r.scores.forEach((x, j) => expect(x).toBeCloseTo(one[i].scores[j], 4));
    });
    // The positive signal: fewer FAISS calls than searches.
    expect(s._calls() - queries.length).toBeLessThan(queries.length);
    await s.close();
  });

  /** The lines of this process's memory maps that map `file`: "<from>-<to> <perms> ..." (Linux). */
  const mapsOf = async (file: string) => (await fsp.readFile("/proc/self/maps", "utf8")).split("\n").filter((l) => l.endsWith(` ${file}`));

  it("an IVF version's inverted lists are served from a read-only map of the index file, with the same answers as from the heap", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 32;
    const count = 4000;
    for (const factory of ["IVF16,Flat", "IVF16,SQ8"]) {
      const dir = await versionDir({ factory, nprobe: 4, target_recall: 0 }, count, dims, 21);
      const file = path.join(dir, "index.faiss");
      const before = await fsp.readdir(dir);
      const size = (await fsp.stat(file)).size;
      const heap = await make({ factory, nprobe: 4, mmap: false }).open(dir, { dims, count });
      expect(await mapsOf(file)).toEqual([]);
      const mapped = await make({ factory, nprobe: 4 }).open(dir, { dims, count });
      // The heap keeps only the header and the centroids; every vector's code and id stays in the mapped file.
      const lists = count * ((factory.endsWith("SQ8") ? dims : dims * 4) + 8);
      expect(mapped.memoryBytes).toBeLessThan(heap.memoryBytes - lists + 1024);
      const maps = await mapsOf(file);
      expect(maps).toHaveLength(1);
      // Shared ("s") and not writable: the published file cannot be written through the map.
      expect(maps[0].split(" ")[1]).toBe("r--s");
      // Mapped from byte 0, the whole file: nothing was copied beside it.
      const [from, to] = maps[0].split(" ")[0].split("-").map((x) => parseInt(x, 16));
      expect(to - from).toBe(Math.ceil(size / 4096) * 4096);
      expect(await fsp.readdir(dir)).toEqual(before);
      // A second process's open (here a second searcher) maps the same file.
      const again = await make({ factory, nprobe: 4 }).open(dir, { dims, count });
      expect(await mapsOf(file)).toHaveLength(2);
      for (let q = 0; q < 20; q++) {
        const query = randomUnitVectors(1, dims, 900 + q);
        const want = await heap.search(query, 10);
        expect((await mapped.search(query, 10)).rows).toEqual(want.rows);
        expect((await again.search(query, 10)).rows).toEqual(want.rows);
      }
      await Promise.all([heap.close(), mapped.close(), again.close()]);
    }
  });

  it("tells a faiss-node build that leaks, prefetches and maps writable from scripts/build-faiss-node.sh's, which does none of it", async (t) => {
    const root = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-faiss-node-"));
    dirs.push(root);
    const entry = path.join(root, "lib", "index.js");
    await fsp.mkdir(path.dirname(entry));
    await fsp.writeFile(entry, "");
    await fsp.writeFile(path.join(root, "package.json"), JSON.stringify({ name: "faiss-node", version: "0.5.1" }));
    expect(faissNodeBuild(entry)).toEqual({ prefetches: true, readOnly: false, leaksFixed: false, f32Arrays: false });
    await fsp.writeFile(path.join(root, "package.json"), JSON.stringify({ name: "faiss-node", version: "0.5.1", apfa: { ondisk_prefetch: false } }));
    expect(faissNodeBuild(entry)).toEqual({ prefetches: false, readOnly: false, leaksFixed: false, f32Arrays: false });
    await fsp.writeFile(path.join(root, "package.json"), JSON.stringify({ name: "faiss-node", version: "0.5.1", apfa: { ondisk_prefetch: false, ondisk_read_only: true, leaks_fixed: true, f32_arrays: true } }));
    expect(faissNodeBuild(entry)).toEqual({ prefetches: false, readOnly: true, leaksFixed: true, f32Arrays: true });
    if (!installed) t.skip(SKIP);
    // The build CI installs: a mapped IVF version opens without the warning.
    expect(faissNodeBuild()).toEqual({ prefetches: false, readOnly: true, leaksFixed: true, f32Arrays: true });
    const dims = 16;
    const count = 2000;
    const dir = await versionDir({ factory: "IVF8,Flat", nprobe: 8, target_recall: 0 }, count, dims, 33);
    const lines: string[] = [];
    const log = createLogger({}, { level: "warn", write: (l) => lines.push(l) });
    const s = await (faiss.create(faiss.options.parse({ factory: "IVF8,Flat", nprobe: 8 }), { ...ctx, log }) as IndexEngine).open(dir, { dims, count });
    expect(await mapsOf(path.join(dir, "index.faiss"))).toHaveLength(1);
    expect(lines).toEqual([]);
    await s.close();
  });

  it("the installed faiss-node frees what toBuffer, fromBuffer and search allocate", async (t) => {
    if (!installed) t.skip(SKIP);
    // In a process of its own: 30 round trips of a 40 MB index through toBuffer and fromBuffer, and 400 searches.
    // faiss-node 0.5.1 as published keeps a copy of the index per call (2.4 GB here); fixed, the process's RSS
    // settles within a few copies of it.
    const script = `
      const faiss = require(${JSON.stringify(require.resolve("faiss-node"))});
      const dims = 64, n = 160000, x = new Array(n * dims);
      for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 12.9898) % 1;
      const index = new faiss.IndexFlatIP(dims);
      index.add(x);
      const rss = () => process.memoryUsage().rss;
      // A wrapper's index is freed by a finalizer that runs after a collection, on a later turn of the event loop.
      const collect = async () => { global.gc(); await new Promise((r) => setImmediate(r)); global.gc(); await new Promise((r) => setImmediate(r)); };
      (async () => {
        for (let i = 0; i < 3; i++) faiss.Index.fromBuffer(index.toBuffer());
        await collect();
        const before = rss();
        for (let i = 0; i < 30; i++) { faiss.Index.fromBuffer(index.toBuffer()); await collect(); }
        const grew = rss() - before;
        // 400 searches of 4,096 queries each against a small index: 400 MiB of query floats if none is freed.
        const small = new faiss.IndexFlatIP(dims);
        small.add(x.slice(0, 10 * dims));
        const q = x.slice(0, dims * 4096);
        const atSearch = rss();
        for (let i = 0; i < 400; i++) small.search(q, 1);
        await collect();
        console.log(JSON.stringify({ bytes: index.toBuffer().length, grew, searchGrew: rss() - atSearch }));
      })();`;
    const { execFileSync } = await import("node:child_process");
    const { bytes, grew, searchGrew } = JSON.parse(execFileSync(process.execPath, ["--expose-gc", "-e", script], { encoding: "utf8" })) as { bytes: number; grew: number; searchGrew: number };
    expect(bytes).toBeGreaterThan(40e6);
    expect(grew, `RSS grew ${Math.round(grew / 2 ** 20)} MiB over 30 round trips of a ${Math.round(bytes / 2 ** 20)} MiB index`).toBeLessThan(8 * bytes);
    expect(searchGrew, `RSS grew ${Math.round(searchGrew / 2 ** 20)} MiB over 400 searches of 1 MiB of queries`).toBeLessThan(200 * 2 ** 20);
  });

  it("the installed faiss-node takes Float32Arrays, subarrays too, for add, train and search, with the answers Arrays get", (t) => {
    if (!installed) t.skip(SKIP);
    type Ix = { train(x: ArrayLike<number>): void; add(x: ArrayLike<number>): void; search(x: ArrayLike<number>, k: number): { labels: number[]; distances: number[] } };
    const f = require("faiss-node") as { Index: { fromFactory(d: number, factory: string, metric: number): Ix } };
    const dims = 16;
    const v = randomUnitVectors(3000, dims, 71);
    // Offsets into one buffer: the addon must read from each view's own start, not its buffer's.
    const padded = new Float32Array(v.length + 2 * dims);
    padded.set(v, dims);
    const view = padded.subarray(dims, dims + v.length);
    const q = randomUnitVectors(20, dims, 72);
    const withArrays = f.Index.fromFactory(dims, "IVF8,Flat", 0);
    withArrays.train(Array.from(v));
    withArrays.add(Array.from(v));
    const withF32 = f.Index.fromFactory(dims, "IVF8,Flat", 0);
    withF32.train(view);
    for (let r = 0; r < 3000; r += 1000) withF32.add(view.subarray(r * dims, (r + 1000) * dims));
    const want = withArrays.search(Array.from(q), 5);
    const got = withF32.search(q.subarray(0), 5);
    expect(got.labels).toEqual(want.labels);
    got.distances.forEach((x, i) => expect(x).toBeCloseTo(want.distances[i], 5));
    // Other typed arrays are still refused by name, as anything but an Array was.
    expect(() => withF32.search(new Float64Array(q), 5)).toThrow(/must be an Array/);
  });

  it("the recall check's exact truth from FAISS's flat search is usearch's", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 24;
    const v = randomUnitVectors(5000, dims, 81);
    const logged = randomUnitVectors(40, dims, 82);
    const truth = (await exactTruth(v, dims, 60, logged))!;
    expect(truth).toBeDefined();
    const [withFaiss, withUsearch] = [recallProbe(v, dims, 10, 60, truth.corpus), recallProbe(v, dims, 10, 60)];
    expect(Array.from(withFaiss.rows)).toEqual(Array.from(withUsearch.rows));
    withFaiss.kth.forEach((x, i) => expect(x).toBeCloseTo(withUsearch.kth[i], 5));
    const [q1, q2] = [queryProbe(v, dims, 10, logged, undefined, truth.logged), queryProbe(v, dims, 10, logged)];
    q1.kth.forEach((x, i) => expect(x).toBeCloseTo(q2.kth[i], 5));
    // Asked for other queries than it computed: an error, not a wrong truth.
    expect(() => recallProbe(v, dims, 10, 61, truth.corpus)).toThrow(/exact truth asked for 61 queries/);
  });

  /** The opened version's recall on the check's own corpus-row queries, scored the check's way. */
  const servedRecall = async (engine: IndexEngine, dir: string, v: Float32Array, dims: number) => {
    const count = v.length / dims;
    const s = await engine.open(dir, { dims, count });
    const probe = recallProbe(v, dims, 10, 300);
    const answers = [];
    for (let i = 0; i < probe.rows.length; i++) answers.push((await s.search(probe.queries.slice(i * dims, (i + 1) * dims), probe.k + 1)).rows);
    await s.close();
    return probe.score(answers);
  };

  it("recall check raises IVF nprobe until the target is met, and open serves the chosen nprobe", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 16;
    const v = randomUnitVectors(4000, dims, 3);
    const engine = make({ factory: "IVF64,Flat", nprobe: 1, target_recall: 0.95 });
    const art = await engine.build(v, dims);
    const r = art.recall!;
    expect(r.met).toBe(true);
    expect(r.measured).toBeGreaterThanOrEqual(0.95);
    expect(r.tried[0].params).toEqual({ nprobe: 1 });
    expect(r.tried[0].recall).toBeLessThan(0.95);
    expect(r.params.nprobe).toBeGreaterThan(1);
    expect(expectNarrowed(r, "nprobe")).toBe(true);
    expect(JSON.parse(new TextDecoder().decode(art.files[META]))).toEqual({ ...r.params, configured: 1 });
    expect(art.fallback).toBeUndefined();
    const dir = await writeArtifact(art);
    dirs.push(dir);
    // The same queries through the opened version give the check's own figure: the chosen nprobe reached FAISS.
    expect(await servedRecall(engine, dir, v, dims)).toBeCloseTo(r.measured, 5);
  });

  it("on corpus rows alone, the recall check never lowers the configured nprobe: they are the kinder question", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 16;
    const v = randomUnitVectors(4000, dims, 3);
    const r = (await make({ factory: "IVF64,Flat", nprobe: 64, target_recall: 0.95 }).build(v, dims)).recall!;
    expect(r).toMatchObject({ met: true, method: "leave-one-out", params: { nprobe: 64 } });
    expect(r.tried.map((x) => x.params.nprobe)).toEqual([64]);
  });

  it("with logged queries, the recall check lowers an nprobe that meets the target at once to the least that clears it, and open serves that", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 16;
    const v = randomUnitVectors(4000, dims, 3);
    const engine = make({ factory: "IVF64,Flat", nprobe: 64, target_recall: 0.95 });
    const art = await engine.build(v, dims, { queries: randomUnitVectors(300, dims, 9) });
    const r = art.recall!;
    expect(r.method).toBe("leave-one-out+logged-queries");
    expect(r.tried[0]).toMatchObject({ params: { nprobe: 64 } });
    expect(r.tried[0].recall).toBeGreaterThanOrEqual(0.95);
    expect(r).toMatchObject({ met: true });
    expect(r.params.nprobe, JSON.stringify(r.tried)).toBeLessThan(64);
    // The half of the chosen setting, or the bisection's miss just below it, did not clear the target.
    expect(r.tried.some((x) => x.params.nprobe < r.params.nprobe && x.recall < 0.95 + 0.02)).toBe(true);
    const dir = await writeArtifact(art);
    dirs.push(dir);
    expect(await servedRecall(engine, dir, v, dims)).toBeCloseTo(r.corpus!.measured, 5);
    // An nprobe raised above the build's since wins; the build's own value does not pin the check's choice.
    expect(await servedRecall(make({ factory: "IVF64,Flat", nprobe: 64 }), dir, v, dims)).toBeCloseTo(r.corpus!.measured, 5);
    expect(await servedRecall(make({ factory: "IVF64,Flat", nprobe: 65 }), dir, v, dims)).toBe(1);
  });

  it("recall check raises HNSW efSearch from FAISS's 16, and open serves the chosen efSearch", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 16;
    const v = randomUnitVectors(4000, dims, 3);
    const engine = make({ factory: "HNSW4", target_recall: 0.97 });
    const art = await engine.build(v, dims);
    const r = art.recall!;
    expect(r.tried[0].params).toEqual({ ef_search: 16 });
    expect(r.params.ef_search).toBeGreaterThan(16);
    expect(r.met).toBe(true);
    expect(expectNarrowed(r, "ef_search")).toBe(true);
    const dir = await writeArtifact(art);
    dirs.push(dir);
    expect(await servedRecall(engine, dir, v, dims)).toBeCloseTo(r.measured, 5);
  });

  it("a target the index cannot reach fails the build, or asks for exact search, as on_recall_miss says", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 16;
    const v = randomUnitVectors(4000, dims, 3);
    // SQ4 keeps 4 bits a dimension and has no search-time setting: measured once, under 0.99.
    const err = await make({ factory: "SQ4", target_recall: 0.99, on_recall_miss: "fail" }).build(v, dims).catch((e: unknown) => e);
    expect(isApfaError(err, "index")).toBe(true);
    expect((err as Error).message).toMatch(/recall@10 0\.\d+ \(SQ4\) is under target_recall 0\.99/);
    expect((err as Error).message).toMatch(/on_recall_miss/);
    const art = await make({ factory: "SQ4", target_recall: 0.99 }).build(v, dims);
    expect(art.fallback).toBe("exact");
    expect(art.recall!.met).toBe(false);
    expect(art.recall!.tried).toHaveLength(1);
    const kept = await make({ factory: "SQ4", target_recall: 0.99, on_recall_miss: "accept" }).build(v, dims);
    expect(kept.fallback).toBeUndefined();
    expect(kept.recall!.met).toBe(false);
  });

  it("logged queries count: the lower of the two figures is the one held to the target", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 16;
    const v = randomUnitVectors(4000, dims, 3);
    const queries = randomUnitVectors(200, dims, 77);
    const art = await make({ factory: "IVF64,Flat", nprobe: 1, target_recall: 0.9 }).build(v, dims, { queries });
    const r = art.recall!;
    expect(r.method).toBe("leave-one-out+logged-queries");
    expect(r.queries!.sample).toBe(200);
    expect(r.measured).toBe(Math.min(r.corpus!.measured, r.queries!.measured));
    for (const x of r.tried) expect(x.recall).toBe(Math.min(x.corpus!, x.queries!));
  });

  it("a malformed faiss.json beside the index is named at open", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 8;
    const v = randomUnitVectors(500, dims, 3);
    const art = await make({ factory: "IVF4,Flat" }).build(v, dims);
    const dir = await writeArtifact({ ...art, files: { ...art.files, [META]: new TextEncoder().encode('{"nprobe": "lots"}') } });
    dirs.push(dir);
    const err = await make({ factory: "IVF4,Flat" }).open(dir, { dims, count: 500 }).catch((e: unknown) => e);
    expect(isApfaError(err, "index")).toBe(true);
    expect((err as Error).message).toMatch(/faiss\.json is not a JSON object of positive integer settings/);
  });

  it("through the build stage: the manifest carries faiss's recall, and a miss is served by flat", async (t) => {
    if (!installed) t.skip(SKIP);
    const dims = 16;
    const v = randomUnitVectors(2000, dims, 4);
    const docs = new TextEncoder().encode(Array.from({ length: 2000 }, (_, i) => JSON.stringify({ id: `d${String(i).padStart(5, "0")}`, text: `t${i}` })).join("\n") + "\n");
    const build = (engine: IndexEngine, warn?: (m: string) => void) =>
      buildVersion({ pipeline: "t", runId: null, engine, engineName: "faiss", engineKey: "k", embedderKey: "e", parts: [{ n: 0, docs, vectors: v, rows: 2000, dims, modelId: "m", maxChars: 100 }], reuse: [], warn });
    const ok = await build(make({ factory: "IVF32,Flat", nprobe: 2 }));
    expect(ok.manifest).toMatchObject({ engine: "faiss", recall: { engine: "faiss", met: true, target: 0.95 } });
    expect(ok.manifest.recall!.params.nprobe).toBeGreaterThan(2);
    const warned: string[] = [];
    const missed = await build(make({ factory: "SQ4", target_recall: 0.99 }), (m) => warned.push(m));
    expect(missed.manifest.engine).toBe("flat");
    expect(missed.manifest.recall).toMatchObject({ engine: "faiss", met: false, fallback: "flat", target: 0.99 });
    expect(warned.join()).toMatch(/faiss reached recall@10 0\.\d+ < target 0\.99; this version is served with exact search/);
  });
});
