/**
 * A swapped-out version keeps its documents file open while a request still holds a lease on it, and closes it
 * (with its searcher) when the last lease is released; the serving version's stays open. Holders sharing a cache
 * directory (`apfa serve --processes N`) fetch a version once between them.
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, expect, it } from "vitest";
import flat from "../../plugins/index/flat.ts";
import fsStore from "../../plugins/store/fs.ts";
import type { Embedder, IndexEngine, Searcher, Store } from "../../runtime/contracts.ts";
import { layout } from "../../runtime/keys.ts";
import { silentLogger } from "../../runtime/log.ts";
import { sha256, type Manifest } from "../../runtime/versions.ts";
import { createIndexHolder, FETCH_LOCK } from "../../server/index-holder.ts";
import hashEmbedder from "../fixtures/plugins/hash-embedder.ts";

const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-holder-"));
afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));

/** Publishes `texts` as a flat version into `store` (files, manifest, latest pointer); returns its version. */
const publisher = (store: Store, embedder: Embedder, engine: IndexEngine) => async (texts: string[]) => {
  const vectors = await embedder.embed(texts);
  const art = await engine.build(vectors, 16);
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
  const publish = publisher(store, embedder, base);

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

it("fetches a version once for every holder sharing the cache directory, and takes over a lock its process left", async () => {
  const ctx = { baseDir: tmp, log: silentLogger, env: {} };
  const inner = await fsStore.create({ dir: "store-shared" }, ctx);
  const reads: string[] = [];
  // Counts what is read from the store: each of a version's files once however many holders swap to it.
  const store: Store = {
    ...inner,
    getStream: (key) => (reads.push(key), inner.getStream(key)),
    ...(inner.copyToFile ? { copyToFile: (key: string, dest: string) => (reads.push(key), inner.copyToFile!(key, dest)) } : {}),
  };
  const embedder = await hashEmbedder.create(hashEmbedder.options.parse({ dims: 16 }), ctx);
  const engine = (await flat.create(flat.options.parse({}), ctx)) as IndexEngine;
  const publish = publisher(inner, embedder, engine);
  const cacheDir = path.join(tmp, "cache-shared");
  const holders = [0, 1, 2].map(() => createIndexHolder({ store, cacheDir, embedder, engine: async () => engine, log: silentLogger }));
  const v1 = await publish(["one a", "one b"]);
  await holders[0].start();
  await Promise.all(holders.slice(1).map((h) => h.start()));
  const files = (v: string) => reads.filter((k) => k.includes(v) && !k.endsWith("manifest.json"));
  expect(files(v1)).toHaveLength(2); // index.faiss and docs.jsonl, once

  const v2 = await publish(["two a", "two b", "two c"]);
  const prepared = await Promise.all(holders.map((h) => h.prepare(v2, "coordinated", () => false)));
  expect(files(v2)).toHaveLength(2);
  for (const [i, h] of holders.entries()) {
    expect(prepared[i].index?.version).toBe(v2);
    h.commit(prepared[i]);
    expect(h.current()?.version).toBe(v2);
  }
  expect(await fsp.readdir(path.join(cacheDir, v2))).not.toContain(FETCH_LOCK);

  // A lock left by a process that died mid-fetch does not hold the next swap.
  const v3 = await publish(["three a"]);
  const { spawnSync } = await import("node:child_process");
  const dead = spawnSync(process.execPath, ["-e", "0"]).pid!;
  await fsp.mkdir(path.join(cacheDir, v3), { recursive: true });
  await fsp.writeFile(path.join(cacheDir, v3, FETCH_LOCK), String(dead));
  expect(await holders[0].swapTo(v3, "test")).toBe("swapped");
  expect(files(v3)).toHaveLength(2);
  for (const h of holders) await h.close();
});
