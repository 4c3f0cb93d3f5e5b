/**
 * A swap does not empty the answer cache for the questions traffic asks most: before a new version serves, the
 * server answers the `server.cache.warm_on_swap` most asked recent questions on it and caches them (keyed by the
 * new version, so no answer of the old version is ever served for it). The positive signals: the first request
 * after the swap is answered from the cache by the new version, and `apfa_cache_warmed_total` counts the warm-up.
 */
import { afterEach, describe, expect, it } from "vitest";
import flat from "../../plugins/index/flat.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { silentLogger } from "../../runtime/log.ts";
import hashEmbedder from "../fixtures/plugins/hash-embedder.ts";
import { servedApp, type ServedApp, type ServedDoc } from "../helpers/served-app.ts";

const docs = (tag: string): ServedDoc[] => Array.from({ length: 30 }, (_, i) => ({ id: `${tag}${i}`, text: `${tag} document ${i} about loans, savings and mortgages` }));
const embedder = await hashEmbedder.create(hashEmbedder.options.parse({ dims: 32 }), { baseDir: ".", log: silentLogger, env: {} });

/** The counter's value for `outcome`, 0 before it is first counted. */
async function warmed(s: ServedApp, outcome: "answered" | "skipped"): Promise<number> {
  const m = await s.metrics.registry.getSingleMetric("apfa_cache_warmed_total")!.get();
  return m.values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
}

let served: ServedApp | undefined;
afterEach(async () => {
  await served?.close();
  served = undefined;
});

describe("warm_on_swap", () => {
  it("answers the most asked questions on the new version before it serves, and caches them under it", async () => {
    served = await servedApp(docs("a"), embedder, { cache: { warm_on_swap: 2 } });
    const ask = (route: string, query: string, k = 3) => served!.post(route, { query, k });
    for (let i = 0; i < 3; i++) await ask("/search", "best mortgage rate");
    for (let i = 0; i < 2; i++) await ask("/generate-advice", "should I pay off my loan early");
    await ask("/search", "asked only once");
    expect((await ask("/search", "best mortgage rate")).body.cached).toBe(true);

    const v2 = await served.publish(docs("b"));
    expect(await warmed(served, "answered")).toBe(2);
    expect(await warmed(served, "skipped")).toBe(0);
    const search = await ask("/search", "best mortgage rate");
    expect(search.body).toMatchObject({ index_version: v2, cached: true });
    expect(search.body.hits[0].id).toMatch(/^b/); // the new version's documents, not a carried-over answer
    const advice = await ask("/generate-advice", "should I pay off my loan early");
    expect(advice.body).toMatchObject({ index_version: v2, cached: true });
    expect(advice.body.sources[0].id).toMatch(/^b/);
    // Past the two most asked: left for traffic. Same question with another k: another cache entry.
    expect((await ask("/search", "asked only once")).body).toMatchObject({ index_version: v2, cached: false });
    expect((await ask("/search", "best mortgage rate", 4)).body.cached).toBe(false);
  });

  it("under --processes N each process warms its share of the questions, and together they warm all", async () => {
    const questions = Array.from({ length: 8 }, (_, i) => `question number ${i} about refinancing`);
    const answered: number[] = [];
    const warmedHere: boolean[][] = [];
    for (const index of [0, 1]) {
      served = await servedApp(docs("a"), embedder, { cache: { warm_on_swap: 8 }, warmShare: { index, of: 2 } });
      for (const query of questions) await served.post("/search", { query, k: 3 });
      await served.publish(docs("b"));
      answered.push(await warmed(served, "answered"));
      warmedHere.push(await Promise.all(questions.map(async (query) => (await served!.post("/search", { query, k: 3 })).body.cached as boolean)));
      await served.close();
      served = undefined;
    }
    expect(answered[0] + answered[1]).toBe(questions.length);
    expect(answered[0]).toBeGreaterThan(0);
    expect(answered[1]).toBeGreaterThan(0);
    // Each question was warmed by exactly one of the two.
    expect(questions.map((_, i) => Number(warmedHere[0][i]) + Number(warmedHere[1][i]))).toEqual(questions.map(() => 1));
  });

  it("does not warm a version another swap is already queued behind: only the last is warmed", async () => {
    served = await servedApp(docs("a"), embedder, { cache: { warm_on_swap: 4 } });
    for (const query of ["one", "two"]) await served.post("/search", { query, k: 3 });
    const [v2, v3] = [await served.stage(docs("b")), await served.stage(docs("c"))];
    expect(await Promise.all([served.swapTo(v2), served.swapTo(v3)])).toEqual(["swapped", "swapped"]);
    expect(await warmed(served, "answered")).toBe(2); // v3's two questions; v2, replaced at once, was not warmed
    expect((await served.post("/search", { query: "one", k: 3 })).body).toMatchObject({ index_version: v3, cached: true });
  });

  it("is off with warm_on_swap 0: the new version starts with an empty cache", async () => {
    served = await servedApp(docs("a"), embedder, { cache: { warm_on_swap: 0 } });
    for (let i = 0; i < 3; i++) await served.post("/search", { query: "best mortgage rate", k: 3 });
    const v2 = await served.publish(docs("b"));
    expect((await served.post("/search", { query: "best mortgage rate", k: 3 })).body).toMatchObject({ index_version: v2, cached: false });
    expect(await warmed(served, "answered")).toBe(0);
  });

  it("carries a question's filter and mode to the new version", async () => {
    const tagged = (tag: string) => docs(tag).map((d, i) => ({ ...d, metadata: { region: i % 2 ? "north" : "south" } }));
    served = await servedApp(tagged("a"), embedder, { cache: { warm_on_swap: 8 } });
    const q = { query: "savings", k: 5, filter: { region: "north" } };
    await served.post("/search", q);
    await served.post("/search", { ...q, filter: undefined });
    const v2 = await served.publish(tagged("b"));
    expect(await warmed(served, "answered")).toBe(2);
    const filtered = await served.post("/search", q);
    expect(filtered.body).toMatchObject({ index_version: v2, cached: true });
    expect(filtered.body.hits.map((h: { metadata: { region: string } }) => h.metadata.region)).toEqual(Array(5).fill("north"));
    expect((await served.post("/search", { ...q, filter: undefined })).body.hits.map((h: { metadata: { region: string } }) => h.metadata.region)).toContain("south");
  });

  it("warms while requests hold every search turn: the new version's searcher serves nobody yet", async () => {
    const gates: (() => void)[] = [];
    let opened = 0;
    let holdFirst = false;
    const inner = flat.create(flat.options.parse({}), { baseDir: ".", log: silentLogger, env: {} }) as IndexEngine;
    // The first version's searches wait while holdFirst is on; the new version's answer at once.
    const held: IndexEngine = {
      ...inner,
      async open(dir, info) {
        const s = await inner.open(dir, info);
        const first = ++opened === 1;
        return { ...s, search: async (query, k) => (first && holdFirst && (await new Promise<void>((r) => gates.push(r))), s.search(query, k)) };
      },
    };
    served = await servedApp(docs("a"), embedder, { engine: held, cache: { warm_on_swap: 3, warm_budget_ms: 5_000 }, overload: { max_searching: 1 } });
    for (const query of ["one", "two", "three"]) await served.post("/search", { query, k: 3 });
    holdFirst = true;
    // A request now holds the only search turn, and waits.
    const waiting = served.post("/search", { query: "four", k: 3 });
    while (gates.length === 0) await new Promise((r) => setTimeout(r, 5));
    const v2 = await served.publish(docs("b"));
    expect(await warmed(served, "answered")).toBe(3);
    expect(await warmed(served, "skipped")).toBe(0);
    for (const go of gates.splice(0)) go();
    expect((await waiting).status).toBe(200);
    expect((await served.post("/search", { query: "one", k: 3 })).body).toMatchObject({ index_version: v2, cached: true });
  });

  it("stops at warm_budget_ms: the swap goes on, and the questions not answered by then are counted as skipped", async () => {
    let hold = false;
    const gates: (() => void)[] = [];
    const inner = flat.create(flat.options.parse({}), { baseDir: ".", log: silentLogger, env: {} }) as IndexEngine;
    const held: IndexEngine = {
      ...inner,
      async open(dir, info) {
        const s = await inner.open(dir, info);
        return { ...s, search: async (query, k) => (hold && (await new Promise<void>((r) => gates.push(r))), s.search(query, k)) };
      },
    };
    served = await servedApp(docs("a"), embedder, { engine: held, cache: { warm_on_swap: 3, warm_budget_ms: 200 }, overload: { max_searching: 1 } });
    for (const query of ["one", "two", "three"]) await served.post("/search", { query, k: 3 });
    hold = true; // every search from here on waits: the warm-up's first never comes back within the budget
    const v2 = await served.publish(docs("b"));
    expect(await warmed(served, "skipped")).toBe(3);
    expect(await warmed(served, "answered")).toBe(0);
    hold = false;
    for (const go of gates.splice(0)) go();
    expect((await served.post("/search", { query: "four", k: 3 })).body).toMatchObject({ index_version: v2, cached: false });
  });
});
