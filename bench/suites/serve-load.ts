/**
 * The serve suite's load generator (autocannon, in-process) and the tables and ratios built from its rows.
 * Every request carries a unique query so the server's response cache never answers; latency percentiles come
 * from every response's time (autocannon's own summary has no p95).
 * @module
 */
import { createRequire } from "node:module";
import { generateCorpus } from "../../examples/corpus.ts";
import { num, percentile, ratioText, type Ratio, type SuiteOutput, type Table } from "../lib.ts";

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: { total: number };
}
interface Instance extends PromiseLike<AutocannonResult> {
  on(event: "response", fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
}
type Autocannon = (opts: Record<string, unknown>) => Instance;
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

export interface LoadStats {
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  errors: number;
}

export interface LoadRow extends LoadStats {
  server: "raw" | "apfa";
  route: string;
  conns: number;
  /** Hot swaps applied during the run (0 = none published). */
  swaps: number;
}

const QUERIES = generateCorpus({ count: 300, seed: 11 }).map((d) => d.text.slice(0, 90));
let seq = 0;

export async function loadTest(base: string, route: string, conns: number, durationS: number, headers: Record<string, string>): Promise<LoadStats> {
  const times: number[] = [];
  const inst = autocannon({
    url: base,
    connections: conns,
    duration: durationS,
    requests: [{
      method: "POST",
      path: route,
      headers: { "content-type": "application/json", ...headers },
      setupRequest: (req: Record<string, unknown>) => ({ ...req, body: JSON.stringify({ query: `${QUERIES[seq % QUERIES.length]} ${seq++}`, k: 5 }) }),
    }],
  });
  inst.on("response", (_c, _s, _b, ms) => times.push(ms));
  const r = await inst;
  return {
    rps: r.requests.total / r.duration,
    p50: percentile(times, 50),
    p95: percentile(times, 95),
    p99: percentile(times, 99),
    errors: r.errors + r.timeouts + r.non2xx,
  };
}

/** The no-swap table (against raw), the swap table (against the same run without swaps) and their ratios. */
export function loadTables(rows: LoadRow[], swaps: number): SuiteOutput {
  const raw = (c: number) => rows.find((r) => r.server === "raw" && r.conns === c)!;
  const noSwap = (r: LoadRow) => rows.find((x) => x.server === "apfa" && x.route === r.route && x.conns === r.conns && x.swaps === 0)!;
  const plain = rows.filter((r) => r.server === "raw" || r.swaps === 0);
  const swapped = rows.filter((r) => r.server === "apfa" && r.swaps > 0);
  const load: Table = {
    title: "Load, 10k × 384 flat index, unique query per request (no cache hits)",
    columns: ["server", "route", "connections", "req/s", "÷ raw req/s", "p50 ms", "p95 ms", "p99 ms", "p99 ÷ raw", "errors"],
    rows: plain.map((r) => [r.server, r.route, r.conns, num(r.rps), ratioText(r.rps / raw(r.conns).rps), num(r.p50), num(r.p95), num(r.p99), ratioText(r.p99 / raw(r.conns).p99), r.errors]),
    note: "raw = node:http + the same hash embedder + usearch exactSearch + hits JSON; apfa adds JWT verification, validation, the response cache, index leases and metrics; /generate-advice also runs the template generator",
  };
  const hot: Table = {
    title: `The same with ${swaps} hot swaps published during each run (build_index's writeVersion → NOTIFY → download, verify, open, swap)`,
    columns: ["route", "connections", "swaps applied", "req/s", "÷ no-swap req/s", "p50 ms", "p95 ms", "p99 ms", "p99 ÷ no-swap", "errors"],
    rows: swapped.map((r) => [r.route, r.conns, r.swaps, num(r.rps), ratioText(r.rps / noSwap(r).rps), num(r.p50), num(r.p95), num(r.p99), ratioText(r.p99 / noSwap(r).p99), r.errors]),
    note: "errors = connection errors + timeouts + non-2xx responses",
  };
  const ratios: Ratio[] = [];
  for (const r of plain.filter((x) => x.server === "apfa")) {
    const route = r.route.slice(1);
    ratios.push({ id: `serve/${route}/c${r.conns}/rps`, label: `${r.route} req/s at ${r.conns} connections ÷ raw /search`, value: r.rps / raw(r.conns).rps, better: "higher" });
  }
  for (const r of swapped) {
    ratios.push({ id: `serve/${r.route.slice(1)}/c${r.conns}/swap_rps`, label: `${r.route} req/s during swaps ÷ without, ${r.conns} connections`, value: r.rps / noSwap(r).rps, better: "higher" });
  }
  ratios.push({ id: "serve/swap_errors", label: "errors during hot-swap runs (count)", value: swapped.reduce((a, r) => a + r.errors, 0), better: "lower", goal: 0 });
  ratios.push({ id: "serve/swaps_missed", label: `swaps not applied of ${swaps} per run (count)`, value: swapped.reduce((a, r) => a + Math.max(0, swaps - r.swaps), 0), better: "lower", goal: 0 });
  return { tables: [load, hot], ratios, charts: [], notes: [] };
}
