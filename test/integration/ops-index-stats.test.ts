/**
 * `compute_index_stats` measures the current version (vectors, dims, bytes in memory and on the store), merges
 * the search-latency histograms of the servers it is told to scrape (a real server metrics registry serves
 * them here; an unreachable URL is reported, not fatal), scores the migration urgency, stores a row in
 * `apfa.index_stats`, and the worker exports the newest row as gauges.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addJob } from "../../runtime/runs.ts";
import { computeIndexStats } from "../../runtime/tasks/stats.ts";
import { readManifest } from "../../runtime/versions.ts";
import { createServerMetrics, type ServerMetrics } from "../../server/metrics.ts";
import { jobFinished, openOpsEnv, parseMetrics, type OpsEnv } from "./ops-support.ts";

let env: OpsEnv;
let metrics: ServerMetrics;
let fake: http.Server;
let serverUrl: string;
let version: string;

beforeAll(async () => {
  env = await openOpsEnv({ docs: 40 });
  await env.startWorker();
  version = (await env.runToEnd()).index_version!;
  metrics = createServerMetrics();
  fake = http.createServer(async (_req, res) => {
    res.setHeader("content-type", metrics.registry.contentType);
    res.end(await metrics.registry.metrics());
  });
  await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r));
  serverUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
}, 60_000);
afterAll(async () => {
  fake?.close();
  await env?.close();
});

describe("compute_index_stats", () => {
  it("measures count, dims and bytes of the current version; estimates p95 when no server is listed", async () => {
    const row = (await computeIndexStats(env.pipeline))!;
    const m = await readManifest(env.pipeline.store, version);
    let store = 0;
    for await (const st of env.pipeline.store.list(`indexes/${version}/`)) store += st.size;
    expect(row).toMatchObject({ version, engine: "flat", count: 40, dims: 64, search_p95_ms: null });
    // The documents stay in docs.jsonl: a server holds 12 bytes of offsets for each (server/doc-table.ts).
    expect(row.bytes_memory).toBe(40 * 64 * 4 + 40 * 12);
    expect(row.bytes_store).toBe(store);
    expect(row.bytes_store).toBeGreaterThan(Object.values(m.files).reduce((a, f) => a + f.bytes, 0));
    expect(row.recommendation).toBe("keep flat");
    expect(row.urgency).toBe(0);
    expect(row.reasoning).toMatchObject({ p95_source: "estimated", search: { servers: 0 } });
  });

  it("merges the servers' search histograms into a p95; an unreachable server is listed as failed", async () => {
    for (let i = 0; i < 90; i++) metrics.search.observe(0.002);
    for (let i = 0; i < 10; i++) metrics.search.observe(0.2);
    const row = (await computeIndexStats(env.pipeline, { servers: [serverUrl, "http://127.0.0.1:9/"] }))!;
    // 95th of 100 lies in (0.1, 0.25], 5 of its 10: 0.1 + 0.15 × 0.5 = 0.175 s.
    expect(row.search_p95_ms).toBeCloseTo(175, 6);
    const search = row.reasoning.search as { reached: string[]; failed: Array<{ url: string }>; window: string };
    expect(search.reached).toEqual([`${serverUrl}/metrics`]);
    expect(search.failed.map((f) => f.url)).toEqual(["http://127.0.0.1:9/metrics"]);
    expect(search.window).toBe("since server start");
    // 175 ms against the 50 ms budget: the latency term is saturated.
    expect(row.urgency).toBe(1);
    expect(row.recommendation).toBe("migrate to hnsw");
  });

  it("the next p95 covers only what the servers observed since the previous row", async () => {
    for (let i = 0; i < 20; i++) metrics.search.observe(0.002);
    const row = (await computeIndexStats(env.pipeline, { servers: [serverUrl] }))!;
    // All 20 new observations in (0.001, 0.0025]: 0.001 + 0.0015 × 19/20.
    expect(row.search_p95_ms).toBeCloseTo(2.425, 6);
    expect((row.reasoning.search as { window: string }).window).toBe("since previous stats");
    expect(row.recommendation).toBe("keep flat");
  });

  it("runs as a job on the worker, stores a row and shows up in the worker's gauges", async () => {
    const before = await env.db.pool.query("select count(*)::int as n from apfa.index_stats");
    const job = await addJob(env.db.pool, env.config, "compute_index_stats", { servers: [serverUrl] });
    await jobFinished(env, job);
    const after = await env.db.pool.query<{ n: number }>("select count(*)::int as n from apfa.index_stats");
    expect(after.rows[0].n).toBe(before.rows[0].n + 1);
    // No search since the previous row: no p95 for this window (not the servers' lifetime p95).
    const last = await env.db.pool.query("select search_p95_ms, reasoning->'search'->>'window' as window, (reasoning->'search'->>'searches')::int as searches from apfa.index_stats order by id desc limit 1");
    expect(last.rows[0]).toEqual({ search_p95_ms: null, window: "since previous stats", searches: 0 });
    const g = parseMetrics(await env.workers[0].metrics.registry.metrics());
    expect(g.get('apfa_index_stats_vectors{engine="flat"}')).toBe(40);
    expect(g.get('apfa_index_stats_dims{engine="flat"}')).toBe(64);
    expect(g.get('apfa_index_stats_memory_bytes{engine="flat"}')).toBeGreaterThan(40 * 64 * 4);
    expect(g.get('apfa_index_stats_store_bytes{engine="flat"}')).toBeGreaterThan(40 * 64 * 4);
    expect(g.get('apfa_index_stats_migration_urgency{engine="flat",recommendation="keep flat"}')).toBe(0);
    expect(g.get('apfa_index_stats_timestamp_seconds{engine="flat"}')).toBeGreaterThan(Date.now() / 1000 - 60);
  });

  it("leaves the p95 gauge out when the newest row has no measured p95", async () => {
    await computeIndexStats(env.pipeline);
    const g = await env.workers[0].metrics.registry.metrics();
    await new Promise((r) => setTimeout(r, 1100)); // the gauges cache one database read per second
    const fresh = await env.workers[0].metrics.registry.metrics();
    expect(g + fresh).toContain("apfa_index_stats_vectors");
    expect(fresh).not.toMatch(/^apfa_index_stats_search_p95_seconds\{/m);
  });
});
