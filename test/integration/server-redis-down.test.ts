/**
 * Redis is a convenience, never a dependency. With the response cache and the swap notifier on a private
 * redis-server that the test kills mid-run: /generate-advice keeps answering 200 (the in-process cache takes
 * over), a version published while Redis is down reaches the servers anyway — the polling one within a few
 * seconds, the one that only listens (swap_poll_s an hour) once Redis is back, through onReconnect — and
 * neither needs a restart.
 */
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, metric, openServerFixture, post, startRedis, until, type ServerFixture, type ServerHandle, type TestRedis } from "../helpers/server.ts";

let redis: TestRedis;
let fx: ServerFixture;
let listening: ServerHandle; // swap_poll_s 3600: only events and reconnects move it
let polling: ServerHandle; // swap_poll_s 1
let token: string;

beforeAll(async () => {
  redis = await startRedis();
  fx = await openServerFixture({
    notifier: "redis",
    redisUrl: redis.url,
    overrides: { server: { cache: { redis_url: redis.url }, swap_poll_s: 3600 } },
  });
  await fx.publish({ count: 300, tag: "before-outage" });
  listening = await fx.start();
  polling = await fx.start({ server: { swap_poll_s: 1, cache_dir: path.join(fx.dir, "cache-polling") } });
  token = await fx.token();
});
afterAll(async () => {
  await listening?.stop();
  await polling?.stop();
  await fx?.close();
  await redis?.stop();
});

const version = async (srv: ServerHandle) => (await getJson(srv.url, "/ready")).json.version as string;
const advice = (srv: ServerHandle, query: string) => post(srv.url, "/generate-advice", { query, k: 3 }, { token });

describe("Redis down", () => {
  it("keeps answering, falls back to the in-process cache, and picks up a version published during the outage", async () => {
    const v1 = await version(listening);
    expect(await version(polling)).toBe(v1);
    const warm = await advice(listening, "consolidate credit card debt");
    expect(warm.status).toBe(200);
    expect(await metric(listening.url, /^apfa_cache_misses_total\{backend="redis"\}$/)).toBe(1);

    // Background traffic through the whole outage: every answer must be a 200.
    const statuses: number[] = [];
    let stop = false;
    const traffic = (async () => {
      for (let i = 0; !stop; i++) {
        for (const srv of [listening, polling]) statuses.push((await advice(srv, `loan question ${i % 7}`)).status);
        await new Promise((r) => setTimeout(r, 25));
      }
    })();

    await redis.stop();
    const downAt = Date.now();
    // Same query twice while Redis is down: the second is a hit in the in-process cache.
    const a = await advice(listening, "refinance my mortgage");
    const b = await advice(listening, "refinance my mortgage");
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(b.json.cached).toBe(true);
    expect(await metric(listening.url, /^apfa_cache_hits_total\{backend="memory"\}$/)).toBeGreaterThanOrEqual(1);

    const v2 = await fx.publish({ count: 300, tag: "during-outage" }); // its swap event is lost: Redis is down
    expect(v2.version).not.toBe(v1);
    await until("the polling server to swap while Redis is down", async () => (await version(polling)) === v2.version, 10_000);
    // The listening server heard nothing and does not poll: it still serves v1 (and its swap to v2, below, is
    // logged with reason "reconnect": the proof that nothing during the outage moved it).
    expect(await version(listening)).toBe(v1);
    expect((await advice(listening, "student loan")).json.index_version).toBe(v1);
    const downFor = Date.now() - downAt;

    await redis.start();
    const upAt = Date.now();
    await until("the listening server to swap after Redis came back", async () => (await version(listening)) === v2.version, 20_000);
    const swapLag = Date.now() - upAt;
    const swapped = listening.logs.find((l) => l.msg === "index version serving" && l.version === v2.version);
    expect(swapped?.reason).toBe("reconnect");
    expect(listening.logs.some((l) => l.msg === "redis subscriber reconnected")).toBe(true);

    stop = true;
    await traffic;
    expect(statuses.length).toBeGreaterThan(20);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const after = await advice(listening, "car loan rates");
    expect(after.status).toBe(200);
    expect(after.json.index_version).toBe(v2.version);
    // And the shared cache is used again once its client reconnects.
    const redisMisses = await metric(listening.url, /^apfa_cache_misses_total\{backend="redis"\}$/);
    await until("the cache to use Redis again", async () => {
      await advice(listening, `back on redis ${Date.now()}`);
      return (await metric(listening.url, /^apfa_cache_misses_total\{backend="redis"\}$/)) > redisMisses;
    }, 10_000);
    console.log(`[server-redis-down] ${statuses.length} requests during the outage, all 200; Redis down ${downFor} ms; listening server swapped ${swapLag} ms after Redis came back`);
  }, 60_000);
});
