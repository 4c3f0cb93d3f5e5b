import { expect, it } from "vitest";
import template from "../../plugins/generator/template.ts";
import type { RetrievedDoc } from "../../runtime/contracts.ts";
import { silentLogger } from "../../runtime/log.ts";
import { citations, SAMPLE_DOCS, SAMPLE_QUERY, testGenerator } from "../conformance/generator.ts";

const ctx = { baseDir: "/", log: silentLogger, env: {} };
const make = async (o: Record<string, unknown> = {}) => template.create(template.options.parse(o), ctx);
const ask = async (query: string, docs: RetrievedDoc[] = SAMPLE_DOCS, o: Record<string, unknown> = {}) =>
  (await (await make(o)).generate({ query, docs })).advice;

testGenerator("template", () => make(), { deterministic: true });

it("template orders products by APR for a rate question and names the cheapest with its citation", async () => {
  const advice = await ask(SAMPLE_QUERY);
  expect(advice.indexOf("[loan-everyday]")).toBeLessThan(advice.indexOf("[loan-flex-84]"));
  expect(advice).toContain("APR 6.9%");
  expect(advice).toMatch(/Lowest APR: Everyday Loan \[loan-everyday\] at 6\.9%/);
  expect(advice).toContain("up to $40,000");
  expect(advice).toMatch(/not financial advice/);
});

it("template compares on term and credit score when the question asks about them", async () => {
  const term = await ask("Which loan has the longest term?");
  expect(term).toMatch(/Longest term: Flex Loan \[loan-flex-84\] at up to 84 months/);
  expect(term).not.toMatch(/Lowest APR/);
  const credit = await ask("Which loan can I qualify for with a credit score of 650?", SAMPLE_DOCS.filter((d) => d.metadata.type === "loan_product"));
  expect(credit).toMatch(/Easiest to qualify for: Flex Loan \[loan-flex-84\] \(minimum credit score 620\)/);
  expect(credit).toMatch(/\[loan-everyday\].*credit score of 650 is below its minimum/);
  expect(credit).toMatch(/\[loan-flex-84\].*credit score of 650 meets its minimum/);
});

it("template uses the customer profile's credit score for eligibility and summarises the profile", async () => {
  const advice = await ask("What are my options?");
  expect(advice).toMatch(/Customer profile \[cust-0042\]: credit score 690, income \$85,000, debts \$12,000/);
  expect(advice).toMatch(/\[loan-everyday\].*690 is below its minimum/);
  expect(advice).toMatch(/fit your situation, Flex Loan \[loan-flex-84\] has the lowest APR/);
});

it("template says plainly when nothing relevant was retrieved, including below min_score", async () => {
  expect(await ask("best mortgage?", [])).toMatch(/could not find any .*relevant/);
  const filtered = await ask("best mortgage?", SAMPLE_DOCS, { min_score: 0.9 });
  expect(filtered).toMatch(/could not find any .*relevant/);
  expect(citations(filtered)).toEqual([]);
  const some = await ask(SAMPLE_QUERY, SAMPLE_DOCS, { min_score: 0.8 });
  expect([...new Set(citations(some))]).toEqual(["loan-flex-84"]);
});

it("template shows free-text documents without turning their brackets into citations", async () => {
  const docs: RetrievedDoc[] = [{ id: "faq-1", score: 0.5, text: "See [section 2] for [details].", metadata: { title: "FAQ [v2]" } }];
  const advice = await ask("how do fees work?", docs);
  expect(citations(advice)).toEqual(["faq-1"]);
  expect(advice).toContain("FAQ (v2) [faq-1]: See (section 2) for (details).");
});

it("template reads rates given as fractions and strings alike, and dedupes repeated ids", async () => {
  const docs: RetrievedDoc[] = [
    { id: "a", score: 1, text: "", metadata: { type: "loan_product", name: "A", apr: 0.0725 } },
    { id: "a", score: 1, text: "", metadata: { type: "loan_product", name: "A", apr: 0.0725 } },
    { id: "b", score: 1, text: "", metadata: { type: "loan_product", name: "B", apr: "5.25 %" } },
  ];
  const advice = await ask("lowest apr?", docs);
  expect(advice).toContain("A [a]: APR 7.25%");
  expect(advice.match(/A \[a\]: /g)).toHaveLength(1);
  expect(advice).toMatch(/Lowest APR: B \[b\] at 5\.25%/);
});

it("template options reject unknown keys and apply defaults", () => {
  expect(template.options.parse({})).toMatchObject({ max_docs: 8 });
  expect(template.options.safeParse({ max_doc: 3 }).success).toBe(false);
});
