/**
 * Generator conformance suite: `testGenerator("template", async () => template.create(opts, ctx), { deterministic: true })`.
 * Checks that advice is non-empty, cites only the ids it was given, handles zero documents, and is
 * deterministic when the generator says it is.
 * @module
 */
import { describe, expect, it } from "vitest";
import type { Generator, RetrievedDoc } from "../../runtime/contracts.ts";

/** A small mixed retrieval result: two loan products, a customer profile and a free-text note. */
export const SAMPLE_DOCS: RetrievedDoc[] = [
  {
    id: "loan-flex-84",
    score: 0.82,
    text: "Flex personal loan with long terms for larger purchases.",
    metadata: { type: "loan_product", name: "Flex Loan", apr: 9.5, term_months: [12, 84], min_credit_score: 620, max_amount: 50000, fees: "2% origination" },
  },
  {
    id: "loan-everyday",
    score: 0.79,
    text: "Low-rate everyday personal loan.",
    metadata: { type: "loan_product", name: "Everyday Loan", apr: "6.9%", term_months: "12-60", min_credit_score: 700, max_amount: "$40,000", fees: [] },
  },
  {
    id: "cust-0042",
    score: 0.61,
    text: "Customer with a mid-range credit score and steady salary.",
    metadata: { type: "customer_profile", credit_score: 690, income: 85000, debts: 12000 },
  },
  { id: "note/refi", score: 0.4, text: "Refinancing can lower your rate once your credit score improves.", metadata: {} },
];

export const SAMPLE_QUERY = "What is the lowest rate I can get to borrow $30,000 over 5 years?";

/** Every `[x]` in the text, except markdown links `[t](u)`. */
export function citations(text: string): string[] {
  return [...text.matchAll(/\[([^\]]+)\](?!\()/g)].map((m) => m[1]);
}

export function testGenerator(name: string, make: () => Promise<Generator>, opts: { deterministic: boolean }): void {
  describe(`generator conformance: ${name}`, () => {
    it("returns non-empty advice and names the generator that produced it", async () => {
      const gen = await make();
      const out = await gen.generate({ query: SAMPLE_QUERY, docs: SAMPLE_DOCS });
      expect(out.advice.trim().length).toBeGreaterThan(20);
      expect(out.generator).toMatch(/\S/);
    });

    it("cites only ids it was given, and at least one of them", async () => {
      const gen = await make();
      const docs = SAMPLE_DOCS.slice(0, 3);
      const out = await gen.generate({ query: SAMPLE_QUERY, docs });
      const cited = citations(out.advice);
      expect(cited.length).toBeGreaterThan(0);
      const given = new Set(docs.map((d) => d.id));
      for (const c of cited) expect(given.has(c), `cited unknown id [${c}]`).toBe(true);
    });

    it("handles zero documents with an answer that cites nothing", async () => {
      const gen = await make();
      const out = await gen.generate({ query: SAMPLE_QUERY, docs: [] });
      expect(out.advice.trim().length).toBeGreaterThan(0);
      expect(citations(out.advice)).toEqual([]);
    });

    it("copes with documents whose metadata is empty or oddly shaped", async () => {
      const gen = await make();
      const odd: RetrievedDoc[] = [
        { id: "odd-1", score: 0.5, text: "", metadata: {} },
        { id: "odd-2", score: 0.4, text: "some text", metadata: { type: "loan_product", apr: "n/a", term_months: { min: 1 }, fees: null, nested: [[1]] } },
      ];
      const out = await gen.generate({ query: "anything?", docs: odd });
      expect(out.advice.trim().length).toBeGreaterThan(0);
      for (const c of citations(out.advice)) expect(["odd-1", "odd-2"]).toContain(c);
    });

    if (opts.deterministic) {
      it("is deterministic: the same input gives the same advice", async () => {
        const a = await (await make()).generate({ query: SAMPLE_QUERY, docs: SAMPLE_DOCS });
        const b = await (await make()).generate({ query: SAMPLE_QUERY, docs: structuredClone(SAMPLE_DOCS) });
        expect(b).toEqual(a);
      });
    }
  });
}
