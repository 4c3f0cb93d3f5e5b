import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, expect, it } from "vitest";
import { ApfaError } from "../../runtime/errors.ts";
import { openDocTable } from "../../server/doc-table.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-doctable-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const file = (text: string | Uint8Array) => {
  const f = path.join(dir, `${n++}.jsonl`);
  fs.writeFileSync(f, text);
  return f;
};

it("indexes lines by row, skipping blank lines and CRs, and reads UTF-8 documents on demand", async () => {
  const t = await openDocTable(file('{"id":"a","t":"é"}\r\n\n{"id":"b","t":"贷款"}\n\r\n{"id":"c"}'));
  expect(t.count).toBe(3);
  expect(JSON.parse(await t.get(0))).toEqual({ id: "a", t: "é" });
  expect(JSON.parse(await t.get(1))).toEqual({ id: "b", t: "贷款" });
  expect(JSON.parse(await t.get(2))).toEqual({ id: "c" });
  expect(await t.getMany([2, 0, 2, 1])).toEqual(['{"id":"c"}', '{"id":"a","t":"é"}', '{"id":"c"}', '{"id":"b","t":"贷款"}']);
  expect(t.bytes).toBe(3 * 12); // offsets only: the file stays on disk
  await t.close();
});

it("opens an empty file, and one ending in a CR without a newline", async () => {
  const empty = await openDocTable(file(""));
  expect(empty.count).toBe(0);
  expect(await empty.getMany([])).toEqual([]);
  await empty.close();
  const t = await openDocTable(file('{"a":1}\r\n{"b":2}\r'));
  expect(await t.getMany([0, 1])).toEqual(['{"a":1}', '{"b":2}']);
  await t.close();
});

it("finds every line of a file scanned in chunks smaller than its lines, with CRLF and multi-byte text split across chunk ends", async () => {
  const lines = Array.from({ length: 3000 }, (_, i) => JSON.stringify({ id: `d${i}`, text: "贷款é🙂".repeat(i % 7) + "x".repeat(i % 53) }));
  const f = file(lines.map((l, i) => (i % 3 === 0 ? `${l}\r\n` : i % 5 === 0 ? `${l}\n\n` : `${l}\n`)).join(""));
  for (const chunkBytes of [64, 97, 4096]) {
    const t = await openDocTable(f, { chunkBytes, sizeHint: 10 }); // a small hint: the offset arrays grow
    expect(t.count).toBe(lines.length);
    expect(await t.get(2999)).toBe(lines[2999]);
    const all = await t.getMany(Array.from({ length: lines.length }, (_, i) => i));
    expect(all).toEqual(lines);
    await t.close();
  }
});

it("answers concurrent getMany calls each with its own rows in its own order", async () => {
  const lines = Array.from({ length: 500 }, (_, i) => JSON.stringify({ id: i, pad: "p".repeat((i * 37) % 400) }));
  const t = await openDocTable(file(lines.join("\n") + "\n"));
  const asks = Array.from({ length: 40 }, (_, j) => Array.from({ length: 25 }, (_, i) => (j * 131 + i * 17) % 500));
  const got = await Promise.all(asks.map((rows) => t.getMany(rows)));
  got.forEach((g, j) => expect(g).toEqual(asks[j].map((r) => lines[r])));
  await t.close();
});

it("refuses a row out of range, a read after close, and a file truncated or changed since it was opened, with an ApfaError naming the file", async () => {
  const lines = ['{"id":"a"}', '{"id":"b"}', '{"id":"c"}'];
  const f = file(lines.join("\n") + "\n");
  const t = await openDocTable(f);
  for (const bad of [3, -1, 1.5, Number.NaN]) await expect(t.get(bad)).rejects.toThrow(/docs\].*row .* out of range 0-2/);
  await expect(t.getMany([0, 7])).rejects.toBeInstanceOf(ApfaError);

  fs.writeFileSync(f, '{"id":"a"}\n{"id":"bb"}\n{"id":"c"}\n'); // same inode, line 1 now one byte longer
  await expect(t.get(1)).rejects.toThrow(/changed since it was opened/);
  fs.truncateSync(f, 5);
  await expect(t.get(2)).rejects.toThrow(new RegExp(`${f.replace(/[.]/g, "\\.")}: shorter than when it was opened`));

  await t.close();
  expect(t.closed).toBe(true);
  await expect(t.get(0)).rejects.toThrow(/after the document table was closed/);
  await t.close(); // idempotent
  await expect(openDocTable(path.join(dir, "missing.jsonl"))).rejects.toThrow(/missing\.jsonl: cannot open/);
});
