import { randomBytes } from "node:crypto";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { expect, it } from "vitest";
import parquet, { openLocalParquet, type ParquetFile, parquetRecords } from "../../plugins/source/parquet.ts";
import fsStore from "../../plugins/store/fs.ts";
import type { SourceItem } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { testSource } from "../conformance/source.ts";
import { type Row, writeParquet } from "../fixtures/delta.ts";

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-parquet-"));
const store = await fsStore.create({ dir: path.join(dir, "store") }, { baseDir: dir, log: silentLogger, env: {} });
const ctx = { baseDir: dir, log: silentLogger, env: {}, store };
const rows: Row[] = Array.from({ length: 25 }, (_, i) => ({ id: `p${i}`, text: `doc ${i}`, n: BigInt(i), score: i / 2, flag: i % 2 === 0 }));
rows[24].n = 2n ** 60n;
await writeParquet(path.join(dir, "t.parquet"), rows, { rowGroupSize: 10 });
await store.put("in/t.parquet", await fsp.readFile(path.join(dir, "t.parquet")));
const ids = rows.map((r) => String(r.id));

testSource("parquet (local file)", async () => parquet.create(parquet.options.parse({ path: "t.parquet" }), ctx), { ids });
testSource("parquet (store key)", async () => parquet.create(parquet.options.parse({ key: "in/t.parquet" }), ctx), { ids });

async function readAll(src: { pages(o: { pageSize: number }): AsyncIterable<SourceItem[]> }): Promise<SourceItem[]> {
  const out: SourceItem[] = [];
  for await (const p of src.pages({ pageSize: 100 })) out.push(...p);
  return out;
}

it("parquet makes values JSON-safe and keeps other columns as metadata", async () => {
  const items = await readAll(await parquet.create(parquet.options.parse({ path: "t.parquet" }), ctx));
  expect(items[3]).toEqual({ id: "p3", text: "doc 3", metadata: { n: 3, score: 1.5, flag: false }, location: "t.parquet:row 4" });
  expect((items[24] as { metadata: Record<string, unknown> }).metadata.n).toBe("1152921504606846976");
  expect(() => JSON.stringify(items)).not.toThrow();
});

it("parquet `columns` limits metadata, and count() reads the footer", async () => {
  const src = await parquet.create(parquet.options.parse({ path: "t.parquet", columns: ["score"] }), ctx);
  expect((await readAll(src))[1]).toEqual({ id: "p1", text: "doc 1", metadata: { score: 0.5 }, location: "t.parquet:row 2" });
  expect(await src.count!()).toBe(25);
});

it("parquet reads one row group at a time: no read spans more than a group", async () => {
  // Three row groups of ~400 KB of incompressible text each.
  const big: Row[] = Array.from({ length: 600 }, (_, i) => ({ id: `b${i}`, text: randomBytes(1500).toString("base64") }));
  await writeParquet(path.join(dir, "big.parquet"), big, { rowGroupSize: 200 });
  const pf = await openLocalParquet(path.join(dir, "big.parquet"), "big.parquet");
  let largest = 0;
  const spy: ParquetFile = {
    ...pf,
    file: { byteLength: pf.file.byteLength, slice: (s: number, e?: number) => ((largest = Math.max(largest, (e ?? pf.file.byteLength) - s)), pf.file.slice(s, e)) },
  };
  let n = 0;
  for await (const r of parquetRecords(spy, { id_field: "id", text_field: "text" })) expect(r.id).toBe(`b${n++}`);
  await pf.close();
  expect(n).toBe(600);
  expect(largest).toBeGreaterThan(pf.file.byteLength / 4);
  expect(largest).toBeLessThan(pf.file.byteLength / 2);
});

it("parquet names the file and the option when the id column is missing", async () => {
  const err = await readAll(await parquet.create(parquet.options.parse({ path: "t.parquet", id_field: "doc_id" }), ctx)).catch((e) => e);
  expect(isApfaError(err, "config")).toBe(true);
  expect(err.message).toMatch(/t\.parquet has no column "doc_id" \(columns: id, text, n, score, flag\); set the source option `id_field`/);
});

it("parquet rejects a file that is not Parquet, and a missing file, naming it", async () => {
  await fsp.writeFile(path.join(dir, "fake.parquet"), "id,text\n1,a\n");
  const bad = await readAll(await parquet.create(parquet.options.parse({ path: "fake.parquet" }), ctx)).catch((e) => e);
  expect(isApfaError(bad, "invalid_input")).toBe(true);
  expect(bad.message).toMatch(/fake\.parquet is not a readable Parquet file/);
  const missing = await readAll(await parquet.create(parquet.options.parse({ path: "nope.parquet" }), ctx)).catch((e) => e);
  expect(isApfaError(missing, "not_found")).toBe(true);
  expect(missing.message).toMatch(/cannot read nope\.parquet: ENOENT/);
});
