/**
 * Runs the bad-HTTP-request corpus against the real app (h3, auth, cache, a real flat index): each request gets
 * its 4xx and JSON error, never a 5xx, and the server keeps answering good requests afterwards.
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import flat from "../../plugins/index/flat.ts";
import fsStore from "../../plugins/store/fs.ts";
import template from "../../plugins/generator/template.ts";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import { loadConfig } from "../../runtime/config/load.ts";
import { silentLogger } from "../../runtime/log.ts";
import { layout } from "../../runtime/keys.ts";
import { sha256, type Manifest } from "../../runtime/versions.ts";
import { createApp } from "../../server/app.ts";
import { makeVerifier } from "../../server/auth.ts";
import { createCache } from "../../server/cache.ts";
import { createIndexHolder } from "../../server/index-holder.ts";
import { createServerMetrics } from "../../server/metrics.ts";
import hashEmbedder from "../fixtures/plugins/hash-embedder.ts";
import { httpCases } from "./http-cases.ts";

const SECRET = "test-secret-that-is-long-enough-0123456789";
let app: ReturnType<typeof createApp>;
let tmp: string;
let token: string;
let expired: string;

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-badhttp-"));
  const { config } = await loadConfig(undefined, { checkPlugins: false, env: {} });
  const cfg = { ...(config as PipelineConfig), baseDir: tmp };
  const ctx = { baseDir: tmp, log: silentLogger, env: {} };
  const store = await fsStore.create({ dir: "store" }, ctx);
  const embedder = await hashEmbedder.create(hashEmbedder.options.parse({ dims: 32 }), ctx);
  const docs = ["low rate auto loan", "credit builder loan", "mortgage 30 year fixed"].map((t, i) => ({ id: `d${i}`, text: t, metadata: { type: "loan_product" } }));
  const vectors = await embedder.embed(docs.map((d) => d.text));
  const engine = await flat.create(flat.options.parse({}), ctx);
  const art = await engine.build(vectors, 32);
  const docBytes = new TextEncoder().encode(docs.map((d) => JSON.stringify(d)).join("\n") + "\n");
  const version = sha256(art.files[art.main]);
  const manifest: Manifest = { version, pipeline: "default", engine: "flat", metric: "ip", dims: 32, count: 3, model_id: embedder.modelId, run_id: null, created_at: new Date().toISOString(), main: art.main, files: {} };
  for (const [n, b] of Object.entries({ ...art.files, "docs.jsonl": docBytes })) {
    manifest.files[n] = { bytes: b.byteLength, sha256: sha256(b) };
    await store.put(layout.indexFile(version, n), b);
  }
  await store.put(layout.indexFile(version, "manifest.json"), new TextEncoder().encode(JSON.stringify(manifest)));
  await store.put(layout.latest, new TextEncoder().encode(JSON.stringify({ version, published_at: new Date().toISOString() })));
  const metrics = createServerMetrics();
  const holder = createIndexHolder({ store, cacheDir: path.join(tmp, "cache"), embedder, engine: async () => engine, log: silentLogger, metrics });
  expect(await holder.start()).toBe("store");
  const verifier = makeVerifier({ jwt_secret: SECRET });
  app = createApp({
    config: cfg, holder, embedder, generator: await template.create(template.options.parse({}), ctx), cache: createCache({}), verifier, metrics, log: silentLogger,
  });
  const key = new TextEncoder().encode(SECRET);
  token = `Bearer ${await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("t").setIssuedAt().setExpirationTime("1h").sign(key)}`;
  expired = `Bearer ${await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("t").setIssuedAt(1_000_000).setExpirationTime(1_000_100).sign(key)}`;
});

afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));

async function send(c: { method: string; path: string; headers?: Record<string, string>; body?: string | Uint8Array }): Promise<Response> {
  const headers = Object.fromEntries(Object.entries(c.headers ?? {}).map(([k, v]) => [k, v === "token" ? token : v === "expired" ? expired : v]));
  const req = new Request(`http://127.0.0.1${c.path}`, { method: c.method, headers, body: c.body as BodyInit | undefined });
  return app.fetch(req);
}

describe("bad HTTP request corpus", () => {
  it("has at least 30 cases", () => expect(httpCases.length).toBeGreaterThanOrEqual(30));
  for (const c of httpCases) {
    it(`${c.name} → ${c.status}`, async () => {
      const res = await send(c);
      expect(res.status).toBe(c.status);
      expect(res.headers.get("content-type") ?? "").toMatch(/json/);
      const body = (await res.json()) as { error?: string; message?: string; field?: string };
      expect(typeof body.error).toBe("string");
      expect(body.message ?? "").not.toMatch(/\n\s+at /);
      if (c.error) expect(body.error).toBe(c.error);
      if (c.field) expect(body.field).toBe(c.field);
    });
  }
  it("still answers a good request after all of them", async () => {
    const res = await send({ method: "POST", path: "/search", headers: { "content-type": "application/json", authorization: "token" }, body: '{"query":"auto loan","k":2}' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { hits: Array<{ id: string }> };
    expect(body.hits).toHaveLength(2);
  });
});

describe("HTTP fuzz", () => {
  it("random methods, paths, headers and bodies never get a 5xx or a non-JSON error", async () => {
    const fc = (await import("fast-check")).default;
    const paths = fc.oneof(
      fc.constantFrom("/search", "/generate-advice", "/health", "/ready", "/index", "/metrics", "/nope", "/search/../index"),
      fc.string({ maxLength: 40 }).map((s) => "/" + encodeURIComponent(s)),
    );
    const body = fc.oneof(
      fc.json({ maxDepth: 3 }),
      fc.record({ query: fc.oneof(fc.string({ maxLength: 300 }), fc.integer(), fc.constant(null)), k: fc.oneof(fc.integer(), fc.double(), fc.string({ maxLength: 5 })) }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
      fc.string({ maxLength: 200 }),
      fc.uint8Array({ maxLength: 200 }),
    );
    const headers = fc.record({
      "content-type": fc.constantFrom("application/json", "application/json; charset=utf-8", "text/plain", "application/vnd.api+json", "", "multipart/form-data"),
      authorization: fc.constantFrom("token", "expired", "", "Bearer", "Bearer x.y.z", "Basic Zm9vOmJhcg=="),
    });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"), paths, headers, body, async (method, p, h, b) => {
        const hs = Object.fromEntries(Object.entries(h).filter(([, v]) => v !== ""));
        const res = await send({ method, path: p, headers: hs, body: method === "GET" ? undefined : b });
        expect(res.status, `${method} ${p}`).toBeLessThan(500);
        if (res.status >= 400) expect(res.headers.get("content-type") ?? "").toMatch(/json/);
        await res.arrayBuffer();
      }),
      { numRuns: 300 },
    );
  });
});
