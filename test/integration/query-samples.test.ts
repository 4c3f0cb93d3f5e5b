import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../runtime/log.ts";
import { listMigrations, migrate } from "../../runtime/migrate.ts";
import { createQuerySampler, decodeVector, encodeVector, loadQuerySamples, type SampleDb } from "../../runtime/query-samples.ts";
import hashEmbedder from "../fixtures/plugins/hash-embedder.ts";
import { withTestDatabase, type TestDatabase } from "../helpers/pg.ts";
import { servedApp } from "../helpers/served-app.ts";
import { openServerFixture, until } from "../helpers/server.ts";
import { embedderKey } from "../../runtime/stages/identity.ts";
import { createApfaHandler } from "../../server/serve.ts";

const vec = (i: number, dims = 4) => Float32Array.from({ length: dims }, (_, j) => i + j / 10);
const opts = { modelKey: "m1", dims: 4, rate: 1, keep: 5, max_pending: 100, flush_s: 0, log: silentLogger };

describe("query sampler, without a database", () => {
  const none: SampleDb = { query: () => Promise.reject(new Error("unused")) };

  it("keeps about `rate` of the offered vectors, and never more than max_pending of them", () => {
    let s = 1;
    const random = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
    const q = createQuerySampler({ ...opts, db: none, rate: 0.25, max_pending: 50, random });
    for (let i = 0; i < 2000; i++) q.offer(vec(i));
    const st = q.stats();
    expect(st.offered).toBe(2000);
    expect(st.sampled).toBeGreaterThan(400);
    expect(st.sampled).toBeLessThan(600);
    expect(st.pending).toBe(50);
  });

  it("replaces held vectors once full (a reservoir over the whole stream, not the first ones)", async () => {
    const written: Float32Array[] = [];
    const db: SampleDb = { query: async (_t, v) => void written.push(...(v[2] as Uint8Array[]).map(decodeVector)) };
    let s = 7;
    const random = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
    const q = createQuerySampler({ ...opts, db, keep: 1000, max_pending: 10, random });
    for (let i = 0; i < 1000; i++) q.offer(vec(i));
    expect(await q.flush()).toBe(10);
    expect(written.some((v) => v[0] >= 10)).toBe(true);
  });

  it("ignores a vector of other dims", () => {
    const q = createQuerySampler({ ...opts, db: none });
    q.offer(vec(1, 3));
    expect(q.stats()).toMatchObject({ offered: 1, sampled: 0, pending: 0 });
  });

  it("counts and logs a failed write instead of throwing, and drops its vectors", async () => {
    const warned: string[] = [];
    const log = { ...silentLogger, warn: (m: string) => void warned.push(m), child: () => log };
    const outcomes: string[] = [];
    const q = createQuerySampler({ ...opts, db: none, log, onFlush: (o) => void outcomes.push(o) });
    q.offer(vec(1));
    q.offer(vec(2));
    await expect(q.flush()).resolves.toBe(0);
    expect(q.stats()).toMatchObject({ failed_flushes: 1, written: 0, pending: 0 });
    expect(outcomes).toEqual(["failed"]);
    expect(warned.join()).toMatch(/query samples not written/);
  });

  it("encodes vectors as little-endian f32", () => {
    const b = encodeVector(Float32Array.of(1, -2.5));
    expect(Array.from(b)).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
    expect(Array.from(decodeVector(b))).toEqual([1, -2.5]);
  });
});

describe("the server's sampling", () => {
  it("offers each search and advice query's vector, and answers normally when the sampler's writes fail", async () => {
    const embedder = await hashEmbedder.create(hashEmbedder.options.parse({ dims: 16 }), { baseDir: "/", log: silentLogger, env: {} });
    const down: SampleDb = { query: () => Promise.reject(new Error("connection refused")) };
    const sampler = createQuerySampler({ ...opts, dims: 16, db: down });
    const served = await servedApp([{ id: "a", text: "a loan" }, { id: "b", text: "a savings account" }], embedder, { querySamples: sampler });
    try {
      expect((await served.post("/search", { query: "loan", k: 1 })).status).toBe(200);
      expect((await served.post("/generate-advice", { query: "which loan?", k: 1 })).status).toBe(200);
      expect(sampler.stats()).toMatchObject({ offered: 2, pending: 2 });
      await expect(sampler.flush()).resolves.toBe(0);
      expect(sampler.stats().failed_flushes).toBe(1);
      expect((await served.post("/search", { query: "savings", k: 1 })).status).toBe(200);
    } finally {
      await served.close();
    }
  });
});

describe("query sampler on Postgres", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await withTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("the migration applies on a fresh database and creates apfa.query_samples", async () => {
    const applied = await migrate(db.pool, silentLogger);
    expect(applied).toEqual(listMigrations().map((m) => m.name));
    expect(applied).toContain("000005_query_samples.sql");
    const cols = await db.pool.query<{ column_name: string }>(
      "select column_name from information_schema.columns where table_schema = 'apfa' and table_name = 'query_samples' order by ordinal_position",
    );
    expect(cols.rows.map((r) => r.column_name)).toEqual(["id", "at", "model_key", "dims", "vector"]);
    expect(await migrate(db.pool, silentLogger)).toEqual([]);
  });

  it("writes sampled vectors and keeps only the newest `keep` per model", async () => {
    const q = createQuerySampler({ ...opts, db: db.pool });
    const other = createQuerySampler({ ...opts, db: db.pool, modelKey: "m2" });
    other.offer(vec(100));
    expect(await other.flush()).toBe(1);
    for (let i = 0; i < 3; i++) q.offer(vec(i));
    expect(await q.flush()).toBe(3);
    for (let i = 3; i < 7; i++) q.offer(vec(i));
    expect(await q.flush()).toBe(4);
    // A batch larger than keep: only its newest `keep` are written.
    const big = createQuerySampler({ ...opts, db: db.pool, keep: 5 });
    for (let i = 7; i < 14; i++) big.offer(vec(i));
    expect(await big.close().then(() => big.stats().written)).toBe(5);

    const counts = await db.pool.query<{ model_key: string; n: number }>("select model_key, count(*)::int as n from apfa.query_samples group by 1 order by 1");
    expect(counts.rows).toEqual([{ model_key: "m1", n: 5 }, { model_key: "m2", n: 1 }]);
    const loaded = await loadQuerySamples(db.pool, "m1", 4, 3);
    expect(loaded.length).toBe(12);
    expect(Array.from(loaded.subarray(0, 4))).toEqual(Array.from(vec(13)));
    expect((await loadQuerySamples(db.pool, "m1", 8, 10)).length).toBe(0);
    expect((await loadQuerySamples(db.pool, "m2", 4, 10)).length).toBe(4);
  });

  it("no query text reaches the table: it has no text column but the model key", async () => {
    const cols = await db.pool.query<{ column_name: string; data_type: string }>(
      "select column_name, data_type from information_schema.columns where table_schema = 'apfa' and table_name = 'query_samples' and data_type = 'text'",
    );
    expect(cols.rows.map((r) => r.column_name)).toEqual(["model_key"]);
  });
});

describe("apfa serve's sampler", () => {
  it("writes the vectors of the queries it answers to apfa.query_samples under its embedder's key, and no text", async () => {
    const fx = await openServerFixture({ overrides: { server: { query_samples: { rate: 1, flush_s: 0.05 } } } });
    try {
      await fx.publish({ count: 20 });
      const h = await createApfaHandler(fx.config, silentLogger);
      try {
        const token = await fx.token();
        const r = await h.fetch(new Request("http://127.0.0.1/search", { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ query: "a private question", k: 2 }) }));
        expect(r.status).toBe(200);
        const rows = await until("a sampled query row", async () => (await fx.db.pool.query<{ model_key: string; dims: number; n: number }>("select model_key, dims, length(vector) as n from apfa.query_samples")).rows[0]);
        expect(rows.model_key).toBe(await embedderKey(fx.config));
        expect(rows.dims).toBe((fx.config.stages.embedder.options as { dims: number }).dims);
        expect(rows.n).toBe(rows.dims * 4);
      } finally {
        await h.close();
      }
    } finally {
      await fx.close();
    }
  }, 60_000);
});
