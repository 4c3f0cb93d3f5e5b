/**
 * Zero failed requests across hot swaps. `apfa serve` runs as its own process; autocannon keeps connections
 * busy on POST /search while this test publishes 10 new versions, each once the server serves the previous
 * one and has answered requests with it. Driven by counts, not a clock, so a busy machine only makes it
 * slower: the timed 26 s, 50-connection version with its swap-lag bound is in the fault suite
 * (test/faults/server-hotswap.load.test.ts). Required: no non-2xx, no errors, no timeouts, and every
 * response's `index_version` was the server's current version at some moment between the request being sent
 * and its response arriving — checked per request against the swap times the server logs.
 */
import { createRequire } from "node:module";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openServerFixture, post, until, type ChildServer, type Published, type ServerFixture } from "../helpers/server.ts";

/** The part of autocannon's programmatic API used here (it ships no types). */
interface AutocannonClient {
  on(event: "request" | "response", fn: (status?: number) => void): void;
}
interface AutocannonRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
  setupRequest?: (req: AutocannonRequest) => AutocannonRequest;
  onResponse?: (status: number, body: string) => void;
}
interface AutocannonResult {
  errors: number;
  timeouts: number;
  non2xx: number;
  "2xx": number;
}
type Autocannon = ((opts: Record<string, unknown>) => PromiseLike<AutocannonResult> & { stop(): void }) & Record<string, unknown>;
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

const CONNECTIONS = 10;
const VERSIONS = 10;
/** Responses carrying a version the test waits for before publishing the next one. */
const ANSWERS_PER_VERSION = 20;

let fx: ServerFixture;
let srv: ChildServer;
let first: Published;

beforeAll(async () => {
  fx = await openServerFixture();
  first = await fx.publish({ count: 1000, tag: "v0" });
  srv = await fx.spawn();
}, 90_000);
afterAll(async () => {
  await srv?.stop();
  await fx?.close();
});

interface Rec {
  start: number;
  end: number;
  status: number;
  version?: string;
}

describe("hot swap under load", () => {
  it(`serves ${CONNECTIONS} busy connections through ${VERSIONS} swaps with no failed request and no stale answer`, async () => {
    const token = await fx.token();
    const check = await post(srv.url, "/search", { query: "warm up", k: 5 }, { token });
    expect(check.json.index_version).toBe(first.version);

    const words = ["credit card", "mortgage", "student loan", "car loan", "savings", "refinance", "debt", "rates", "offer", "customers"];
    let bodyVersion: string | undefined;
    const recs: Rec[] = [];
    const run = autocannon({
      url: srv.url,
      connections: CONNECTIONS,
      // An upper bound only: the run is stopped once the last version has answered.
      duration: 600,
      timeout: 30,
      requests: [{
        method: "POST",
        path: "/search",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        // Many distinct queries, so most requests search (a cache hit is still per version).
        setupRequest: (req) => ({ ...req, body: JSON.stringify({ query: `${words[Math.floor(Math.random() * 10)]} ${Math.floor(Math.random() * 500)}`, k: 5 }) }),
        // Called synchronously just before the same client's "response" event, so a shared slot is safe.
        onResponse: (_status, body) => {
          try {
            bodyVersion = (JSON.parse(body) as { index_version?: string }).index_version;
          } catch {
            bodyVersion = undefined;
          }
        },
      } satisfies AutocannonRequest],
      setupClient: (client: AutocannonClient) => {
        let start = 0;
        client.on("request", () => (start = Date.now()));
        client.on("response", (status) => {
          recs.push({ start, end: Date.now(), status: status!, version: bodyVersion });
          bodyVersion = undefined;
        });
      },
    });

    const published: Published[] = [first];
    const answered = (version: string) => recs.filter((r) => r.version === version).length >= ANSWERS_PER_VERSION;
    try {
      await until("the first version to answer under load", () => answered(first.version), 60_000);
      for (let i = 1; i <= VERSIONS; i++) {
        const p = await fx.publish({ count: 1000, tag: `v${i}` });
        published.push(p);
        await until(`version ${i} to be serving`, () => srv.logs.some((l) => l.msg === "index version serving" && l.version === p.version), 60_000);
        await until(`version ${i} to answer under load`, () => answered(p.version), 60_000);
      }
    } finally {
      run.stop();
    }
    const result = await run;

    // The server's own record of when each version became current (install() logs synchronously with the swap).
    const installs = srv.logs.filter((l) => l.msg === "index version serving").map((l) => ({ version: String(l.version), at: Date.parse(l.time) }));
    expect(installs.map((x) => x.version)).toEqual(published.map((p) => p.version));
    const at = new Map(installs.map((x, i) => [x.version, { from: x.at, until: installs[i + 1]?.at ?? Infinity }]));
    for (const [i, p] of published.entries()) {
      expect(at.get(p.version)!.from, `version ${i} installed before it was published`).toBeGreaterThanOrEqual(p.before);
    }

    expect(result.errors).toBe(0);
    expect(result.timeouts).toBe(0);
    expect(result.non2xx).toBe(0);
    expect(recs.length).toBe(result["2xx"]);
    const bad: string[] = [];
    for (const r of recs) {
      const when = r.version ? at.get(r.version) : undefined;
      if (r.status !== 200 || !when) bad.push(`status ${r.status} version ${r.version}`);
      else if (r.end < when.from) bad.push(`got ${r.version!.slice(0, 8)} at ${r.end}, before it was installed at ${when.from}`);
      else if (r.start > when.until) bad.push(`got ${r.version!.slice(0, 8)} for a request sent at ${r.start}, after it was replaced at ${when.until}`);
    }
    expect(bad.slice(0, 10)).toEqual([]);
    expect(bad).toHaveLength(0);
    // The load really spanned every swap: requests were in flight across each one.
    const inFlight = installs.slice(1).map((x) => recs.filter((r) => r.start <= x.at && r.end >= x.at).length);
    expect(inFlight.filter((n) => n === 0), `requests in flight across each swap: ${inFlight.join(", ")}`).toEqual([]);
    expect(srv.logs.filter((l) => l.level === "error")).toEqual([]);
    console.log(`[server-hotswap] ${recs.length} requests, ${installs.length - 1} swaps, in flight across each swap ${inFlight.join(", ")}`);
  }, 600_000);
});
