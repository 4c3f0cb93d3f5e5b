import { expect, it } from "vitest";
import { docTable } from "../../server/doc-table.ts";

it("indexes lines by row, skipping blank lines and CRs, decoding UTF-8 only on access", () => {
  const text = '{"id":"a","t":"é"}\r\n\n{"id":"b","t":"贷款"}\n{"id":"c"}';
  const t = docTable(new TextEncoder().encode(text));
  expect(t.count).toBe(3);
  expect(JSON.parse(t.get(0))).toEqual({ id: "a", t: "é" });
  expect(JSON.parse(t.get(1))).toEqual({ id: "b", t: "贷款" });
  expect(JSON.parse(t.get(2))).toEqual({ id: "c" });
  expect(() => t.get(3)).toThrow(RangeError);
  expect(docTable(new Uint8Array(0)).count).toBe(0);
});
