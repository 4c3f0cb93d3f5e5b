/**
 * Embedder conformance suite. Any embedder plugin, built-in or a user's, passes it:
 * `testEmbedder("openai", async () => openai.create(opts, ctx))`.
 * @module
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Embedder } from "../../runtime/contracts.ts";

/** Short realistic texts of varied length, for batches and benchmarks. */
export function sampleTexts(n: number): string[] {
  const subjects = ["A fixed-rate mortgage", "This personal loan", "The student loan", "A credit card balance transfer",
    "Our home equity line", "The auto loan", "A small business loan", "This savings account"];
  const details = ["has a 4.1% APR over 30 years", "needs a credit score above 680", "can be repaid early without fees",
    "offers a 12-month introductory rate", "is secured by the vehicle", "pays 3.2% interest compounded monthly",
    "requires two years of tax returns", "caps the loan amount at $50,000"];
  const tails = ["", " for first-time buyers", " and closes in about three weeks", " when income is verified online"];
  return Array.from({ length: n }, (_, i) =>
    `${subjects[i % subjects.length]} ${details[(i * 3 + 1) % details.length]}${tails[i % tails.length]} (ref ${i}).`);
}

function rowNorms(v: Float32Array, dims: number): number[] {
  const norms: number[] = [];
  for (let r = 0; r < v.length / dims; r++) {
    let s = 0;
    for (let i = r * dims; i < (r + 1) * dims; i++) s += v[i] * v[i];
    norms.push(Math.sqrt(s));
  }
  return norms;
}

/** Dot product of row `a` of `x` with row `b` of `y` (cosine, for unit rows). */
export function cosine(x: Float32Array, a: number, y: Float32Array, b: number, dims: number): number {
  let s = 0;
  for (let i = 0; i < dims; i++) s += x[a * dims + i] * y[b * dims + i];
  return s;
}

export function testEmbedder(name: string, make: () => Promise<Embedder>, cleanup?: () => Promise<void>): void {
  describe(`embedder conformance: ${name}`, () => {
    let emb: Embedder;
    beforeAll(async () => {
      emb = await make();
    });
    afterAll(async () => {
      await emb?.close?.();
      await cleanup?.();
    });

    const expectUnitRows = (v: Float32Array, n: number) => {
      expect(v).toBeInstanceOf(Float32Array);
      expect(v.length).toBe(n * emb.dims);
      for (const x of v) expect(Number.isFinite(x)).toBe(true);
      for (const norm of rowNorms(v, emb.dims)) expect(Math.abs(norm - 1)).toBeLessThan(1e-3);
    };

    it("declares modelId, dims and maxChars", () => {
      expect(typeof emb.modelId).toBe("string");
      expect(emb.modelId.length).toBeGreaterThan(0);
      expect(Number.isInteger(emb.dims) && emb.dims > 0).toBe(true);
      expect(Number.isInteger(emb.maxChars) && emb.maxChars > 0).toBe(true);
    });

    it("returns an empty array for no texts", async () => {
      const v = await emb.embed([]);
      expect(v).toBeInstanceOf(Float32Array);
      expect(v.length).toBe(0);
    });

    it("embeds a batch of 1 into one unit row", async () => {
      expectUnitRows(await emb.embed(["How much can I borrow for a house?"]), 1);
    });

    it("embeds a batch of 64 into distinct unit rows, in input order", async () => {
      const texts = sampleTexts(64);
      const v = await emb.embed(texts);
      expectUnitRows(v, 64);
      expect(cosine(v, 0, v, 1, emb.dims)).toBeLessThan(0.99999);
      // Row i must be text i: embedding one text alone gives (nearly) the same row as inside the batch.
      for (const i of [0, 37, 63]) {
        const one = await emb.embed([texts[i]]);
        expect(cosine(v, i, one, 0, emb.dims)).toBeGreaterThan(0.999);
      }
    });

    it("is deterministic for the same input", async () => {
      const texts = sampleTexts(8);
      const a = await emb.embed(texts);
      const b = await emb.embed(texts);
      for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(1e-5);
    });

    it("embeds unicode, emoji and empty-ish text", async () => {
      const texts = ["Crédit immobilier à taux zéro", "住宅ローンの金利はいくらですか", "قرض شخصي بفائدة منخفضة", "💸 loan 🏠", " ", "a"];
      expectUnitRows(await emb.embed(texts), texts.length);
    });
  });
}
