/**
 * Scale-out: two `apfa serve` processes subscribed to one Redis channel both move to a new version after a
 * single publish. Neither polls (swap_poll_s an hour), so only the swap event can move them.
 */
import * as path from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, openServerFixture, post, until, type ChildServer, type ServerFixture } from "../helpers/server.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
let fx: ServerFixture;
let servers: ChildServer[] = [];
let raw: Redis;

beforeAll(async () => {
  raw = new Redis(REDIS_URL);
  fx = await openServerFixture({ notifier: "redis", redisUrl: REDIS_URL, overrides: { server: { swap_poll_s: 3600 } } });
  await fx.publish({ count: 300, tag: "v1" });
  // Own cache directories, as on two hosts.
  servers = await Promise.all(["a", "b"].map((n) => fx.spawn({ server: { cache_dir: path.join(fx.dir, `cache-${n}`) } })));
}, 120_000);
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await fx?.close();
  raw?.disconnect();
});

describe("two servers on one channel", () => {
  it("both serve the new version after one publish", async () => {
    const channel = (fx.config.stages.notifier.options as { channel: string }).channel;
    const [, subscribers] = (await raw.pubsub("NUMSUB", channel)) as [string, number];
    expect(subscribers).toBe(2);
    const v1 = (await getJson(servers[0].url, "/ready")).json.version as string;
    expect((await getJson(servers[1].url, "/ready")).json.version).toBe(v1);

    const v2 = await fx.publish({ count: 300, tag: "v2" });
    expect(v2.version).not.toBe(v1);
    const token = await fx.token();
    for (const srv of servers) {
      await until(`${srv.url} to serve v2`, async () => (await getJson(srv.url, "/ready")).json.version === v2.version, 10_000);
      const r = await post(srv.url, "/search", { query: "car loan", k: 2 }, { token });
      expect(r.status).toBe(200);
      expect(r.json.index_version).toBe(v2.version);
      const swap = srv.logs.find((l) => l.msg === "index version serving" && l.version === v2.version)!;
      expect(swap).toMatchObject({ reason: "event", previous: v1 });
      console.log(`[server-scaleout] ${srv.url} swapped ${Date.parse(swap.time) - v2.before} ms after the publish began`);
    }
  });
});
