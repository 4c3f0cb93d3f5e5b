import { expect, it } from "vitest";
import { buildLexical, fuseRanks, loadLexical, tokenize, tokenizeQuery } from "../../runtime/lexical.ts";

const docs = [
  { id: "loan-0001", text: "Borrow up to $15,000 with the Clear Personal Loan from Northwind Bank.", metadata: { name: "Clear Personal Loan", lender: "Northwind Bank" } },
  { id: "loan-0002", text: "A 30-year fixed mortgage at 6.25% APR.", metadata: { name: "Anchor 30-Year Fixed Mortgage", lender: "Keystone Trust" } },
  { id: "loan-0003", text: "Auto loans from $5,000; terms to 84 months.", metadata: { name: "Flex Auto Loan", lender: "Northwind Bank" } },
  ...Array.from({ length: 40 }, (_, i) => ({ id: `cust-${String(i).padStart(4, "0")}`, text: `Customer ${i} wants a loan with a low rate.`, metadata: {} })),
];
const lex = loadLexical(new TextDecoder().decode(buildLexical(new TextEncoder().encode(docs.map((d) => JSON.stringify(d)).join("\n") + "\n"))));
const ids = (rows: number[]) => rows.map((r) => docs[r].id);

it("tokenizes ids whole and in parts, and numbers without thousands commas", () => {
  expect(tokenize("loan-0042 costs $15,000 at 6.99%")).toEqual(["loan-0042", "loan", "0042", "costs", "15000", "at", "6.99", "6", "99"]);
  expect(tokenizeQuery("loan-0042 for $15,000")).toEqual(["loan-0042", "for", "15000"]);
});

it("finds documents by exact id, name, lender and number", () => {
  expect(ids(lex.search("loan-0003", 1))).toEqual(["loan-0003"]);
  expect(ids(lex.search("Anchor 30-Year Fixed Mortgage", 1))).toEqual(["loan-0002"]);
  expect(ids(lex.search("15k", 1))).toEqual(["loan-0001"]);
  expect(new Set(ids(lex.search("Northwind", 5)))).toEqual(new Set(["loan-0001", "loan-0003"]));
  expect(lex.search("Northwind", 5, (row) => row !== 0).map((r) => docs[r].id)).toEqual(["loan-0003"]);
  expect(lex.search("zzz unknown", 5)).toEqual([]);
});

it("with a weak model, fusion still puts the exact id first", () => {
  // A model that ranks the wanted document last: the lexical side alone must carry it.
  const vector = Array.from({ length: docs.length }, (_, i) => docs.length - 1 - i).filter((r) => r !== 2).concat([2]);
  const fused = fuseRanks([lex.search("loan-0003", 50), vector.slice(0, 50)], 3);
  expect(docs[fused[0].row].id).toBe("loan-0003");
});

it("reciprocal-rank fusion: consensus first, ties to the better single rank and the earlier list", () => {
  expect(fuseRanks([[1, 2], [2, 3]], 3).map((x) => x.row)).toEqual([2, 1, 3]);
  expect(fuseRanks([[7], [8]], 2).map((x) => x.row)).toEqual([7, 8]);
  expect(fuseRanks([[5, 6], [6, 5]], 1)[0].score).toBeCloseTo(1 / 61 + 1 / 62, 10);
});

it("reads docs.jsonl line by line, so the last line needs no newline", () => {
  const bytes = new TextEncoder().encode(docs.slice(0, 3).map((d) => JSON.stringify(d)).join("\n"));
  const small = loadLexical(new TextDecoder().decode(buildLexical(bytes)));
  expect(small.search("loan-0003", 1)).toEqual([2]);
});
