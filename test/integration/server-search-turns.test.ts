/**
 * The index search runs `server.overload.max_searching` at a time, and a request waits for its turn only within
 * what is left of its `max_wait_ms`: past it, a counted 503 `overloaded` (reason `queue_wait`), not a slow
 * answer. An identical request in flight is joined, not searched again. The engine is the real `flat` whose
 * searches are held until the test lets them go, so "searching" and "waiting" are states the test controls.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import flat from "../../plugins/index/flat.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { silentLogger } from "../../runtime/log.ts";
import hashEmbedder from "../fixtures/plugins/hash-embedder.ts";
import { servedApp, type ServedApp } from "../helpers/served-app.ts";
import { until } from "../helpers/server.ts";

const gates: (() => void)[] = [];
let searches = 0;
const inner = flat.create(flat.options.parse({}), { baseDir: ".", log: silentLogger, env: {} }) as IndexEngine;
const held: IndexEngine = {
  ...inner,
  async open(dir, info) {
    const s = await inner.open(dir, info);
    return {
      ...s,
      async search(q, k) {
        searches++;
        await new Promise<void>((r) => gates.push(r));
        return s.search(q, k);
      },
    };
  },
};

let served: ServedApp;
beforeAll(async () => {
  const embedder = await hashEmbedder.create(hashEmbedder.options.parse({ dims: 32 }), { baseDir: ".", log: silentLogger, env: {} });
  const docs = Array.from({ length: 20 }, (_, i) => ({ id: `d${i}`, text: `document ${i} about loans and savings` }));
  served = await servedApp(docs, embedder, { engine: held, overload: { max_active: 8, max_searching: 1, max_wait_ms: 150 } });
}, 60_000);
afterAll(async () => {
  for (const g of gates) g();
  await served?.close();
});

describe("search turns", () => {
  it("refuses a request whose turn to search does not come within its budget, and joins identical ones", async () => {
    const a = served.post("/search", { query: "mortgage rates", k: 3 });
    await until("the first search to start", () => gates.length === 1);
    const twin = served.post("/search", { query: "mortgage rates", k: 3 });
    const b = await served.post("/search", { query: "credit card fees", k: 3 });
    expect(b.status).toBe(503);
    expect(b.body).toMatchObject({ error: "overloaded" });
    expect(searches).toBe(1); // b never searched, and neither did the twin
    gates.shift()!();
    const [ra, rt] = [await a, await twin];
    expect(ra.status).toBe(200);
    expect(rt.status).toBe(200);
    expect(rt.body.hits).toEqual(ra.body.hits);
    expect(searches).toBe(1);
  });
});
