import { describe, expect, it } from "vitest";
import { renderAdvice } from "../../plugins/generator/template.ts";
import type { RetrievedDoc } from "../../runtime/contracts.ts";
import { checkEligibility, eligibilityPredicate, extractFacts } from "../../runtime/question.ts";

describe("constraints stated in a question", () => {
  it.each([
    ["I have a 650 credit score and want to consolidate card debt", { credit_score: 650, category: "debt-consolidation" }],
    ["My score of 650, need $15,000 for 36 months", { credit_score: 650, amount: 15000, term_months: 36 }],
    ["credit score is 700 and I want 15k over 3 years under 10% APR", { credit_score: 700, amount: 15000, term_months: 36, max_apr: 10 }],
    ["FICO 720, buying a used car, 5-year loan, APR below 7.5 percent", { credit_score: 720, term_months: 60, max_apr: 7.5, category: "auto" }],
    ["Need to borrow 25,000 dollars; my credit is around 610", { credit_score: 610, amount: 25000 }],
    ["a 680+ score and a $1.5 million mortgage over thirty years", { credit_score: 680, amount: 1_500_000, term_months: 360, category: "mortgage" }],
    ["rebuild my credit after a bankruptcy", { category: "credit-builder" }],
  ])("%s", (q, want) => {
    expect(extractFacts(q)).toEqual(want);
  });

  it("leaves out what it cannot place: no facts, impossible scores, bare numbers", () => {
    expect(extractFacts("what loans are there?")).toEqual({});
    expect(extractFacts("my score is 9000")).toEqual({});
    expect(extractFacts("credit score 650,000")).toEqual({});
    expect(extractFacts("I have 3 kids, 2 dogs and 650 reasons to ask")).toEqual({});
    expect(extractFacts("rates under 200% apr")).toEqual({});
  });

  it("checks products: score, amount range, term, APR ceiling (fractions or percents), purpose", () => {
    const m = { type: "loan_product", category: "personal", min_credit_score: 660, min_amount: 2000, max_amount: 20000, term_months: 36, apr: 0.129 };
    expect(checkEligibility(m, { credit_score: 650 }).fails).toEqual(["a credit score of 650 is below its minimum of 660"]);
    expect(checkEligibility(m, { credit_score: 660, amount: 20000, term_months: 36, max_apr: 13 }).fails).toEqual([]);
    expect(checkEligibility(m, { amount: 1000 }).fails[0]).toMatch(/at least \$2,000/);
    expect(checkEligibility(m, { amount: 25000 }).fails[0]).toMatch(/at most \$20,000/);
    expect(checkEligibility(m, { term_months: 48 }).fails[0]).toMatch(/longest term is 36 months/);
    expect(checkEligibility({ ...m, apr: "12.9%" }, { max_apr: 10 }).fails[0]).toMatch(/APR of 12.9% is above your 10%/);
    expect(checkEligibility(m, { category: "auto" }).fails[0]).toMatch(/personal lending, not auto/);
    expect(eligibilityPredicate({ credit_score: 700 })({ type: "customer_profile", credit_score: 700 })).toBe(false);
  });

  it("the filter over every row (no reasons written) opens exactly the products the explained check finds no fault with", () => {
    const facts = [{ credit_score: 650 }, { amount: 1500 }, { amount: 30000, term_months: 60 }, { max_apr: 9 }, { category: "auto" }, { credit_score: 720, amount: 5000, term_months: 24, max_apr: 15, category: "personal" }];
    const products = [];
    for (const min_credit_score of [undefined, 600, 700]) {
      for (const max_amount of [undefined, 10000, "$40,000"]) {
        for (const term_months of [undefined, 36, [24, 60], "12-48"]) {
          for (const apr of [undefined, 0.089, "14.9%"]) {
            for (const category of [undefined, "auto", "personal"]) products.push({ type: "loan_product", min_credit_score, min_amount: 2000, max_amount, term_months, apr, category });
          }
        }
      }
    }
    let open = 0;
    for (const f of facts) {
      const pass = eligibilityPredicate(f);
      for (const m of products) {
        const want = checkEligibility(m, f).fails.length === 0;
        expect(pass(m), `${JSON.stringify(f)} on ${JSON.stringify(m)}`).toBe(want);
        if (want) open++;
      }
    }
    expect(open).toBeGreaterThan(0);
    expect(open).toBeLessThan(facts.length * products.length);
  });
});

describe("template answer for a question with stated constraints", () => {
  const loan = (id: string, min: number, apr: number, category = "debt-consolidation"): RetrievedDoc => ({
    id, score: 0.5, text: "", metadata: { type: "loan_product", name: `Loan ${id}`, category, apr, term_months: 60, min_credit_score: min, max_amount: 40000, min_amount: 2000 },
  });

  it("lists what is open, ranked by APR, and what is not with the reason; never calls a closed product easy", () => {
    const advice = renderAdvice("I have a 650 credit score and want to consolidate card debt", [loan("a", 660, 0.09), loan("b", 620, 0.14), loan("c", 640, 0.11), loan("d", 600, 0.1, "auto")]);
    expect(advice).toMatch(/^What you told me: credit score 650; purpose: debt consolidation\./);
    const open = advice.slice(advice.indexOf("Open to you"), advice.indexOf("Not open to you:"));
    expect(open.indexOf("[c]")).toBeGreaterThan(0);
    expect(open.indexOf("[c]")).toBeLessThan(open.indexOf("[b]"));
    expect(open).not.toContain("[a]");
    expect(advice).toMatch(/\[a\].*Not open to you: a credit score of 650 is below its minimum of 660/);
    expect(advice).toMatch(/\[d\].*Not open to you: it is auto lending/);
    expect(advice).toMatch(/Lowest APR: Loan c \[c\] at 11%/);
    expect(advice).not.toMatch(/(easiest|easy)[^\n]*\[a\]/i);
  });

  it("says when nothing is open and shows the nearest first", () => {
    const advice = renderAdvice("650 credit score, consolidate my credit card debt", [loan("far", 740, 0.08), loan("near", 660, 0.12), loan("mid", 700, 0.1)]);
    expect(advice).toMatch(/None of the products I found is open to you/);
    expect(advice.indexOf("[near]")).toBeLessThan(advice.indexOf("[mid]"));
    expect(advice.indexOf("[mid]")).toBeLessThan(advice.indexOf("[far]"));
    expect(advice).not.toMatch(/Easiest|Lowest APR/);
  });

  it("changes nothing when the question states nothing", () => {
    const docs = [loan("a", 660, 0.09), loan("b", 620, 0.14)];
    expect(renderAdvice("what loans do you have?", docs)).toBe(renderAdvice("what loans do you have?", docs, {}, {}));
    expect(renderAdvice("what loans do you have?", docs)).not.toContain("What you told me");
  });
});
