/**
 * Source conformance suite: `testSource(name, make, expected)` where `expected` lists the ids the source
 * must yield, in order. Checks paging, the record shape and that two reads give the same result.
 * @module
 */
import { describe, expect, it } from "vitest";
import { isMalformed, type Source, type SourceItem } from "../../runtime/contracts.ts";

async function readAll(src: Source, pageSize: number): Promise<SourceItem[][]> {
  const pages: SourceItem[][] = [];
  for await (const p of src.pages({ pageSize })) pages.push(p);
  return pages;
}

export function testSource(name: string, make: () => Promise<Source>, expected: { ids: string[]; malformed?: number }): void {
  describe(`source conformance: ${name}`, () => {
    it("yields every record once, in stable order, as {id, text, metadata}", async () => {
      const src = await make();
      const items = (await readAll(src, 7)).flat();
      const records = items.filter((i) => !isMalformed(i));
      expect(records.map((r) => String((r as { id: unknown }).id))).toEqual(expected.ids);
      for (const r of records) {
        if (isMalformed(r)) continue;
        expect(typeof r.text === "string" || r.text === undefined || r.text === null || typeof r.text !== "function").toBe(true);
        if (r.metadata !== undefined) expect(typeof r.metadata).toBe("object");
      }
      expect(items.filter(isMalformed).length).toBe(expected.malformed ?? 0);
      for (const m of items.filter(isMalformed)) expect(m.location).toMatch(/\S/);
      await src.close?.();
    });

    it("respects pageSize", async () => {
      const src = await make();
      const pages = await readAll(src, 3);
      for (const p of pages.slice(0, -1)) expect(p.length).toBe(3);
      expect(pages.at(-1)!.length).toBeLessThanOrEqual(3);
      expect(pages.at(-1)!.length).toBeGreaterThan(0);
      await src.close?.();
    });

    it("reads the same twice", async () => {
      const a = (await readAll(await make(), 50)).flat();
      const b = (await readAll(await make(), 50)).flat();
      expect(b).toEqual(a);
    });

    it("count, when given, matches the number of items", async () => {
      const src = await make();
      const n = await src.count?.();
      if (n !== undefined) expect(n).toBe(expected.ids.length + (expected.malformed ?? 0));
      await src.close?.();
    });
  });
}
