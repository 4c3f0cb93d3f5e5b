import { spawnSync } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import flat, { FILE, HEADER_BYTES } from "../../plugins/index/flat.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { bruteForce, randomUnitVectors, testIndexEngine, writeArtifact } from "../conformance/index.ts";

const ctx = { baseDir: "/", log: silentLogger, env: {} };
// create may return a promise by contract; the built-in engines return the engine itself.
const make = () => flat.create(flat.options.parse({}), ctx) as IndexEngine;

testIndexEngine("flat", make, { exact: true });
// search_threads: 0 scans on the caller's thread instead of the worker pool; both must answer the same.
testIndexEngine("flat, inline search", () => flat.create(flat.options.parse({ search_threads: 0 }), ctx) as IndexEngine, { exact: true });

describe("flat engine: FAISS IndexFlatIP file", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  it("writes the IndexFlatIP header followed by the vectors' own bytes", async () => {
    const dims = 8;
    const v = randomUnitVectors(5, dims, 3);
    const art = await make().build(v, dims);
    const b = art.files[FILE];
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    expect(art.main).toBe(FILE);
    expect(b.byteLength).toBe(HEADER_BYTES + v.byteLength);
    expect(new TextDecoder().decode(b.subarray(0, 4))).toBe("IxFI");
    expect(dv.getInt32(4, true)).toBe(dims);
    expect(dv.getBigInt64(8, true)).toBe(5n);
    expect(dv.getBigInt64(16, true)).toBe(1n << 20n);
    expect(b[32]).toBe(1);
    expect(dv.getInt32(33, true)).toBe(0);
    expect(dv.getBigUint64(37, true)).toBe(40n);
    expect(b.subarray(HEADER_BYTES)).toEqual(new Uint8Array(v.buffer));
  });

  it("builds from a subarray view without picking up its neighbours", async () => {
    const dims = 4;
    const big = randomUnitVectors(10, dims, 5);
    const art = await make().build(big.subarray(2 * dims, 6 * dims), dims);
    expect(art.files[FILE].subarray(HEADER_BYTES)).toEqual(new Uint8Array(big.buffer, 2 * dims * 4, 4 * dims * 4));
  });

  it("refuses a wrong fourcc, a non-IP metric and trailing bytes, naming the problem", async () => {
    const dims = 8;
    const art = await make().build(randomUnitVectors(20, dims, 4), dims);
    const cases: [string, (b: Uint8Array) => Uint8Array, RegExp][] = [
      ["fourcc", (b) => (b.set([0x49, 0x78, 0x46, 0x32], 0), b), /fourcc "IxF2"/],
      ["metric", (b) => (new DataView(b.buffer).setInt32(33, 1, true), b), /metric_type 1/],
      ["trailing", (b) => new Uint8Array([...b, 0, 0, 0, 0]), /trailing/],
    ];
    for (const [label, corrupt, msg] of cases) {
      const dir = await writeArtifact(art, { [FILE]: corrupt(art.files[FILE].slice()) });
      dirs.push(dir);
      const err = await make().open(dir, { dims, count: 20 }).catch((e: unknown) => e);
      expect(isApfaError(err, "index"), label).toBe(true);
      expect((err as Error).message, label).toMatch(msg);
    }
  });

  it("searches correctly with queries at any byte offset (usearch ignores typed-array offsets)", async () => {
    const dims = 16;
    const v = randomUnitVectors(200, dims, 8);
    const art = await make().build(v, dims);
    const dir = await writeArtifact(art);
    dirs.push(dir);
    const s = await make().open(dir, { dims, count: 200 });
    const holder = new Float32Array(dims * 3);
    holder.set(v.subarray(42 * dims, 43 * dims), dims);
    const r = await s.search(holder.subarray(dims, 2 * dims), 3);
    expect(r.rows[0]).toBe(42);
    await s.close();
  });

  it("keeps the caller's event loop turning while a search runs (search_threads: 1), and not inline (0)", async () => {
    const dims = 32;
    const count = 5000;
    const v = randomUnitVectors(count, dims, 9);
    const dir = await writeArtifact(await make().build(v, dims));
    dirs.push(dir);
    /** Event-loop turns (setImmediate callbacks) that ran between starting a search and its answer. */
    const turnsDuringSearch = async (searchThreads: number) => {
      const s = await (flat.create(flat.options.parse({ search_threads: searchThreads }), ctx) as IndexEngine).open(dir, { dims, count });
      try {
        let turns = 0;
        let settled = false;
        const answer = s.search(v.subarray(7 * dims, 8 * dims), 3).finally(() => (settled = true));
        while (!settled) {
          await new Promise((r) => setImmediate(r));
          if (!settled) turns++;
        }
        expect((await answer).rows[0]).toBe(7);
        return turns;
      } finally {
        await s.close();
      }
    };
    expect(await turnsDuringSearch(0)).toBe(0); // the scan ran before search() returned
    expect(await turnsDuringSearch(1)).toBeGreaterThan(0);
  });
});

/** An interpreter that can `import faiss`: Debian's python3-faiss lives in /usr/bin/python3, not a pyenv one. */
function pythonWithFaiss(): string | undefined {
  for (const py of ["python3", "/usr/bin/python3"]) {
    const r = spawnSync(py, ["-c", "import faiss, numpy"], { stdio: "ignore" });
    if (r.status === 0) return py;
  }
  return undefined;
}

describe("flat engine: Python FAISS interop", () => {
  const py = pythonWithFaiss();

  it("faiss.read_index opens our file and returns the same top-5 rows", async (t) => {
    if (!py) t.skip("python3-faiss is not installed (apt-get install -y python3-faiss python3-numpy)");
    const dims = 64;
    const count = 2000;
    const v = randomUnitVectors(count, dims, 11);
    const queries = randomUnitVectors(3, dims, 12);
    const art = await make().build(v, dims);
    const dir = await writeArtifact(art);
    try {
      await fsp.writeFile(path.join(dir, "queries.f32"), queries);
      const script = [
        "import faiss, numpy, json, sys",
        `index = faiss.read_index(sys.argv[1] + "/${FILE}")`,
        `q = numpy.fromfile(sys.argv[1] + "/queries.f32", dtype="<f4").reshape(-1, ${dims})`,
        "D, I = index.search(q, 5)",
        "print(json.dumps({'ntotal': index.ntotal, 'd': index.d, 'metric': index.metric_type, 'ids': I.tolist()}))",
      ].join("\n");
      const r = spawnSync(py!, ["-c", script, dir], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { ntotal: number; d: number; metric: number; ids: number[][] };
      expect(out).toMatchObject({ ntotal: count, d: dims, metric: 0 });
      const s = await make().open(dir, { dims, count });
      for (let q = 0; q < 3; q++) {
        const query = queries.slice(q * dims, (q + 1) * dims);
        expect((await s.search(query, 5)).rows).toEqual(out.ids[q]);
        expect(out.ids[q]).toEqual(bruteForce(v, dims, query, 5).rows);
      }
      await s.close();
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
