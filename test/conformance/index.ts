/**
 * Index-engine conformance suite. Any engine, built-in or a user's, passes it:
 * `testIndexEngine("hnsw", () => hnsw.create(opts, ctx), { exact: false, minRecall: 0.9 })`.
 * Artifacts go through a temp directory exactly as the runtime hands them to a server.
 * @module
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IndexArtifact, IndexEngine, IndexRecall, Searcher } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { filteredSearch, rowFilter } from "../../runtime/filtered-search.ts";

export interface IndexSuiteOptions {
  /** Exact engines must match brute force on top-10; approximate ones need `minRecall`. */
  exact: boolean;
  /** Lowest acceptable recall@10 against brute force for approximate engines. @default 0.9 */
  minRecall?: number;
  /**
   * Filtered search over-fetches until k rows pass; an engine whose search cannot return every row however many
   * are asked for (FAISS HNSW returns about efSearch + k candidates, not all) may then return fewer than k.
   * `false` checks only that what comes back passes, and recall against `filteredMinRecall`. @default true
   */
  filteredComplete?: boolean;
  /** Lowest recall of filtered search against brute force over the passing rows (approximate engines). @default minRecall */
  filteredMinRecall?: number;
  count?: number;
  dims?: number;
}

/** Deterministic PRNG (mulberry32) so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** L2-normalises each row in place. */
export function normalizeRows(v: Float32Array, dims: number): Float32Array {
  for (let r = 0; r < v.length / dims; r++) {
    let s = 0;
    for (let j = 0; j < dims; j++) s += v[r * dims + j] ** 2;
    const inv = 1 / Math.sqrt(s || 1);
    for (let j = 0; j < dims; j++) v[r * dims + j] *= inv;
  }
  return v;
}

/** `count` random unit vectors of `dims` floats, row-major. */
export function randomUnitVectors(count: number, dims: number, seed = 1): Float32Array {
  const next = rng(seed);
  const v = new Float32Array(count * dims);
  for (let i = 0; i < v.length; i++) v[i] = next() * 2 - 1;
  return normalizeRows(v, dims);
}

/** Brute-force inner products of `query` with every row, and the top-k rows, best first (the reference). */
export function bruteForce(vectors: Float32Array, dims: number, query: Float32Array, k: number): { rows: number[]; all: Float64Array } {
  const count = vectors.length / dims;
  const all = new Float64Array(count);
  for (let r = 0; r < count; r++) {
    let s = 0;
    for (let j = 0; j < dims; j++) s += vectors[r * dims + j] * query[j];
    all[r] = s;
  }
  const rows = Array.from({ length: count }, (_, i) => i).sort((a, b) => all[b] - all[a]).slice(0, k);
  return { rows, all };
}

/**
 * Asserts a recall check kept a setting `name` that met the target, that every setting it tried above it with the
 * same build (its other params) met it too, and, when it tried smaller ones, that the largest of those is within
 * an eighth of it (plugins/index/_recall.ts `between`). Returns whether it tried smaller ones, i.e. narrowed.
 */
export function expectNarrowed(r: IndexRecall, name: string): boolean {
  const chosen = r.params[name];
  const same = r.tried.filter((t) => Object.entries(r.params).every(([k, v]) => k === name || t.params[k] === v));
  const shown = JSON.stringify(r.tried);
  expect(same.find((t) => t.params[name] === chosen)!.recall, shown).toBeGreaterThanOrEqual(r.target);
  for (const t of same.filter((x) => x.params[name] > chosen)) expect(t.recall, shown).toBeGreaterThanOrEqual(r.target);
  const below = same.filter((t) => t.params[name] < chosen).map((t) => t.params[name]);
  if (!below.length) return false;
  expect(chosen - Math.max(...below), shown).toBeLessThanOrEqual(Math.max(1, chosen / 8));
  return true;
}

/** Writes an artifact's files into a fresh temp directory, as the runtime does before `open`. */
export async function writeArtifact(art: IndexArtifact, files?: Record<string, Uint8Array>): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-index-"));
  for (const [name, bytes] of Object.entries(files ?? art.files)) await fsp.writeFile(path.join(dir, name), bytes);
  return dir;
}

export function testIndexEngine(name: string, make: () => IndexEngine | Promise<IndexEngine>, opts: IndexSuiteOptions = { exact: true }): void {
  const count = opts.count ?? 600;
  const dims = opts.dims ?? 32;
  const minRecall = opts.minRecall ?? 0.9;

  describe(`index engine conformance: ${name}`, () => {
    const vectors = randomUnitVectors(count, dims, 7);
    const queries = randomUnitVectors(25, dims, 99);
    const dirs: string[] = [];
    let engine: IndexEngine;
    let art: IndexArtifact;
    let dir: string;
    let searcher: Searcher;

    const tempDir = async (files?: Record<string, Uint8Array>) => {
      const d = await writeArtifact(art, files);
      dirs.push(d);
      return d;
    };
    const expectRefused = async (p: Promise<unknown>, pattern?: RegExp) => {
      const err = await p.then(() => null, (e: unknown) => e);
      expect(isApfaError(err, "index"), `expected an ApfaError with code "index", got ${String(err)}`).toBe(true);
      if (pattern) expect((err as Error).message).toMatch(pattern);
    };

    beforeAll(async () => {
      engine = await make();
      art = await engine.build(vectors, dims);
      dir = await tempDir();
      searcher = await engine.open(dir, { dims, count });
    });
    afterAll(async () => {
      await searcher?.close();
      for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
    });

    it("builds plain files, names its main file, and opens with the right shape", () => {
      expect(engine.metric).toBe("ip");
      expect(Object.keys(art.files)).toContain(art.main);
      for (const [file, bytes] of Object.entries(art.files)) {
        expect(file).not.toMatch(/[\\/]/);
        expect(bytes).toBeInstanceOf(Uint8Array);
        expect(bytes.byteLength).toBeGreaterThan(0);
      }
      expect(searcher.count).toBe(count);
      expect(searcher.dims).toBe(dims);
      expect(searcher.memoryBytes).toBeGreaterThanOrEqual(0);
    });

    it("finds a stored vector as its own top hit with score ≈ 1", async () => {
      for (const row of [0, 1, 17, count >> 1, count - 1]) {
        const r = await searcher.search(vectors.slice(row * dims, (row + 1) * dims), 5);
        expect(r.rows[0], `row ${row}`).toBe(row);
        expect(r.scores[0]).toBeCloseTo(1, 4);
      }
    });

    it("returns rows in build order with their true inner products, best first", async () => {
      for (let q = 0; q < 5; q++) {
        const query = queries.subarray(q * dims, (q + 1) * dims);
        const r = await searcher.search(query, 10);
        const ref = bruteForce(vectors, dims, query, 0).all;
        expect(r.rows).toHaveLength(10);
        expect(r.scores).toHaveLength(10);
        for (let i = 0; i < r.rows.length; i++) {
          expect(Number.isInteger(r.rows[i]) && r.rows[i] >= 0 && r.rows[i] < count).toBe(true);
          expect(r.scores[i]).toBeCloseTo(ref[r.rows[i]], 4);
          if (i > 0) expect(r.scores[i]).toBeLessThanOrEqual(r.scores[i - 1] + 1e-6);
        }
      }
    });

    it("clamps k to the number of vectors, without padding or duplicates", async () => {
      const r = await searcher.search(queries.subarray(0, dims), count + 50);
      if (opts.exact) expect(r.rows).toHaveLength(count);
      // Approximate engines may stop early (a graph walk need not reach every node) but never pad.
      else expect(r.rows.length).toBeGreaterThanOrEqual(10);
      expect(r.rows.length).toBeLessThanOrEqual(count);
      expect(new Set(r.rows).size).toBe(r.rows.length);
      expect(r.rows.every((x) => x >= 0)).toBe(true);
    });

    it(opts.exact ? "agrees with brute force on the top 10" : `reaches recall@10 ≥ ${minRecall} against brute force`, async () => {
      let hits = 0;
      const nq = queries.length / dims;
      for (let q = 0; q < nq; q++) {
        const query = queries.subarray(q * dims, (q + 1) * dims);
        const ref = bruteForce(vectors, dims, query, 10);
        const r = await searcher.search(query, 10);
        if (opts.exact) {
          // Equal rows, or a swap between two rows whose scores tie to float32 precision.
          for (let i = 0; i < 10; i++) {
            if (r.rows[i] !== ref.rows[i]) expect(Math.abs(ref.all[r.rows[i]] - ref.all[ref.rows[i]])).toBeLessThan(1e-6);
          }
        }
        hits += r.rows.filter((x) => ref.rows.includes(x)).length;
      }
      expect(hits / (nq * 10)).toBeGreaterThanOrEqual(opts.exact ? 1 : minRecall);
    });

    // Filters from broad to very selective: every 2nd row, every 7th, a run of 30, 5 scattered rows.
    const filters: Array<[string, (r: number) => boolean]> = [
      ["half", (r) => r % 2 === 0], ["1 in 7", (r) => r % 7 === 3], ["a block of 30", (r) => r >= 100 && r < 130], ["5 rows", (r) => r % 113 === 5],
    ];
    for (const [label, pass] of filters) {
      it(`filtered search (${label}): only passing rows, never fewer than k when k pass${opts.exact ? ", exactly the top k" : ""}`, async () => {
        const passing = Uint32Array.from({ length: count }, (_, i) => i).filter(pass);
        const filter = rowFilter(passing, count);
        let hits = 0;
        let want = 0;
        for (let q = 0; q < 10; q++) {
          const query = queries.subarray(q * dims, (q + 1) * dims);
          const all = bruteForce(vectors, dims, query, 0).all;
          const ref = [...passing].sort((a, b) => all[b] - all[a]).slice(0, 10);
          const r = await filteredSearch(searcher, query, 10, filter);
          expect(r.rows.every((x) => pass(x)), "a row that does not pass").toBe(true);
          expect(new Set(r.rows).size).toBe(r.rows.length);
          if (opts.filteredComplete ?? true) expect(r.rows).toHaveLength(ref.length);
          else expect(r.rows.length).toBeLessThanOrEqual(ref.length);
          for (let i = 0; i < r.rows.length; i++) expect(r.scores[i]).toBeCloseTo(all[r.rows[i]], 4);
          if (opts.exact) for (let i = 0; i < ref.length; i++) if (r.rows[i] !== ref[i]) expect(Math.abs(all[r.rows[i]] - all[ref[i]])).toBeLessThan(1e-6);
          hits += r.rows.filter((x) => ref.includes(x)).length;
          want += ref.length;
        }
        expect(hits / want).toBeGreaterThanOrEqual(opts.exact ? 1 : (opts.filteredMinRecall ?? minRecall));
      });
    }

    it("filtered search with no passing row returns nothing", async () => {
      expect(await filteredSearch(searcher, queries.subarray(0, dims), 5, rowFilter(new Uint32Array(0), count))).toEqual({ rows: [], scores: [] });
    });

    it("rejects a query of the wrong length", async () => {
      await expectRefused(searcher.search(new Float32Array(dims + 1), 3));
    });

    it("refuses to open with a dims or count that does not match the artifact", async () => {
      await expectRefused(engine.open(dir, { dims: dims * 2, count }), /dim/);
      await expectRefused(engine.open(dir, { dims, count: count + 1 }));
    });

    it("refuses a truncated or missing main file with an ApfaError", async () => {
      const main = art.files[art.main];
      for (const keep of [main.byteLength >> 1, main.byteLength - 1, 10]) {
        const d = await tempDir({ ...art.files, [art.main]: main.subarray(0, keep) });
        await expectRefused(engine.open(d, { dims, count }));
      }
      const empty = await tempDir({});
      await expectRefused(engine.open(empty, { dims, count }));
    });

    it("refuses to search once closed", async () => {
      const s = await engine.open(dir, { dims, count });
      await s.close();
      await expectRefused(s.search(queries.subarray(0, dims), 3));
    });
  });
}
