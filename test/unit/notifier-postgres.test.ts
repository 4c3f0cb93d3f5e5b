import * as crypto from "node:crypto";
import * as net from "node:net";
import pg from "pg";
import { afterAll, afterEach, expect, it } from "vitest";
import postgres, { type PostgresOptions } from "../../plugins/notifier/postgres.ts";
import type { Notifier, SwapEvent } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { createLogger, silentLogger } from "../../runtime/log.ts";
import { swapEvent, testNotifier, waitFor } from "../conformance/notifier.ts";

const url = process.env.APFA_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const channel = `apfa_test_${Date.now()}_${crypto.randomBytes(4).toString("hex")}`;
const admin = new pg.Pool({ connectionString: url, max: 1 });
afterAll(() => admin.end());

const opened: Notifier[] = [];
afterEach(async () => void (await Promise.all(opened.splice(0).map((n) => n.close()))));
// `url` comes through ctx.env.DATABASE_URL, the way the runtime hands over its (embedded) Postgres.
const make = (o: Partial<PostgresOptions> = {}, log = silentLogger) => {
  const n = postgres.create(postgres.options.parse({ channel, ...o }), { baseDir: "/", log, env: { DATABASE_URL: url } }) as Notifier;
  opened.push(n);
  return n;
};

testNotifier("postgres", async () => make(), {
  injectRaw: async (p) => void (await admin.query("SELECT pg_notify($1, $2)", [channel, p])),
});

it("postgres: a terminated listener reconnects, calls onReconnect, then receives later events", async () => {
  const [sub, pub] = [make(), make()];
  const got: SwapEvent[] = [];
  let reconnects = 0;
  await sub.subscribe((e) => got.push(e), { onReconnect: () => reconnects++ });
  const killed = await admin.query(
    "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()",
    [`LISTEN "${channel}"`],
  );
  expect(killed.rows).toEqual([{ ok: true }]);
  await waitFor(() => reconnects === 1, "onReconnect");
  const e = swapEvent("after-reconnect");
  await pub.publish(e);
  await waitFor(() => got.length === 1, "event after reconnect");
  expect(got).toEqual([e]);
  expect(reconnects).toBe(1);
});

it("postgres: publish and subscribe fail within the timeout, naming the server, when Postgres is unreachable", async () => {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const n = make({ url: `postgres://postgres:hunter2secret@127.0.0.1:${port}/test`, timeout_ms: 300 });
  for (const op of [() => n.publish(swapEvent("v")), () => n.subscribe(() => {})]) {
    const err = (await op().then(() => undefined, (e: unknown) => e)) as Error;
    expect(isApfaError(err, "notifier")).toBe(true);
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(err.message).not.toContain("hunter2secret");
  }
}, 15_000); // without the timeout the client keeps waiting: the test times out

it("postgres: needs a url or DATABASE_URL, and a plain identifier as channel", () => {
  expect(() => postgres.create(postgres.options.parse({}), { baseDir: "/", log: silentLogger, env: {} })).toThrow(/DATABASE_URL/);
  expect(postgres.options.safeParse({ channel: 'x"; DROP TABLE y; --' }).success).toBe(false);
});

it("postgres: logs malformed payloads as warnings", async () => {
  const lines: string[] = [];
  const sub = make({}, createLogger({}, { write: (l) => lines.push(l) }));
  await sub.subscribe(() => {});
  await admin.query("SELECT pg_notify($1, $2)", [channel, JSON.stringify({ version: "v" })]);
  await waitFor(() => lines.some((l) => l.includes("malformed")), "a warning");
  expect(JSON.parse(lines.find((l) => l.includes("malformed"))!)).toMatchObject({ level: "warn" });
});
