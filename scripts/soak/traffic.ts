/**
 * The soak's traffic: autocannon (in-process) on `/search` and `/generate-advice`, each request picking its
 * route and either a query from a small repeated set (response-cache hits once warm for a version) or a fresh
 * one (a miss: embed, search, generate). Counters are live so the sampler can record them over time; errors
 * are counted by kind (socket errors, timeouts, each non-2xx status).
 * @module
 */
import { createRequire } from "node:module";

interface AutocannonResult {
  duration: number;
  requests: { total: number };
}
interface Instance extends PromiseLike<AutocannonResult> {
  on(event: "response", fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  on(event: "reqError", fn: (err: Error) => void): void;
  stop(): void;
}
type Autocannon = (opts: Record<string, unknown>) => Instance;
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

export interface TrafficOptions {
  base: string;
  token: string;
  connections: number;
  /** Requests per second over all connections; 0 = as fast as the server answers. */
  rate: number;
  durationS: number;
  /** Share of requests with a never-seen query. */
  fresh: number;
  /** Share of requests going to /generate-advice (the rest to /search). */
  advice: number;
}

export interface TrafficCounters {
  responses: number;
  ok: number;
  /** Non-2xx responses by status. */
  non2xx: Record<string, number>;
  socketErrors: number;
  timeouts: number;
  /** 2xx answers the server marked `cached: true`. */
  cached: number;
  byRoute: Record<string, { ok: number; failed: number }>;
  /** Distinct index versions seen in answers. */
  versions: Set<string>;
  /** Every response's time, in ms. */
  latencies: number[];
}

export const errorCount = (c: TrafficCounters): number =>
  c.socketErrors + c.timeouts + Object.values(c.non2xx).reduce((a, n) => a + n, 0);

const ASKS = [
  "I have a {s} credit score and want to consolidate card debt",
  "cheapest personal loan for {a} dollars",
  "refinance my car loan with a {s} score",
  "which loan has the lowest APR over {t} months",
  "borrow {a} for a home renovation",
  "student loan options with a {s} credit score",
  "no origination fee loans up to {a}",
  "what can I borrow with a {s} FICO and stable income",
];
const fill = (q: string, n: number) =>
  q.replace("{s}", String(580 + (n * 37) % 240)).replace("{a}", `$${(2 + (n * 7) % 48) * 1000}`).replace("{t}", String(12 * (1 + (n % 6))));
/** 48 queries asked again and again. */
const REPEATED = Array.from({ length: 48 }, (_, i) => fill(ASKS[i % ASKS.length], i));

export function startTraffic(o: TrafficOptions): { counters: TrafficCounters; done: Promise<AutocannonResult>; stop(): void } {
  const c: TrafficCounters = { responses: 0, ok: 0, non2xx: {}, socketErrors: 0, timeouts: 0, cached: 0, byRoute: {}, versions: new Set(), latencies: [] };
  let seq = 0;
  const inst = autocannon({
    url: o.base,
    connections: o.connections,
    ...(o.rate > 0 ? { overallRate: o.rate } : {}),
    duration: o.durationS,
    timeout: 10,
    requests: [{
      method: "POST",
      path: "/search",
      headers: { "content-type": "application/json", authorization: `Bearer ${o.token}` },
      setupRequest(req: Record<string, unknown>, ctx: Record<string, unknown>) {
        const n = seq++;
        const route = Math.random() < o.advice ? "/generate-advice" : "/search";
        const query = Math.random() < o.fresh ? `${fill(ASKS[n % ASKS.length], n)} #${n}` : REPEATED[n % REPEATED.length];
        ctx.route = route; // one request in flight per connection, so onResponse reads this request's route
        return { ...req, path: route, body: JSON.stringify({ query, k: 5 }) };
      },
      onResponse(status: number, body: string, ctx: Record<string, unknown>) {
        const r = (c.byRoute[String(ctx.route)] ??= { ok: 0, failed: 0 });
        if (status < 200 || status > 299) {
          r.failed++;
          return;
        }
        r.ok++;
        try {
          const j = JSON.parse(body) as { cached?: boolean; index_version?: string };
          if (j.cached) c.cached++;
          if (j.index_version) c.versions.add(j.index_version);
        } catch { /* counted by status only */ }
      },
    }],
  });
  inst.on("response", (_client, status, _bytes, ms) => {
    c.responses++;
    c.latencies.push(ms);
    if (status >= 200 && status <= 299) c.ok++;
    else c.non2xx[status] = (c.non2xx[status] ?? 0) + 1;
  });
  inst.on("reqError", (err) => {
    if (/timed out/.test(err.message)) c.timeouts++;
    else c.socketErrors++;
  });
  return { counters: c, done: Promise.resolve(inst), stop: () => inst.stop() };
}
