import { expect, it } from "vitest";
import { normalizeRows } from "../../plugins/embedder/_vectors.ts";
import useLite, { _calls, _models } from "../../plugins/embedder/use-lite.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { cosine, sampleTexts, testEmbedder } from "../conformance/embedder.ts";

const ctx = { baseDir: "/", log: silentLogger, env: {} };
const make = async (opts: Record<string, unknown> = {}) => useLite.create(useLite.options.parse(opts), ctx);

testEmbedder("use-lite", () => make());

it("use-lite is 512-d with a versioned modelId", async () => {
  const e = await make();
  expect(e.dims).toBe(512);
  expect(e.modelId).toMatch(/^use-lite-en@\d+\.\d+\.\d+$/);
  expect(e.maxChars).toBe(2048);
});

it("use-lite places a loan text closer to another loan text than to a cooking text", async () => {
  const e = await make();
  const v = await e.embed([
    "What interest rate will I pay on a 30-year mortgage loan?",
    "How do I qualify for a home loan with a low APR?",
    "Simmer the tomato sauce with garlic and basil for twenty minutes.",
  ]);
  const loanLoan = cosine(v, 0, v, 1, 512);
  const loanCooking = cosine(v, 0, v, 2, 512);
  expect(loanLoan).toBeGreaterThan(loanCooking + 0.1);
});

it("use-lite loads the model once per process, however often it is created", async () => {
  const a = await make({ batch_size: 4 });
  const b = await make({ batch_size: 64 });
  expect(_models.size).toBe(1);
  const loaded = [..._models.values()][0];
  await make();
  expect(_models.size).toBe(1);
  expect([..._models.values()][0]).toBe(loaded); // the same model object: nothing was loaded again
  expect((await a.embed(["same text"]))).toEqual(await b.embed(["same text"]));
});

it("use-lite answers a query before the bulk batches queued ahead of it", async () => {
  const e = await make({ batch_size: 8 });
  let bulkDone = false;
  const bulk = e.embed(sampleTexts(48)).then(() => (bulkDone = true));
  const query = await e.embed(["best rate for a car loan?"]);
  expect(query.length).toBe(512);
  expect(bulkDone).toBe(false);
  await bulk;
});

it("use-lite embeds the queries that wait together in one model call, each as it would be alone", async () => {
  const e = await make({ batch_size: 16 });
  const queries = Array.from({ length: 8 }, (_, i) => `query ${i}: what is the best rate for a ${["car", "home", "student", "personal"][i % 4]} loan?`);
  const alone = [];
  for (const q of queries) alone.push(await e.embed([q]));
  const before = _calls.count;
  const bulk = e.embed(sampleTexts(16)); // holds the model while the queries arrive
  const together = await Promise.all(queries.map((q) => e.embed([q])));
  await bulk;
  expect(_calls.count - before).toBe(2); // the bulk batch, then all 8 queries (9 calls one by one)
  for (let i = 0; i < queries.length; i++) expect(cosine(together[i], 0, alone[i], 0, 512), queries[i]).toBeGreaterThan(0.9999);
});

it("use-lite rejects unknown options with the allowed keys", () => {
  const r = useLite.options.safeParse({ batchsize: 8 });
  expect(r.success).toBe(false);
  expect(JSON.stringify(r.error?.issues)).toMatch(/batchsize/);
});

it("normalizeRows refuses an all-zero row instead of producing NaN", () => {
  const v = new Float32Array([3, 4, 0, 0]);
  const err = (() => {
    try {
      normalizeRows(v, 2);
    } catch (e) {
      return e;
    }
  })();
  expect(isApfaError(err, "embedder")).toBe(true);
  expect(Array.from(v.slice(0, 2))).toEqual([0.6000000238418579, 0.800000011920929]);
});

it("use-lite with threads: 2 runs worker threads and matches the in-process model", async () => {
  const texts = ["a loan for a house", "pasta recipe", "credit card interest"];
  const one = await (await make()).embed(texts);
  const two = await (await make({ threads: 2 })).embed(texts);
  for (let i = 0; i < texts.length; i++) expect(cosine(one, i, two, i, 512)).toBeGreaterThan(0.9999);
  expect(_models.size).toBe(2);
});
