import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { generateCorpus, writeCorpus } from "../../examples/corpus.ts";

describe("examples/corpus", () => {
  const docs = generateCorpus();

  it("is deterministic for a seed and changes with the seed", () => {
    expect(JSON.stringify(generateCorpus())).toBe(JSON.stringify(docs));
    expect(JSON.stringify(generateCorpus({ seed: 7, count: 50 }))).toBe(JSON.stringify(generateCorpus({ seed: 7, count: 50 })));
    expect(generateCorpus({ seed: 8, count: 50 }).map((d) => d.text)).not.toEqual(generateCorpus({ seed: 7, count: 50 }).map((d) => d.text));
  });

  it("has 1000 unique ids by default", () => {
    expect(docs).toHaveLength(1000);
    expect(new Set(docs.map((d) => d.id)).size).toBe(1000);
  });

  it("mixes about 60% loan products and 40% customer profiles", () => {
    const loans = docs.filter((d) => d.metadata.type === "loan_product");
    const custs = docs.filter((d) => d.metadata.type === "customer_profile");
    expect(loans.length + custs.length).toBe(1000);
    expect(loans.length).toBe(600);
    expect(loans.every((d) => /^loan-\d{4}$/.test(d.id))).toBe(true);
    expect(custs.every((d) => /^cust-\d{4}$/.test(d.id))).toBe(true);
    for (const d of loans) {
      const m = d.metadata;
      expect(typeof m.apr).toBe("number");
      expect(m.apr as number).toBeGreaterThan(0.03);
      expect(m.apr as number).toBeLessThan(0.36);
      expect(m.max_amount as number).toBeGreaterThan(m.min_amount as number);
    }
    for (const d of custs) {
      const m = d.metadata;
      expect(m.credit_score as number).toBeGreaterThanOrEqual(300);
      expect(m.credit_score as number).toBeLessThanOrEqual(850);
      expect((m.goals as string[]).length).toBeGreaterThan(0);
    }
  });

  it("has non-empty, mostly distinct texts", () => {
    expect(docs.every((d) => d.text.trim().length > 0)).toBe(true);
    expect(new Set(docs.map((d) => d.text)).size).toBeGreaterThanOrEqual(950);
  });

  it("writes one JSON object per line and creates the directory", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-corpus-"));
    const file = path.join(dir, "nested", "corpus.jsonl");
    expect(writeCorpus(file, { count: 25, seed: 3 })).toBe(25);
    const lines = (await fsp.readFile(file, "utf8")).trimEnd().split("\n");
    expect(lines.map((l) => JSON.parse(l))).toEqual(generateCorpus({ count: 25, seed: 3 }));
    await fsp.rm(dir, { recursive: true, force: true });
  });
});
