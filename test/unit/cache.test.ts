import { type ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { cacheKey, createCache, createHotSet, normaliseQuery, type ResponseCache } from "../../server/cache.ts";

const PREFIX = `apfa-test:cache:${process.pid}-${Math.random().toString(36).slice(2, 8)}:`;
const SHARED = "redis://127.0.0.1:6379";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const opened: ResponseCache<unknown>[] = [];
const admin = new Redis(SHARED, { lazyConnect: true });

function track<T>(c: ResponseCache<T>): ResponseCache<T> {
  opened.push(c as ResponseCache<unknown>);
  return c;
}

async function until(cond: () => boolean | Promise<boolean>, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await sleep(25);
  }
}

afterAll(async () => {
  for (const c of opened) await c.close();
  const keys = await admin.keys(`${PREFIX}*`);
  if (keys.length) await admin.del(...keys);
  admin.disconnect();
});

it("cache normalises queries: NFKC, lowercase, collapsed whitespace, trimmed", async () => {
  expect(normaliseQuery("  Best\u00a0LOAN\t\n rates  ")).toBe("best loan rates");
  expect(normaliseQuery("ｌｏａｎ ﬁnance")).toBe("loan finance");
  expect(await cacheKey("v1", " Best  Loan", 5)).toBe(await cacheKey("v1", "best loan", 5));
  expect(await cacheKey("v1", "best loan", 5)).not.toBe(await cacheKey("v1", "best loan", 6));
  expect(await cacheKey("v1", "best loan", 5)).not.toBe(await cacheKey("v2", "best loan", 5));
});

it("cache stores in Redis with SET EX under the prefix, and never serves another index version", async () => {
  const events: string[] = [];
  const cache = track(createCache<{ advice: string }>({
    redis_url: SHARED, key_prefix: PREFIX, ttl_s: 60, onHit: (b) => events.push(`hit:${b}`), onMiss: (b) => events.push(`miss:${b}`),
  }));
  await until(() => cache.stats().backend === "redis");
  expect(await cache.get("v1", "best loan?", 5)).toBeUndefined();
  await cache.set("v1", "best loan?", 5, { advice: "A [x]" });
  expect(await cache.get("v1", "  BEST   loan? ", 5)).toEqual({ advice: "A [x]" });
  expect(await cache.get("v1", "best loan?", 10)).toBeUndefined();
  expect(await cache.get("v2", "best loan?", 5)).toBeUndefined();
  expect(events).toEqual(["miss:redis", "hit:redis", "miss:redis", "miss:redis"]);

  const key = PREFIX + (await cacheKey("v1", "best loan?", 5));
  expect(await admin.get(key)).toBe(JSON.stringify({ advice: "A [x]" }));
  const ttl = await admin.ttl(key);
  expect(ttl).toBeGreaterThan(50);
  expect(ttl).toBeLessThanOrEqual(60);
  expect(cache.stats()).toMatchObject({ backend: "redis", hits: 1, misses: 3, sets: 1, redis_errors: 0, memory_entries: 0 });
});

it("cache uses the in-process LRU when Redis is unreachable or not configured", async () => {
  for (const redis_url of ["redis://127.0.0.1:1", undefined]) {
    const events: string[] = [];
    const cache = track(createCache<string>({ redis_url, key_prefix: PREFIX, onHit: (b) => events.push(`hit:${b}`), onMiss: (b) => events.push(`miss:${b}`) }));
    expect(await cache.get("v1", "q", 5)).toBeUndefined();
    await cache.set("v1", "q", 5, "answer");
    expect(await cache.get("v1", " Q ", 5)).toBe("answer");
    expect(await cache.get("v2", "q", 5)).toBeUndefined();
    expect(events).toEqual(["miss:memory", "hit:memory", "miss:memory"]);
    expect(cache.stats()).toMatchObject({ backend: "memory", memory_entries: 1 });
  }
});

it("cache LRU evicts the least recently used entry beyond max_entries", async () => {
  const cache = track(createCache<number>({ max_entries: 3 }));
  for (const [i, q] of ["a", "b", "c"].entries()) await cache.set("v", q, 1, i);
  expect(await cache.get("v", "a", 1)).toBe(0); // a is now the most recently used
  await cache.set("v", "d", 1, 3);
  expect(await cache.get("v", "b", 1)).toBeUndefined();
  expect(await cache.get("v", "a", 1)).toBe(0);
  expect(await cache.get("v", "c", 1)).toBe(2);
  expect(await cache.get("v", "d", 1)).toBe(3);
  expect(cache.stats().memory_entries).toBe(3);
});

it("cache entries expire after ttl_s, in the LRU and in Redis", async () => {
  const mem = track(createCache<string>({ ttl_s: 1 }));
  const red = track(createCache<string>({ redis_url: SHARED, key_prefix: PREFIX, ttl_s: 1 }));
  await until(() => red.stats().backend === "redis");
  await mem.set("v", "ttl", 1, "x");
  await red.set("v", "ttl", 1, "y");
  expect(await mem.get("v", "ttl", 1)).toBe("x");
  expect(await red.get("v", "ttl", 1)).toBe("y");
  await sleep(1150);
  expect(await mem.get("v", "ttl", 1)).toBeUndefined();
  expect(await red.get("v", "ttl", 1)).toBeUndefined();
  expect(mem.stats().memory_entries).toBe(0);
});

it("cache rejects a ttl Redis cannot store", () => {
  expect(() => createCache({ ttl_s: 0.5 })).toThrow(/ttl_s/);
});

describe("cache with a Redis that goes away", () => {
  let proc: ChildProcess | undefined;
  let port = 0;

  async function freePort(): Promise<number> {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const p = (srv.address() as net.AddressInfo).port;
    await new Promise((r) => srv.close(r));
    return p;
  }

  async function startRedis(): Promise<void> {
    proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "pipe"] });
    await new Promise<void>((resolve, reject) => {
      let out = "";
      proc!.stdout!.on("data", (c) => (out += c) && /Ready to accept connections/.test(out) && resolve());
      proc!.once("exit", (code) => reject(new Error(`redis-server exited ${code}: ${out}`)));
    });
  }

  async function stopRedis(): Promise<void> {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await exited;
  }

  afterAll(stopRedis);

  it("keeps answering through the LRU while Redis is down or stalled, and returns to Redis when it is back", async () => {
    port = await freePort();
    await startRedis();
    const url = `redis://127.0.0.1:${port}`;
    const direct = new Redis(url, { maxRetriesPerRequest: 0 });
    const cache = track(createCache<string>({ redis_url: url, key_prefix: PREFIX, command_timeout_ms: 80 }));
    await until(() => cache.stats().backend === "redis");
    await cache.set("v1", "before", 5, "from-redis");
    expect(await cache.get("v1", "before", 5)).toBe("from-redis");

    // Stalled: the server accepts the connection but answers nothing for 10 s. Waiting it out would return
    // "from-redis"; undefined (and the counted errors) means the command timeout answered instead.
    await direct.call("CLIENT", "PAUSE", "10000", "ALL");
    expect(await cache.get("v1", "before", 5)).toBeUndefined(); // not in the LRU, and Redis timed out
    await cache.set("v1", "paused", 5, "from-lru");
    expect(await cache.get("v1", "paused", 5)).toBe("from-lru");
    expect(cache.stats().redis_errors).toBeGreaterThanOrEqual(3);
    direct.disconnect();

    // Gone: requests are answered at once from the LRU.
    await stopRedis();
    await until(() => cache.stats().backend === "memory");
    const errors = cache.stats().redis_errors;
    await cache.set("v1", "down", 5, "while-down");
    expect(await cache.get("v1", "down", 5)).toBe("while-down");
    expect(await cache.get("v1", "before", 5)).toBeUndefined();
    expect(cache.stats().redis_errors).toBe(errors); // no wait for a reconnect: the down Redis is not even tried

    // Back (empty, as it was started without persistence): the cache reconnects and writes to Redis again.
    await startRedis();
    await until(() => cache.stats().backend === "redis");
    await cache.set("v1", "after", 5, "redis-again");
    const check = new Redis(url, { maxRetriesPerRequest: 0 });
    expect(await check.get(PREFIX + (await cacheKey("v1", "after", 5)))).toBe(JSON.stringify("redis-again"));
    check.disconnect();
    expect(await cache.get("v1", "after", 5)).toBe("redis-again");
    expect(await cache.get("v1", "down", 5)).toBeUndefined(); // LRU entries are not read while Redis serves
  });
});

describe("createHotSet (what warm_on_swap answers again)", () => {
  it("ranks by how often each key was asked, and keeps the value of its first asking", () => {
    const hot = createHotSet<string>(2);
    for (const [key, times] of [["a", 1], ["b", 3], ["c", 2]] as const) for (let i = 0; i < times; i++) hot.add(key, `${key}${i}`);
    expect(hot.top(2)).toEqual(["b0", "c0"]);
    expect(hot.top(5)).toEqual(["b0", "c0", "a0"]);
  });

  it("halves every count at each top(): a question no longer asked fades behind one still asked, then goes", () => {
    const hot = createHotSet<string>(4);
    for (let i = 0; i < 8; i++) hot.add("old", "old");
    hot.add("once", "once");
    hot.top(4); // old 4, once 0.5
    for (let i = 0; i < 5; i++) hot.add("new", "new");
    expect(hot.top(1)).toEqual(["new"]); // new 5 > old 4; then old 2, once 0.25, new 2.5
    expect(hot.top(4)).toEqual(["new", "old", "once"]);
    expect(hot.size).toBe(2); // once fell to 0.125: dropped
  });

  it("holds at most 4 × keep keys (1,024 at least), keeping the most asked half when full", () => {
    const hot = createHotSet<number>(300);
    for (let i = 0; i < 10; i++) hot.add("popular", -1);
    for (let i = 0; i < 5000; i++) hot.add(`k${i}`, i);
    expect(hot.size).toBeLessThanOrEqual(1200);
    expect(hot.top(1)).toEqual([-1]);
  });
});
