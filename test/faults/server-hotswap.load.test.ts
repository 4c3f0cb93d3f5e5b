/**
 * Zero failed requests across hot swaps. `apfa serve` runs as its own process; autocannon keeps 50
 * connections busy on POST /search for 26 s while this test publishes 10 new versions, one every 2 s.
 * Required: no non-2xx, no errors, no timeouts, and every response's `index_version` was the server's
 * current version at some moment between the request being sent and its response arriving — checked per
 * request against the swap times the server logs, and against when each version was published; and each
 * swap is serving within 5 s of its publish. This is the timed load version (fault suite, CI): `npm test` has
 * test/integration/server-hotswap.test.ts, the same checks driven by counts instead of a clock.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openServerFixture, post, until, type ChildServer, type Published, type ServerFixture } from "../helpers/server.ts";
import { inFlightAcross, searchLoad, staleAnswers, swapTimeline } from "../helpers/swap-load.ts";

const CONNECTIONS = 50;
const DURATION_S = 26;
const VERSIONS = 10;
const EVERY_MS = 2000;

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
  it(`serves ${CONNECTIONS} connections for ${DURATION_S} s through ${VERSIONS} swaps with no failed request and no stale answer`, async () => {
    const token = await fx.token();
    const check = await post(srv.url, "/search", { query: "warm up", k: 5 }, { token });
    expect(check.json.index_version).toBe(first.version);

    const { run, recs } = searchLoad({ url: srv.url, token, connections: CONNECTIONS, duration: DURATION_S, timeout: 10 });

    const published: Published[] = [first];
    const t0 = Date.now();
    const publishing = (async () => {
      for (let i = 1; i <= VERSIONS; i++) {
        // On a fixed cadence (at 2, 4, … 20 s), however long each publish takes.
        await new Promise((r) => setTimeout(r, Math.max(0, t0 + i * EVERY_MS - Date.now())));
        published.push(await fx.publish({ count: 1000, tag: `v${i}` }));
      }
    })();
    const [result] = await Promise.all([run, publishing]);
    const last = published.at(-1)!.version;
    await until("the last version to be installed", () => srv.logs.some((l) => l.msg === "index version serving" && l.version === last), 10_000);

    const { installs, at } = swapTimeline(srv);
    expect(installs.map((x) => x.version)).toEqual(published.map((p) => p.version));

    const lags = published.slice(1).map((p) => at.get(p.version)!.from - p.after);
    for (const [i, p] of published.entries()) {
      const when = at.get(p.version)!;
      expect(when.from, `version ${i} installed before it was published`).toBeGreaterThanOrEqual(p.before);
    }
    expect(Math.max(...lags), `swap lag after publish (ms): ${lags.join(", ")}`).toBeLessThan(5000);

    expect(result.errors).toBe(0);
    expect(result.timeouts).toBe(0);
    expect(result.non2xx).toBe(0);
    expect(recs.length).toBe(result["2xx"]);
    const bad = staleAnswers(recs, at, published);
    const seen = new Map<string, number>();
    for (const r of recs) if (r.version) seen.set(r.version, (seen.get(r.version) ?? 0) + 1);
    expect(bad.slice(0, 10)).toEqual([]);
    expect(bad).toHaveLength(0);
    // The load really spanned every swap: requests were in flight across each one (a version replaced
    // quickly under load may answer few or no requests itself, so that is not required).
    const inFlight = inFlightAcross(installs, recs);
    expect(inFlight.filter((n) => n === 0), `requests in flight across each swap: ${inFlight.join(", ")}`).toEqual([]);
    expect(seen.size).toBeGreaterThanOrEqual(VERSIONS / 2);
    expect(srv.logs.filter((l) => l.level === "error")).toEqual([]);

    console.log(`[server-hotswap] ${recs.length} requests in ${DURATION_S} s, ${result.requests.average.toFixed(0)} req/s avg; latency ms p50 ${result.latency.p50}` +
      ` p97.5 ${result.latency.p97_5} p99 ${result.latency.p99} max ${result.latency.max}; ${installs.length - 1} swaps, lag after publish ms ${lags.join(", ")};` +
      ` responses per version ${published.map((p) => seen.get(p.version) ?? 0).join(", ")}; in flight across each swap ${inFlight.join(", ")}`);
  }, 60_000);
});
