/**
 * Zero failed requests across hot swaps. `apfa serve` runs as its own process; autocannon keeps connections
 * busy on POST /search while this test publishes 10 new versions, each once the server serves the previous
 * one and has answered requests with it. Driven by counts, not a clock, so a busy machine only makes it
 * slower: the timed 26 s, 50-connection version with its swap-lag bound is in the fault suite
 * (test/faults/server-hotswap.load.test.ts). Required: no non-2xx, no errors, no timeouts, and every
 * response's `index_version` was the server's current version at some moment between the request being sent
 * and its response arriving — checked per request against the swap times the server logs.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openServerFixture, post, until, type ChildServer, type Published, type ServerFixture } from "../helpers/server.ts";
import { inFlightAcross, searchLoad, staleAnswers, swapTimeline } from "../helpers/swap-load.ts";

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

describe("hot swap under load", () => {
  it(`serves ${CONNECTIONS} busy connections through ${VERSIONS} swaps with no failed request and no stale answer`, async () => {
    const token = await fx.token();
    const check = await post(srv.url, "/search", { query: "warm up", k: 5 }, { token });
    expect(check.json.index_version).toBe(first.version);

    // An upper bound only: the run is stopped once the last version has answered.
    const { run, recs } = searchLoad({ url: srv.url, token, connections: CONNECTIONS, duration: 600, timeout: 30 });

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

    const { installs, at } = swapTimeline(srv);
    expect(installs.map((x) => x.version)).toEqual(published.map((p) => p.version));
    for (const [i, p] of published.entries()) {
      expect(at.get(p.version)!.from, `version ${i} installed before it was published`).toBeGreaterThanOrEqual(p.before);
    }

    expect(result.errors).toBe(0);
    expect(result.timeouts).toBe(0);
    expect(result.non2xx).toBe(0);
    expect(recs.length).toBe(result["2xx"]);
    const bad = staleAnswers(recs, at, published);
    expect(bad.slice(0, 10)).toEqual([]);
    expect(bad).toHaveLength(0);
    // The load really spanned every swap: requests were in flight across each one.
    const inFlight = inFlightAcross(installs, recs);
    expect(inFlight.filter((n) => n === 0), `requests in flight across each swap: ${inFlight.join(", ")}`).toEqual([]);
    expect(srv.logs.filter((l) => l.level === "error")).toEqual([]);
    console.log(`[server-hotswap] ${recs.length} requests, ${installs.length - 1} swaps, in flight across each swap ${inFlight.join(", ")}`);
  }, 600_000);
});
