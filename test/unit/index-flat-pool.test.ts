import * as fsp from "node:fs/promises";
import { createRequire } from "node:module";
import * as os from "node:os";
import * as path from "node:path";
import type * as Usearch from "usearch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exactPool, type ExactPool } from "../../plugins/index/_pool.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { randomUnitVectors } from "../conformance/index.ts";

const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;
const dims = 24;
const count = 3000;
const OFFSET = 45; // like flat's header: the matrix need not start at byte 0 of the file
const vectors = randomUnitVectors(count, dims, 11);
const queries = randomUnitVectors(16, dims, 12);
const query = (i: number) => queries.subarray(i * dims, (i + 1) * dims);
const inline = (q: Float32Array, k: number, matrix = vectors) => usearch.exactSearch(matrix, q.slice(), dims, k, usearch.MetricKind.IP, 1) as Usearch.Matches;

let dir: string;
let file: string;
const open = (workers: number) => exactPool({ file, offset: OFFSET, dims, count, workers, threads: 1 });

beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-pool-"));
  file = path.join(dir, "matrix.bin");
  await fsp.writeFile(file, Buffer.concat([Buffer.alloc(OFFSET, 0xee), Buffer.from(vectors.buffer)]));
});
afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

describe("exact search worker pool", () => {
  it("answers exactly what an inline exactSearch answers, for concurrent searches over two workers", async () => {
    const pool = await open(2);
    try {
      const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => pool.search(query(i), 10)));
      expect(answers).toHaveLength(16);
      answers.forEach((a, i) => {
        const want = inline(query(i), 10);
        expect(Array.from(a.keys)).toEqual(Array.from(want.keys));
        expect(Array.from(a.distances)).toEqual(Array.from(want.distances));
      });
    } finally {
      await pool.close();
    }
  });

  it("scans only the given rows, keys indexing them", async () => {
    const pool = await open(1);
    try {
      const rows = Uint32Array.from({ length: 200 }, (_, i) => i * 7 + 3);
      const sub = new Float32Array(rows.length * dims);
      rows.forEach((r, i) => sub.set(vectors.subarray(r * dims, (r + 1) * dims), i * dims));
      const got = await pool.search(query(0), 5, rows);
      expect(Array.from(got.keys)).toEqual(Array.from(inline(query(0), 5, sub).keys));
    } finally {
      await pool.close();
    }
  });

  it("close terminates every worker and later searches reject naming the closed index", async () => {
    const pool = await open(2);
    const workers = pool._workers();
    expect(workers.map((w) => w.threadId).every((id) => id > 0)).toBe(true);
    await pool.close();
    expect(workers.map((w) => w.threadId)).toEqual([-1, -1]);
    const err = await pool.search(query(0), 3).catch((e: unknown) => e);
    expect(isApfaError(err, "index")).toBe(true);
    expect((err as Error).message).toMatch(/closed index/);
  });

  it("close lets the scans under way answer and refuses what waits: terminating a worker mid-scan aborted the process", async () => {
    // A matrix big enough that a scan is still running when close is called (the first is sent at once).
    const bigDims = 384;
    const bigCount = 40_000;
    const bigFile = path.join(dir, "big.bin");
    await fsp.writeFile(bigFile, Buffer.concat([Buffer.alloc(OFFSET), Buffer.from(randomUnitVectors(bigCount, bigDims, 5).buffer)]));
    for (let round = 0; round < 3; round++) {
      const pool = await exactPool({ file: bigFile, offset: OFFSET, dims: bigDims, count: bigCount, workers: 1, threads: 1 });
      const asked = Array.from({ length: 6 }, (_, i) => pool.search(randomUnitVectors(1, bigDims, 50 + i), 5).then((m) => m.keys.length, (e: Error) => e.message));
      await pool.close();
      const got = await Promise.all(asked);
      expect(got[0]).toBe(5); // sent to the worker at once: its scan was under way, and answered
      for (const r of got.slice(1)) expect(r).toMatch(/closed index/); // waiting: refused
    }
  });

  it("a crashed worker rejects its search with the exit code, and the next search gets a fresh worker", async () => {
    const pool = await open(1);
    try {
      const [before] = pool._workers();
      // Queued behind the crash: must be answered by the respawned worker, not lost with the dead one.
      const crash = pool._crash().catch((e: unknown) => e);
      const after = pool.search(query(3), 4);
      const err = await crash;
      expect(isApfaError(err, "index")).toBe(true);
      expect((err as Error).message).toMatch(/search worker 0 exited with code 7/);
      expect(Array.from((await after).keys)).toEqual(Array.from(inline(query(3), 4).keys));
      expect(pool._workers()[0]).not.toBe(before);
    } finally {
      await pool.close();
    }
  });

  it("refuses to start when the file is missing, naming it", async () => {
    const err = await exactPool({ file: path.join(dir, "missing.bin"), offset: 0, dims, count, workers: 1, threads: 1 }).catch((e: unknown) => e);
    expect(isApfaError(err, "index")).toBe(true);
    expect((err as Error).message).toMatch(/missing\.bin/);
  });

  it("rejects a bad k with a clear error and keeps serving", async () => {
    const pool: ExactPool = await open(1);
    try {
      const err = await pool.search(query(0), count + 1).catch((e: unknown) => e);
      expect(isApfaError(err, "index")).toBe(true);
      expect((err as Error).message).toMatch(/exact search failed/);
      expect((await pool.search(query(0), 1)).keys).toHaveLength(1);
    } finally {
      await pool.close();
    }
  });

  it("scans waiting searches together, up to batch per pass, each answered exactly as alone", async () => {
    const pool = await exactPool({ file, offset: OFFSET, dims, count, workers: 1, threads: 1, batch: 8 });
    try {
      // 16 searches at once with different k, and a filtered one among them: the first is dispatched alone, the
      // rest wait and go in batches of up to 8; the filtered search (rows) always goes alone.
      const rows = Uint32Array.from({ length: 100 }, (_, i) => i * 11);
      const ks = Array.from({ length: 16 }, (_, i) => 1 + (i % 12));
      const all = ks.map((k, i) => pool.search(query(i), k));
      const filtered = pool.search(query(5), 3, rows);
      const bad = pool.search(query(6), count + 1).catch((e: unknown) => e);
      const answers = await Promise.all(all);
      answers.forEach((a, i) => {
        const want = inline(query(i), ks[i]);
        expect(Array.from(a.keys)).toEqual(Array.from(want.keys));
        expect(Array.from(a.distances)).toEqual(Array.from(want.distances));
      });
      const sub = new Float32Array(rows.length * dims);
      rows.forEach((r, i) => sub.set(vectors.subarray(r * dims, (r + 1) * dims), i * dims));
      expect(Array.from((await filtered).keys)).toEqual(Array.from(inline(query(5), 3, sub).keys));
      // A bad k fails alone; the searches batched beside it were answered above.
      expect((await bad as Error).message).toMatch(/exact search failed/);
      // 1 alone + 15 in batches of ≤ 8 (2) + the filtered one + the bad one: 5 scans for 18 searches.
      expect(pool._scans()).toBe(5);
    } finally {
      await pool.close();
    }
  });
});
