/**
 * Load through hot swaps, shared by the behavioural swap test (test/integration/server-hotswap.test.ts) and its
 * timed form in the fault suite: autocannon keeps connections busy on POST /search and records, per response,
 * when its request was sent, when it came back and which `index_version` answered it; the checks then hold each
 * answer against the swap times the server logs.
 * @module
 */
import { createRequire } from "node:module";
import type { ChildServer, Published } from "./server.ts";

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
export interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p97_5: number; p99: number; max: number; average: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  "2xx": number;
}
type Autocannon = ((opts: Record<string, unknown>) => PromiseLike<AutocannonResult> & { stop(): void }) & Record<string, unknown>;
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

/** One response: when its request was sent and answered (ms since epoch), its status and answering version. */
export interface Rec {
  start: number;
  end: number;
  status: number;
  version?: string;
}

const WORDS = ["credit card", "mortgage", "student loan", "car loan", "savings", "refinance", "debt", "rates", "offer", "customers"];

/** Starts the load; `recs` fills as responses arrive, `run` settles when the duration ends or `run.stop()`. */
export function searchLoad(opts: { url: string; token: string; connections: number; duration: number; timeout: number }) {
  let bodyVersion: string | undefined;
  const recs: Rec[] = [];
  const run = autocannon({
    url: opts.url,
    connections: opts.connections,
    duration: opts.duration,
    timeout: opts.timeout,
    requests: [{
      method: "POST",
      path: "/search",
      headers: { "content-type": "application/json", authorization: `Bearer ${opts.token}` },
      // Many distinct queries, so most requests search (a cache hit is still per version).
      setupRequest: (req) => ({ ...req, body: JSON.stringify({ query: `${WORDS[Math.floor(Math.random() * 10)]} ${Math.floor(Math.random() * 500)}`, k: 5 }) }),
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
  return { run, recs };
}

/** The server's own record of when each version became current (install() logs synchronously with the swap). */
export function swapTimeline(srv: ChildServer) {
  const installs = srv.logs.filter((l) => l.msg === "index version serving").map((l) => ({ version: String(l.version), at: Date.parse(l.time) }));
  const at = new Map(installs.map((x, i) => [x.version, { from: x.at, until: installs[i + 1]?.at ?? Infinity }]));
  return { installs, at };
}

/**
 * Every answer that was not 200, or came from a version that was not current at some moment between its request
 * being sent and its response arriving, or arrived before that version's publish began.
 */
export function staleAnswers(recs: Rec[], at: Map<string, { from: number; until: number }>, published: Published[]): string[] {
  const bad: string[] = [];
  for (const r of recs) {
    const when = r.version ? at.get(r.version) : undefined;
    if (r.status !== 200 || !when) bad.push(`status ${r.status} version ${r.version}`);
    else if (r.end < when.from) bad.push(`got ${r.version!.slice(0, 8)} at ${r.end}, before it was installed at ${when.from}`);
    else if (r.start > when.until) bad.push(`got ${r.version!.slice(0, 8)} for a request sent at ${r.start}, after it was replaced at ${when.until}`);
    else {
      const p = published.find((x) => x.version === r.version)!;
      if (r.end < p.before) bad.push(`got ${r.version!.slice(0, 8)} at ${r.end}, before its publish began at ${p.before}`);
    }
  }
  return bad;
}

/**
 * Requests in flight across each swap after the first install (each must be > 0 for the load to span it). Times
 * are whole milliseconds and a cached answer takes less than one, so a request sent or answered in the install's
 * millisecond counts: with strict bounds a run whose requests all took under 2 ms could count none.
 */
export function inFlightAcross(installs: Array<{ at: number }>, recs: Rec[]): number[] {
  return installs.slice(1).map((x) => recs.filter((r) => r.start <= x.at && r.end >= x.at).length);
}
