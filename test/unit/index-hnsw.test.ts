import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import flat from "../../plugins/index/flat.ts";
import hnsw, { FILE } from "../../plugins/index/hnsw.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { normalizeRows, randomUnitVectors, rng, testIndexEngine, writeArtifact } from "../conformance/index.ts";

const ctx = { baseDir: "/", log: silentLogger, env: {} };
const make = (opts: Record<string, unknown> = {}) => hnsw.create(hnsw.options.parse(opts), ctx) as IndexEngine;

testIndexEngine("hnsw", () => make(), { exact: false, minRecall: 0.9 });

/** Vectors around given centres (unit rows), like real embeddings (topics) rather than uniform noise. */
function clustered(count: number, dims: number, centres: Float32Array, seed: number): Float32Array {
  const next = rng(seed);
  const k = centres.length / dims;
  const v = new Float32Array(count * dims);
  for (let r = 0; r < count; r++) {
    const c = Math.floor(next() * k);
    for (let j = 0; j < dims; j++) v[r * dims + j] = centres[c * dims + j] + (next() - 0.5) * 0.45;
  }
  return normalizeRows(v, dims);
}

describe("hnsw engine", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  it("update removes and adds on a copy of the previous graph; every row still finds itself", async () => {
    const dims = 32;
    const engine = make({ expansion_search: 2048 });
    const old = randomUnitVectors(2000, dims, 41);
    const built: Array<[number, number]> = [];
    const first = await engine.build(old, dims, { onProgress: (done, total) => built.push([done, total]) });
    expect(built[0]).toEqual([0, 2000]);
    expect(built.at(-1)).toEqual([2000, 2000]);
    // Drop every 10th row, keep the rest in a new order, and add 300 new vectors.
    const kept = Array.from({ length: 2000 }, (_, i) => i).filter((i) => i % 10 !== 0).reverse();
    const fresh = randomUnitVectors(300, dims, 42);
    const next = new Float32Array((kept.length + 300) * dims);
    kept.forEach((p, r) => next.set(old.subarray(p * dims, (p + 1) * dims), r * dims));
    next.set(fresh, kept.length * dims);
    const prevRow = Int32Array.from([...kept, ...Array(300).fill(-1)]);
    const added: Array<[number, number]> = [];
    const updated = (await engine.update!({ files: first.files, count: 2000, dims }, { vectors: next, dims, prevRow, onProgress: (done, total) => added.push([done, total]) }))!;
    // Only the new vectors are inserted: the recall check's held-out ones (a tenth of the corpus) after the rest.
    expect(added).toEqual([[0, 300], [90, 300], [300, 300]]);
    expect(Object.keys(updated.files).sort()).toEqual(["hnsw.json", FILE, "keys.u32"]);
    const dir = await writeArtifact(updated);
    dirs.push(dir);
    const s = await engine.open(dir, { dims, count: kept.length + 300 });
    let self = 0;
    let checked = 0;
    for (let r = 0; r < kept.length + 300; r += 3, checked++) if ((await s.search(next.slice(r * dims, (r + 1) * dims), 1)).rows[0] === r) self++;
    // A wrong key map sends most rows elsewhere; usearch itself misses ~0.1-0.3 % of self-matches here, on a
    // fresh build as on an updated one, even at expansion_search 2048.
    expect(self / checked).toBeGreaterThanOrEqual(0.98);
    await s.close();
    // 200 removed of 2000 built: past a 5 % threshold the next run asks for a full build.
    const strict = make({ rebuild_after_removed: 0.05 });
    expect(await strict.update!({ files: first.files, count: 2000, dims }, { vectors: next, dims, prevRow })).toBeUndefined();
  });

  it("reaches recall@10 ≥ 0.9 against flat on 20k clustered vectors", async () => {
    const dims = 128;
    const count = 20_000;
    const centres = randomUnitVectors(200, dims, 20);
    const data = clustered(count, dims, centres, 21);
    const queries = clustered(200, dims, centres, 22);
    const exact = flat.create(flat.options.parse({}), ctx) as IndexEngine;
    const approx = make();
    const [fa, ha] = [await exact.build(data, dims), await approx.build(data, dims)];
    const [fd, hd] = [await writeArtifact(fa), await writeArtifact(ha)];
    dirs.push(fd, hd);
    const [fs, hs] = [await exact.open(fd, { dims, count }), await approx.open(hd, { dims, count })];
    let hits = 0;
    for (let q = 0; q < 200; q++) {
      const query = queries.slice(q * dims, (q + 1) * dims);
      const truth = new Set((await fs.search(query, 10)).rows);
      hits += (await hs.search(query, 10)).rows.filter((r) => truth.has(r)).length;
    }
    const recall = hits / 2000;
    console.log(`hnsw recall@10 vs flat, 20k×${dims} clustered: ${recall.toFixed(3)}`);
    expect(recall).toBeGreaterThanOrEqual(0.9);
    await fs.close();
    await hs.close();
  }, 180_000); // the 20k build takes ~5 s alone, ~30 s when the 2 cores are shared

  it("memory-maps the file: nothing resident counted, and the file must stay usable", async () => {
    const dims = 16;
    const art = await make().build(randomUnitVectors(300, dims, 2), dims);
    const dir = await writeArtifact(art);
    dirs.push(dir);
    const s = await make().open(dir, { dims, count: 300 });
    expect(s.memoryBytes).toBe(0);
    expect((await s.search(randomUnitVectors(1, dims, 3), 4)).rows).toHaveLength(4);
    await s.close();
  });

  it("refuses another engine's file with an ApfaError", async () => {
    const dims = 16;
    const v = randomUnitVectors(100, dims, 4);
    const other = await (flat.create(flat.options.parse({}), ctx) as IndexEngine).build(v, dims);
    const dir = await writeArtifact(other, { [FILE]: other.files[other.main] });
    dirs.push(dir);
    const err = await make().open(dir, { dims, count: 100 }).catch((e: unknown) => e);
    expect(isApfaError(err, "index")).toBe(true);
    expect((err as Error).message).toContain(path.join(dir, FILE));
  });

  it("rejects options outside their range, listing the field", () => {
    const r = hnsw.options.safeParse({ connectivity: 1, extra: true });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(/connectivity/);
  });
});

describe("hnsw quantization", () => {
  it.each([["f16", 2], ["i8", 1]] as const)("%s stores %i bytes per dimension and still finds each row", async (quantization, bytes) => {
    const dims = 64;
    const vectors = randomUnitVectors(1000, dims, 77);
    const engine = make({ quantization, build_threads: 1, target_recall: 0 });
    const art = await engine.build(vectors, dims);
    // usearch's layout: rows:u32, bytes per row:u32, then the rows.
    expect(new DataView(art.files[FILE].buffer, art.files[FILE].byteOffset).getUint32(4, true)).toBe(dims * bytes);
    const dir = await writeArtifact(art);
    const s = await engine.open(dir, { dims, count: 1000 });
    let self = 0;
    for (let r = 0; r < 1000; r += 10) if ((await s.search(vectors.slice(r * dims, (r + 1) * dims), 1)).rows[0] === r) self++;
    expect(self).toBeGreaterThanOrEqual(95);
    await s.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });
});
