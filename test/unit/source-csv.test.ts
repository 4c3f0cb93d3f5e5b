import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { expect, it } from "vitest";
import csv, { parseCsv } from "../../plugins/source/csv.ts";
import fsStore from "../../plugins/store/fs.ts";
import { isMalformed, type SourceItem } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { testSource } from "../conformance/source.ts";

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-csv-"));
const ctx = { baseDir: dir, log: silentLogger, env: {} };

// 20 good rows (some quoted, one spanning two lines), with bad rows on known physical lines.
const rows = ["id,text,kind"];
for (let i = 0; i < 20; i++) rows.push(i === 3 ? `d3,"two\r\nlines, ""quoted""",loan` : i % 2 ? `d${i},doc ${i},loan` : `"d${i}","doc, ${i}",card`);
rows.splice(6, 0, "x1,too,many,fields"); // line 8: rows[0..5] hold lines 1-7 (d3 spans two)
rows.splice(9, 0, `x2,"closed"then-text,loan`); // line 11
rows.push(`x3,"never closed,loan`, "d20,last,loan"); // lines 25 and 26
await fsp.writeFile(path.join(dir, "c.csv"), "\uFEFF" + rows.join("\r\n") + "\r\n");
const make = async () => csv.create(csv.options.parse({ path: "c.csv" }), ctx);

async function readAll(src: { pages(o: { pageSize: number }): AsyncIterable<SourceItem[]> }): Promise<SourceItem[]> {
  const out: SourceItem[] = [];
  for await (const p of src.pages({ pageSize: 100 })) out.push(...p);
  return out;
}

async function* chunked(text: string, sizes: number[]): AsyncIterable<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  for (let i = 0, k = 0; i < bytes.length; k++) {
    const n = Math.max(1, sizes[k % sizes.length]);
    yield bytes.subarray(i, i + n);
    i += n;
  }
}

testSource("csv", make, { ids: Array.from({ length: 21 }, (_, i) => `d${i}`), malformed: 3 });

it("csv names the file and physical starting line of each malformed row", async () => {
  const bad = (await readAll(await make())).filter(isMalformed);
  expect(bad.map((b) => b.location)).toEqual(["c.csv:8", "c.csv:11", "c.csv:25"]);
  expect(bad[0].malformed).toMatch(/expected 3 fields as in the header, got 4/);
  expect(bad[1].malformed).toMatch(/after a closing quote/);
  expect(bad[2].malformed).toMatch(/unterminated quoted field/);
});

it("csv decodes quoted fields, strips the BOM and keeps other columns as metadata", async () => {
  const items = (await readAll(await make())).filter((i) => !isMalformed(i));
  expect(items[0]).toEqual({ id: "d0", text: "doc, 0", metadata: { kind: "card" }, location: "c.csv:2" });
  expect(items[3]).toMatchObject({ id: "d3", text: 'two\r\nlines, "quoted"', location: "c.csv:5" });
  expect(items[4]).toMatchObject({ id: "d4", location: "c.csv:7" });
});

it("csv recovers from an unterminated quote mid-file once max_record_chars is exceeded", async () => {
  const body = ["id,text", 'a,"runaway', ...Array.from({ length: 50 }, (_, i) => `r${i},row ${i}`)].join("\n");
  await fsp.writeFile(path.join(dir, "runaway.csv"), body);
  const src = await csv.create(csv.options.parse({ path: "runaway.csv", max_record_chars: 64 }), ctx);
  const items = await readAll(src);
  expect(items[0]).toMatchObject({ location: "runaway.csv:2", malformed: expect.stringMatching(/max_record_chars/) });
  // Parsing restarts on line 3, so every row after the broken one is still read.
  expect(items.slice(1).map((i) => (i as { id: unknown }).id)).toEqual(Array.from({ length: 50 }, (_, i) => `r${i}`));
});

it("csv re-parses the lines an unterminated quote swallowed", async () => {
  const text = 'id,text,kind\na,"x\ny\nz",b,"open\nr1,t1,k1\n';
  const got = [];
  for await (const batch of parseCsv(chunked(text, [1000]), { maxRecordChars: 16 })) got.push(...batch);
  // The record on line 2 outgrows the limit, so lines 3, 4 and 5 are parsed again, each as its own record.
  expect(got.map((r) => [r.line, r.error ? "bad" : r.fields.join("|")])).toEqual([[1, "id|text|kind"], [2, "bad"], [3, "y"], [4, "bad"], [5, "r1|t1|k1"]]);
});

it("csv parsing does not depend on chunk boundaries (property)", async () => {
  const field = fc.string({ unit: fc.constantFrom("a", "é", "😀", ",", '"', "\n", "\r\n", " ", "x"), maxLength: 8 });
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(field, { minLength: 3, maxLength: 3 }), { minLength: 1, maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 5 }),
      fc.constantFrom("\n", "\r\n"),
      async (table, sizes, eol) => {
        const quote = (f: string) => (/[",\r\n]/.test(f) || f === "" ? `"${f.replaceAll('"', '""')}"` : f);
        const text = table.map((r) => r.map(quote).join(",")).join(eol) + eol;
        const got: string[][] = [];
        for await (const batch of parseCsv(chunked(text, sizes))) {
          for (const row of batch) {
            expect(row.error).toBeUndefined();
            got.push(row.fields);
          }
        }
        expect(got).toEqual(table);
      },
    ),
    { numRuns: 300 },
  );
});

it("csv reads TSV via delimiter, and from a store key", async () => {
  const store = await fsStore.create({ dir: path.join(dir, "store") }, ctx);
  await store.put("in/t.tsv", new TextEncoder().encode("text\tid\nhello, world\t7\n"));
  const src = await csv.create(csv.options.parse({ key: "in/t.tsv", delimiter: "\t" }), { ...ctx, store });
  expect(await readAll(src)).toEqual([{ id: "7", text: "hello, world", metadata: {}, location: "in/t.tsv:2" }]);
});

it("csv rejects a header without the id column, naming the option", async () => {
  await fsp.writeFile(path.join(dir, "noid.csv"), "key,text\n1,a\n");
  const err = await readAll(await csv.create(csv.options.parse({ path: "noid.csv" }), ctx)).catch((e) => e);
  expect(isApfaError(err, "config")).toBe(true);
  expect(err.message).toMatch(/noid\.csv:1: .*no column "id" \(columns: key, text\); set the source option `id_field`/);
});

it("csv options are strict and validate the delimiter", () => {
  expect(csv.options.safeParse({ path: "a.csv", delimiter: '"' }).success).toBe(false);
  expect(csv.options.safeParse({ path: "a.csv", delim: ";" }).success).toBe(false);
  expect(csv.options.safeParse({ path: "a.csv", key: "b.csv" }).success).toBe(false);
});
