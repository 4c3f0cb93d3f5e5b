/**
 * flat's vectors memory-mapped through apfa's native helper (runtime/mmap.ts): one read-only shared map of the
 * version's file per search worker, the same answers as a read copy, nothing counted in the heap, and the map
 * gone when the searcher closes. CI builds the helper (`npm run build`, which `npm ci` runs); elsewhere a machine
 * without a C compiler skips these.
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import flat, { FILE, HEADER_BYTES } from "../../plugins/index/flat.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import type { Logger } from "../../runtime/contracts.ts";
import { silentLogger } from "../../runtime/log.ts";
import { mapFile, mmapHelper } from "../../runtime/mmap.ts";
import { testIndexEngine, randomUnitVectors, writeArtifact } from "../conformance/index.ts";

const ctx = { baseDir: "/", log: silentLogger, env: {} };
const make = (o: Record<string, unknown> = {}) => flat.create(flat.options.parse(o), ctx) as IndexEngine;
const helper = mmapHelper();
const built = "path" in helper;

// Both read paths stay covered: the default maps when the helper is built, these never do.
testIndexEngine("flat, vectors read (mmap: false)", () => make({ mmap: false }), { exact: true });
testIndexEngine("flat, vectors read, inline search (mmap: false)", () => make({ mmap: false, search_threads: 0 }), { exact: true });

/** The lines of this process's memory maps that map `file`: "<from>-<to> <perms> ..." (Linux). */
const mapsOf = async (file: string) => (await fsp.readFile("/proc/self/maps", "utf8")).split("\n").filter((l) => l.endsWith(` ${file}`));

describe("flat engine: vectors mapped from the version's file", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });
  it.skipIf(!built && !process.env.CI)("maps the file read-only and shared once per search worker, answers as a read copy does, and unmaps on close", async () => {
    const dims = 48;
    const count = 3000;
    const v = randomUnitVectors(count, dims, 41);
    const dir = await writeArtifact(await make().build(v, dims));
    dirs.push(dir);
    const file = path.join(dir, FILE);
    const read = await make({ mmap: false }).open(dir, { dims, count });
    expect(await mapsOf(file)).toEqual([]);
    expect(read.memoryBytes).toBe(count * dims * 4);

    const mapped = await make({ search_threads: 2 }).open(dir, { dims, count });
    const maps = await mapsOf(file);
    expect(maps).toHaveLength(2); // one per worker, of the same page-cache pages
    for (const m of maps) expect(m.split(" ")[1]).toBe("r--s");
    expect(mapped.memoryBytes).toBe(0);
    const inline = await make({ search_threads: 0 }).open(dir, { dims, count });
    expect(await mapsOf(file)).toHaveLength(3);

    for (let q = 0; q < 25; q++) {
      const query = randomUnitVectors(1, dims, 500 + q);
      const want = await read.search(query, 10);
      for (const s of [mapped, inline]) {
        const got = await s.search(query, 10);
        expect(got.rows).toEqual(want.rows);
        got.scores.forEach((x, i) => expect(x).toBeCloseTo(want.scores[i], 5));
      }
    }
    // Filtered searches copy the passing rows out of the map.
    const passing = Uint32Array.from({ length: 40 }, (_, i) => i * 7);
    const query = randomUnitVectors(1, dims, 77);
    const want = await read.searchFiltered!(query, 5, { rows: passing, has: (r) => r % 7 === 0 && r < 280 });
    expect((await mapped.searchFiltered!(query, 5, { rows: passing, has: (r) => r % 7 === 0 && r < 280 })).rows).toEqual(want.rows);

    // Closing ends the workers, and with them their maps: a retired version's file is not held open.
    await mapped.close();
    for (let i = 0; i < 200 && (await mapsOf(file)).length > 1; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await mapsOf(file)).toHaveLength(1); // the inline searcher's, until its array is collected
    await Promise.all([read.close(), inline.close()]);
  });

  it.skipIf(!built && !process.env.CI)("says which file and why when a map cannot be made", () => {
    const err = (() => {
      try {
        mapFile("/nonexistent/index.faiss", HEADER_BYTES, 4, "index:flat");
      } catch (e) {
        return e;
      }
    })();
    expect(isApfaError(err)).toBe(true);
    expect((err as Error).message).toMatch(/\/nonexistent\/index\.faiss: No such file/);
  });

  it("reads a copy, and says why once, where mapping is off or cannot be done", async () => {
    const dims = 8;
    const count = 50;
    const v = randomUnitVectors(count, dims, 3);
    const dir = await writeArtifact(await make().build(v, dims));
    dirs.push(dir);
    const lines: string[] = [];
    const log = { ...silentLogger, info: (m: string) => lines.push(m) } as Logger;
    const off = flat.create(flat.options.parse({ mmap: false }), { ...ctx, log }) as IndexEngine;
    const s = await off.open(dir, { dims, count });
    expect(s.memoryBytes).toBe(count * dims * 4);
    expect(await mapsOf(path.join(dir, FILE))).toEqual([]);
    await s.close();
    expect(lines).toEqual([]); // off by configuration is not news
    const on = flat.create(flat.options.parse({}), { ...ctx, log }) as IndexEngine;
    for (let i = 0; i < 2; i++) await (await on.open(dir, { dims, count })).close();
    expect(lines).toEqual(built ? [] : [expect.stringMatching(/^flat: vectors read into each search worker's heap, not mapped: /)]);
  });
});
