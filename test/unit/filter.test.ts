import fc from "fast-check";
import { describe, expect, it } from "vitest";
import flat from "../../plugins/index/flat.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { compileFilter, FilterError, filterKey } from "../../runtime/filter.ts";
import { filteredSearch, rowFilter } from "../../runtime/filtered-search.ts";
import { silentLogger } from "../../runtime/log.ts";
import { bruteForce, randomUnitVectors, writeArtifact } from "../conformance/index.ts";

const loan = { type: "loan_product", category: "debt-consolidation", min_credit_score: 640, apr: 0.12, features: ["autopay discount", "no fee"], fees: { origination_pct: 0.02 } };
const cust = { type: "customer_profile", credit_score: 700, goals: ["buy a home"] };
const passes = (f: unknown, m: Record<string, unknown>) => compileFilter(f)(m);
const problem = (f: unknown) => {
  try {
    compileFilter(f);
  } catch (err) {
    expect(err).toBeInstanceOf(FilterError);
    return (err as FilterError).path;
  }
  throw new Error("expected a FilterError");
};

describe("passing-row sets", () => {
  it("answers membership for every row, at word edges and outside the range", () => {
    const count = 1000;
    const rows = Uint32Array.from([0, 1, 31, 32, 33, 63, 64, 500, 998, 999]);
    const rf = rowFilter(rows, count);
    const member = new Set(rows);
    for (let r = 0; r < count; r++) expect(rf.has(r), `row ${r}`).toBe(member.has(r));
    for (const r of [-1, count, count + 31, 2 ** 32]) expect(rf.has(r), `row ${r}`).toBe(false);
  });
});

describe("metadata filter grammar", () => {
  it("equality, ranges, membership and nested paths", () => {
    expect(passes({ type: "loan_product", min_credit_score: { lte: 650 } }, loan)).toBe(true);
    expect(passes({ type: "loan_product", min_credit_score: { lte: 630 } }, loan)).toBe(false);
    expect(passes({ min_credit_score: { gt: 600, lt: 641 } }, loan)).toBe(true);
    expect(passes({ min_credit_score: { gte: 641 } }, loan)).toBe(false);
    expect(passes({ category: { in: ["auto", "debt-consolidation"] } }, loan)).toBe(true);
    expect(passes({ category: { nin: ["auto", "debt-consolidation"] } }, loan)).toBe(false);
    expect(passes({ "fees.origination_pct": { lt: 0.03 } }, loan)).toBe(true);
    expect(passes({ features: "no fee" }, loan)).toBe(true); // an array field: any element
    expect(passes({ type: { ne: "loan_product" } }, cust)).toBe(true);
  });

  it("and, or, not; a missing field fails ranges and passes ne/nin", () => {
    const f = { or: [{ type: "customer_profile", credit_score: { gte: 650 } }, { and: [{ type: "loan_product" }, { not: { apr: { gt: 0.2 } } }] }] };
    expect(passes(f, loan)).toBe(true);
    expect(passes(f, cust)).toBe(true);
    expect(passes(f, { type: "customer_profile", credit_score: 600 })).toBe(false);
    expect(passes({ min_credit_score: { lte: 900 } }, cust)).toBe(false);
    expect(passes({ min_credit_score: { ne: 5 }, apr: { nin: [1] } }, cust)).toBe(true);
    expect(passes({ apr: { exists: false } }, cust)).toBe(true);
    expect(passes({ apr: null }, cust)).toBe(true);
    expect(passes({ min_credit_score: { lte: "700" } }, loan)).toBe(false); // a string never compares with a number
  });

  it("names the path of the first problem", () => {
    expect(problem("x")).toBe("filter");
    expect(problem({})).toBe("filter");
    expect(problem({ min_credit_score: { lte: "x", between: 1 } })).toBe("filter.min_credit_score.between");
    expect(problem({ min_credit_score: { lte: true } })).toBe("filter.min_credit_score.lte");
    expect(problem({ category: { in: "auto" } })).toBe("filter.category.in");
    expect(problem({ category: { in: ["a", { x: 1 }] } })).toBe("filter.category.in.1");
    expect(problem({ or: [] })).toBe("filter.or");
    expect(problem({ and: [{ a: 1 }, { b: [1] }] })).toBe("filter.and.1.b");
    expect(problem({ "bad path!": 1 })).toBe("filter.bad path!");
    expect(problem({ "a.__proto__": 1 })).toBe("filter.a.__proto__");
    expect(problem({ apr: { exists: "yes" } })).toBe("filter.apr.exists");
    let deep: Record<string, unknown> = { a: 1 };
    for (let i = 0; i < 12; i++) deep = { not: deep };
    expect(problem(deep)).toMatch(/^filter(\.not)+$/);
  });

  it("equal filters get equal cache keys whatever the key order", () => {
    expect(filterKey({ b: 1, a: { lte: 2, gt: 1 } })).toBe(filterKey({ a: { gt: 1, lte: 2 }, b: 1 }));
  });
});

describe("flat filtered search equals brute force over the passing documents", () => {
  const dims = 16;
  const count = 300;
  const vectors = randomUnitVectors(count, dims, 5);
  const scores = Array.from({ length: count }, (_, i) => 300 + ((i * 37) % 550));
  const engine = flat.create(flat.options.parse({}), { baseDir: "/", log: silentLogger, env: {} }) as IndexEngine;

  it("for random filters, queries and k", async () => {
    const dir = await writeArtifact(await engine.build(vectors, dims));
    const searcher = await engine.open(dir, { dims, count });
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 300, max: 850 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 0, max: 1000 }), async (max, k, seed) => {
        const pred = compileFilter({ min_credit_score: { lte: max } });
        const passing = Uint32Array.from({ length: count }, (_, i) => i).filter((i) => pred({ min_credit_score: scores[i] }));
        const query = randomUnitVectors(1, dims, seed + 11);
        const all = bruteForce(vectors, dims, query, 0).all;
        const ref = [...passing].sort((a, b) => all[b] - all[a]).slice(0, k);
        const r = await filteredSearch(searcher, query, k, rowFilter(passing, count));
        expect(r.rows).toEqual(ref);
      }),
      { numRuns: 150 },
    );
    await searcher.close();
  });
});
