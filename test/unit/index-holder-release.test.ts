/**
 * A swapped-out version keeps its documents file open while a request still holds a lease on it, and closes it
 * (with its searcher) when the last lease is released; the serving version's stays open.
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, expect, it } from "vitest";
import flat from "../../plugins/index/flat.ts";
import fsStore from "../../plugins/store/fs.ts";
import type { IndexEngine, Searcher } from "../../runtime/contracts.ts";
import { layout } from "../../runtime/keys.ts";
import { silentLogger } from "../../runtime/log.ts";
import { sha256, type Manifest } from "../../runtime/versions.ts";
import { createIndexHolder } from "../../server/index-holder.ts";
import hashEmbedder from "../fixtures/plugins/hash-embedder.ts";

const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-holder-"));
afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));

it("closes an old version's documents and searcher when its last lease is released, not before", async () => {
  const ctx = { baseDir: tmp, log: silentLogger, env: {} };
  const store = await fsStore.create({ dir: "store" }, ctx);
  const embedder = await hashEmbedder.create(hashEmbedder.options.parse({ dims: 16 }), ctx);
  const base = (await flat.create(flat.options.parse({}), ctx)) as IndexEngine;
  const closedSearchers: string[] = [];
  const opened: string[] = [];
  const engine: IndexEngine = {
    ...base,
    async open(dir, o) {
      opened.push(path.basename(dir));
      const s = await base.open(dir, o);
      return { ...s, search: s.search.bind(s), close: async () => (closedSearchers.push(path.basename(dir)), s.close()) } as Searcher;
    },
  };
  const publish = async (texts: string[]) => {
    const vectors = await embedder.embed(texts);
    const art = await base.build(vectors, 16);
    const docBytes = new TextEncoder().encode(texts.map((t, i) => JSON.stringify({ id: `d${i}`, text: t })).join("\n") + "\n");
    const version = sha256(docBytes);
    const manifest: Manifest = { version, pipeline: "default", engine: "flat", metric: "ip", dims: 16, count: texts.length, model_id: embedder.modelId, run_id: null, created_at: new Date().toISOString(), main: art.main, files: {} };
    for (const [n, b] of Object.entries({ ...art.files, "docs.jsonl": docBytes })) {
      manifest.files[n] = { bytes: b.byteLength, sha256: sha256(b) };
      await store.put(layout.indexFile(version, n), b);
    }
    await store.put(layout.indexFile(version, "manifest.json"), new TextEncoder().encode(JSON.stringify(manifest)));
    await store.put(layout.latest, new TextEncoder().encode(JSON.stringify({ version, published_at: new Date().toISOString() })));
    return version;
  };

  const v1 = await publish(["first a", "first b"]);
  const holder = createIndexHolder({ store, cacheDir: path.join(tmp, "cache"), embedder, engine: async () => engine, log: silentLogger });
  expect(await holder.start()).toBe("store");
  const lease = holder.acquire()!;
  const old = lease.index;
  expect(old.version).toBe(v1);

  const v2 = await publish(["second a", "second b", "second c"]);
  expect(await holder.swapTo(v2, "test")).toBe("swapped");
  expect(old.docs.closed).toBe(false); // still leased: a request in flight reads its documents
  expect(JSON.parse(await old.docs.get(1)).text).toBe("first b");

  lease.release();
  expect(old.docs.closed).toBe(true);
  await expect(old.docs.get(0)).rejects.toThrow(/closed/);
  expect(closedSearchers).toEqual([v1]);
  const cur = holder.current()!;
  expect(cur.docs.closed).toBe(false);
  expect(JSON.parse(await cur.docs.get(2)).text).toBe("second c");

  // A coordinated swap's prepare whose round was aborted while it waited for its turn loads nothing.
  const v3 = await publish(["third a"]);
  const skipped = await holder.prepare(v3, "coordinated", () => true);
  expect(skipped.index).toBeUndefined();
  expect(opened).not.toContain(v3);
  const ready = await holder.prepare(v3, "coordinated", () => false);
  expect(ready.index?.version).toBe(v3);
  expect(opened).toContain(v3);
  holder.abort(ready, { code: "superseded", reason: "test" });

  await holder.close();
  expect(cur.docs.closed).toBe(true);
});

it("answers a 503 with a JSON error, not a stack, when the served documents file was truncated under it", async () => {
  const { servedApp } = await import("../helpers/served-app.ts");
  const ctx = { baseDir: tmp, log: silentLogger, env: {} };
  const embedder = await hashEmbedder.create(hashEmbedder.options.parse({ dims: 16 }), ctx);
  const docs = ["auto loan", "student loan", "mortgage"].map((text, i) => ({ id: `d${i}`, text, metadata: { kind: i % 2 ? "odd" : "even" } }));
  const app = await servedApp(docs, embedder);
  try {
    expect((await app.post("/search", { query: "loan", k: 3 })).body.hits).toHaveLength(3);
    await fsp.truncate(path.join(app.cacheDir, app.version, "docs.jsonl"), 10);
    for (const body of [{ query: "mortgage", k: 3 }, { query: "auto", k: 2, filter: { kind: "odd" } }]) {
      const r = await app.post("/search", body);
      expect(r.status).toBe(503);
      expect(r.body.error).toBe("unavailable");
      expect(JSON.stringify(r.body)).not.toMatch(/\bat .*\.ts:\d+/);
    }
  } finally {
    await app.close();
  }
});
