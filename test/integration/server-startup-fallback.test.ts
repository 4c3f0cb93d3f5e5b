/**
 * Start-up without the store. The pipeline stores its indexes in S3 (s3rver, test/helpers/s3.ts). A first
 * `apfa serve` loads `latest` from S3 and leaves a verified copy in server.cache_dir. With S3 stopped:
 * the next start serves that copy and /ready lists `store_unreachable` and `serving_local_cache` (and a
 * version published once S3 is back still swaps in); with the cache gone too, the server builds the index
 * synchronously from the source and /ready says `sync_build`; with `--no-sync-build` it starts but is not
 * ready.
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startS3, type TestS3 } from "../helpers/s3.ts";
import { getJson, makeDocs, openServerFixture, post, until, type Published, type ServerFixture } from "../helpers/server.ts";

let s3: TestS3;
let fx: ServerFixture;
let v1: Published;
let token: string;
let cacheDir: string;

beforeAll(async () => {
  s3 = await startS3();
  fx = await openServerFixture({
    store: { plugin: "s3", options: { endpoint: s3.endpoint, bucket: s3.bucket, retries: 1 } },
    env: s3.env,
    overrides: { server: { swap_poll_s: 1 } },
  });
  // The source a synchronous build reads: 40 documents with their own ids.
  const corpus = makeDocs(40, "corpus").map((d) => JSON.stringify({ ...d, id: `corpus-${d.id}` })).join("\n") + "\n";
  await fsp.writeFile(path.join(fx.dir, "corpus.jsonl"), corpus);
  cacheDir = path.resolve(fx.config.baseDir, fx.config.server.cache_dir);
  v1 = await fx.publish({ count: 200, tag: "in-s3" });
  token = await fx.token();
}, 60_000);
afterAll(async () => {
  await fx?.close();
  await s3?.cleanup();
});

describe("server start-up fallback", () => {
  it("loads latest from the store and keeps a local copy", async () => {
    const srv = await fx.spawn();
    try {
      const r = await getJson(srv.url, "/ready");
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ ready: true, version: v1.version, source: "store", degraded: [] });
      expect(JSON.parse(await fsp.readFile(path.join(cacheDir, "current.json"), "utf8"))).toEqual({ version: v1.version });
      expect((await fsp.stat(path.join(cacheDir, v1.version, "index.faiss"))).size).toBe(v1.manifest.files["index.faiss"].bytes);
    } finally {
      await srv.stop();
    }
  });

  it("with the store down, becomes ready from the local cache and says so; recovers when the store is back", async () => {
    await s3.stop();
    const srv = await fx.spawn();
    try {
      const line = srv.logs.find((l) => l.msg === "server ready")!;
      expect(line).toMatchObject({ index_version: v1.version, index_source: "local-cache" });
      expect(srv.logs.some((l) => l.msg === "store unreachable at start-up")).toBe(true);
      const r = await getJson(srv.url, "/ready");
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ ready: true, version: v1.version, source: "local-cache" });
      expect(r.json.degraded).toEqual(expect.arrayContaining(["store_unreachable", "serving_local_cache"]));
      const s = await post(srv.url, "/search", { query: "mortgage refinance", k: 3 }, { token });
      expect(s.status).toBe(200);
      expect(s.json.index_version).toBe(v1.version);
      expect(s.json.hits[0].id).toMatch(/^doc-/);

      // The store comes back: the periodic check clears store_unreachable, and a new version swaps in from it.
      await s3.restart();
      await until("store_unreachable to clear", async () => !(await getJson(srv.url, "/ready")).json.degraded.includes("store_unreachable"), 20_000);
      const v2 = await fx.publish({ count: 200, tag: "after-outage" });
      await until("v2 to serve", async () => (await getJson(srv.url, "/ready")).json.version === v2.version, 20_000);
      expect((await getJson(srv.url, "/ready")).json).toMatchObject({ source: "store", degraded: [] });
    } finally {
      await srv.stop();
    }
  }, 90_000);

  it("with the store down and no local cache, builds from the source synchronously and says sync_build", async () => {
    await s3.stop();
    await fsp.rm(cacheDir, { recursive: true, force: true });
    const srv = await fx.spawn();
    try {
      const r = await getJson(srv.url, "/ready");
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ ready: true, source: "sync-build", count: 40 });
      expect(r.json.degraded).toEqual(expect.arrayContaining(["sync_build", "store_unreachable"]));
      expect(srv.logs.some((l) => l.msg === "store down and no local cache; building the index synchronously from the source")).toBe(true);
      const s = await post(srv.url, "/search", { query: "student loan offer", k: 3 }, { token });
      expect(s.status).toBe(200);
      expect(s.json.index_version).toBe(r.json.version);
      expect(s.json.hits.map((h: { id: string }) => h.id)).toEqual(expect.arrayContaining([expect.stringMatching(/^corpus-doc-/)]));
    } finally {
      await srv.stop();
    }
  }, 90_000);

  it("with --no-sync-build, the store down and no cache, starts but answers 503 until an index exists", async () => {
    await fsp.rm(cacheDir, { recursive: true, force: true });
    const srv = await fx.spawn({ args: ["--no-sync-build"] });
    try {
      const r = await getJson(srv.url, "/ready");
      expect(r.status).toBe(503);
      expect(r.json).toMatchObject({ ready: false, degraded: ["store_unreachable"] });
      const s = await post(srv.url, "/search", { query: "loan", k: 3 }, { token });
      expect(s.status).toBe(503);
      expect(s.json.error).toBeDefined();
      // Once the store is reachable, the periodic check loads latest without a restart.
      await s3.restart();
      await until("an index from the store", async () => (await getJson(srv.url, "/ready")).status === 200, 20_000);
    } finally {
      await srv.stop();
    }
  }, 90_000);
});
