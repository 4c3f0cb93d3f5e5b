import * as crypto from "node:crypto";
import * as net from "node:net";
import { Redis } from "ioredis";
import { afterAll, afterEach, expect, it } from "vitest";
import redis, { type RedisOptions } from "../../plugins/notifier/redis.ts";
import type { Notifier, SwapEvent } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { createLogger, silentLogger } from "../../runtime/log.ts";
import { swapEvent, testNotifier, waitFor } from "../conformance/notifier.ts";

const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const channel = `apfa:test:swap:${Date.now()}:${crypto.randomBytes(4).toString("hex")}`;
const raw = new Redis(url);
afterAll(() => raw.quit());

const opened: Notifier[] = [];
afterEach(async () => void (await Promise.all(opened.splice(0).map((n) => n.close()))));
const make = (o: Partial<RedisOptions> = {}, env: Record<string, string> = {}, log = silentLogger) => {
  const n = redis.create(redis.options.parse({ url, channel, ...o }), { baseDir: "/", log, env }) as Notifier;
  opened.push(n);
  return n;
};

testNotifier("redis", async () => make(), { injectRaw: async (p) => void (await raw.publish(channel, p)) });

it("redis: a killed subscriber connection comes back, calls onReconnect, then receives later events", async () => {
  const [sub, pub] = [make(), make()];
  const got: SwapEvent[] = [];
  let reconnects = 0;
  await sub.subscribe((e) => got.push(e), { onReconnect: () => reconnects++ });
  // Kill only this test's subscriber (by its connection name), not other suites' pub/sub clients.
  const ids = String(await raw.client("LIST")).split("\n")
    .filter((l) => l.includes(` name=apfa:notifier:${channel} `))
    .map((l) => /\bid=(\d+)/.exec(l)![1]);
  expect(ids).toHaveLength(1);
  expect(await raw.client("KILL", "ID", ids[0])).toBe(1);
  await waitFor(() => reconnects === 1, "onReconnect");
  const e = swapEvent("after-reconnect");
  await pub.publish(e);
  await waitFor(() => got.length === 1, "event after reconnect");
  expect(got).toEqual([e]);
  expect(reconnects).toBe(1);
});

it("redis: publish fails within its timeout, naming the server, when Redis is unreachable", async () => {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  // url from REDIS_URL when the option is unset; the password must not show up in the error.
  const n = redis.create(redis.options.parse({ channel, timeout_ms: 300 }), {
    baseDir: "/", log: silentLogger, env: { REDIS_URL: `redis://:hunter2secret@127.0.0.1:${port}` },
  }) as Notifier;
  opened.push(n);
  for (let i = 0; i < 2; i++) { // the first try connects, the second finds a client reconnecting in the background
    const err = await n.publish(swapEvent("v")).catch((e) => e);
    expect(isApfaError(err)).toBe(true);
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(err.message).not.toContain("hunter2secret");
  }
}, 15_000); // without the timeout the client keeps retrying: the test times out

it("redis: logs malformed payloads as warnings", async () => {
  const lines: string[] = [];
  const sub = make({}, {}, createLogger({}, { write: (l) => lines.push(l) }));
  await sub.subscribe(() => {});
  await raw.publish(channel, "{oops");
  await waitFor(() => lines.some((l) => l.includes("not JSON")), "a warning");
  expect(JSON.parse(lines.find((l) => l.includes("not JSON"))!)).toMatchObject({ level: "warn", payload: "{oops" });
});
