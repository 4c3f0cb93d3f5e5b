/**
 * Load suite (`apfa bench serve --load`): the seed's load test, repeatable. `apfa serve` and the raw node:http
 * baseline (bench/child/raw-server.ts) over the same 100k × 384 flat index, at 1k and 10k open connections,
 * each request a query drawn by Zipf rank (s = 1.1) from 10k distinct corpus-template queries; apfa also with
 * 10 hot swaps published during the run. Load comes from several autocannon processes (bench/child/load-gen.ts),
 * every process with its descriptor limit raised. Per cell: answers/s, 2xx latency percentiles, 503s split
 * into those the server counted (`apfa_overload_rejected_total`) and any others, socket errors, the response
 * cache's hit rate and the server's peak RSS. `--quick`: 200 connections, a 10k index, 10 s per cell.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { LoadGenArgs, LoadGenResult } from "../child/load-gen.ts";
import { benchFile, saveChart, spawnTs, waitMessage, type BenchContext, type SuiteOutput } from "../lib.ts";
import { lineChart } from "../svg.ts";
import { querySet } from "../zipf.ts";
import { loadCellTables, type Cell } from "./load-report.ts";
import { firstOk, publish, startApfa, startRaw, swapCount, versionFactory, waitVersion, withServeBench, writeFiles, type Ctx, type Version } from "./serve.ts";

const FD_LIMIT = 65_536;
/** Sockets per autocannon process: one Node process drives a few thousand well, not ten thousand. */
const CONNS_PER_GENERATOR = 2_500;
const ZIPF_S = 1.1;

/** Drives `conns` connections for `durationS` from enough generator processes; merges their results. */
async function drive(c: Ctx, args: Omit<LoadGenArgs, "connections" | "seed">, conns: number, seed: number): Promise<LoadGenResult> {
  const n = Math.ceil(conns / CONNS_PER_GENERATOR);
  const parts = await Promise.all(Array.from({ length: n }, (_, i) => {
    const share = Math.floor(conns / n) + (i < conns % n ? 1 : 0);
    const child = spawnTs(benchFile("child/load-gen.ts"), [JSON.stringify({ ...args, connections: share, seed: seed * 100 + i })], { log: c.log, fdLimit: FD_LIMIT });
    return waitMessage(child, (m) => (m && typeof m === "object" && "okMs" in m ? (m as LoadGenResult) : undefined), (args.durationS + 120) * 1000);
  }));
  const statuses: Record<string, number> = {};
  const errorCodes: Record<string, number> = {};
  for (const p of parts) for (const [k, v] of Object.entries(p.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  for (const p of parts) for (const [k, v] of Object.entries(p.errorCodes)) errorCodes[k] = (errorCodes[k] ?? 0) + v;
  return {
    durationS: Math.max(...parts.map((p) => p.durationS)),
    total: parts.reduce((a, p) => a + p.total, 0),
    errors: parts.reduce((a, p) => a + p.errors, 0),
    timeouts: parts.reduce((a, p) => a + p.timeouts, 0),
    errorCodes,
    statuses,
    okMs: parts.flatMap((p) => p.okMs),
    rejectedMs: parts.flatMap((p) => p.rejectedMs),
  };
}

/** Sum of every series of a counter in a Prometheus text exposition. */
function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "gm"))) sum += Number(m[1]);
  return sum;
}

/** The server's counters; its event-loop delay p99 covers the time since the previous /metrics read. */
async function serverCounters(base: string): Promise<{ hits: number; misses: number; rejected: number; loopP99Ms: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return {
    hits: metricSum(text, "apfa_cache_hits_total"),
    misses: metricSum(text, "apfa_cache_misses_total"),
    rejected: metricSum(text, "apfa_overload_rejected_total"),
    loopP99Ms: metricSum(text, "apfa_process_nodejs_eventloop_lag_p99_seconds") * 1000,
  };
}

/** CPU seconds (user + system) a process has used so far; Linux counts them in ticks of 1/100 s. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Samples a process's resident set every 250 ms; `stop()` returns the largest sample in MiB and the cores it kept busy. */
function rssSampler(pid: number | undefined): { stop(): { rssMiB: number; cores: number } } {
  let peak = 0;
  const cpu0 = cpuSeconds(pid);
  const t0 = performance.now();
  const read = () => {
    try {
      const kb = Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
      peak = Math.max(peak, kb / 1024);
    } catch {
      // the process is gone; keep the last peak
    }
  };
  read();
  const timer = setInterval(read, 250);
  return { stop: () => (clearInterval(timer), read(), { rssMiB: peak, cores: (cpuSeconds(pid) - cpu0) / ((performance.now() - t0) / 1000) }) };
}

/** The load suite: every cell's run, then the table, ratios and chart ({@link loadCellTables}). */
export async function loadSuite(ctx: BenchContext): Promise<SuiteOutput> {
  const q = ctx.quick;
  const n = q ? 10_000 : 100_000;
  const connCounts = q ? [200] : [1_000, 10_000];
  const durationS = q ? 10 : 30;
  const swaps = q ? 3 : 10;
  // Multi-process serving is a dimension of its own: each entry starts the server with that many processes.
  const processCounts = [1];
  return withServeBench(ctx, "load", async ({ c, dir, p, token }) => {
    const queries = querySet(q ? 2_000 : 10_000);
    const bodiesFile = path.join(dir, "bodies.json");
    fs.writeFileSync(bodiesFile, JSON.stringify(queries.map((query) => JSON.stringify({ query, k: 5 }))));
    ctx.log(`building ${n / 1000}k versions`);
    const make = await versionFactory(n);
    let tweak = 0;
    const first = await make(tweak++);
    await publish(p, first);
    const cells: Cell[] = [];
    for (const processes of processCounts) {
      const apfa = await startApfa(c, `load-p${processes}`, FD_LIMIT);
      const rawDir = writeFiles(path.join(dir, "raw"), first);
      try {
        await firstOk(`${apfa.base}/ready`, {}, apfa.t0);
        const headers = { authorization: `Bearer ${token}` };
        for (const conns of connCounts) {
          const common = { durationS, bodiesFile, zipfS: ZIPF_S };
          // The raw server has no admission gate: when its run ends it still holds every request it has read and
          // would search them for many seconds, on the cores the next run needs. So it lives for its run only.
          const raw = await startRaw(c, rawDir, FD_LIMIT);
          try {
            await firstOk(`${raw.base}/search`, { method: "POST", body: JSON.stringify({ query: "warm up", k: 5 }) }, raw.t0);
            ctx.log(`raw /search, ${conns} connections`);
            const rawRss = rssSampler(raw.child.pid);
            const r = await drive(c, { ...common, url: raw.base, route: "/search", headers: {} }, conns, 1);
            cells.push({ server: "raw", processes, conns, swaps: 0, result: r, counted503: 0, cacheHits: 0, cacheMisses: 0, ...rawRss.stop() });
          } finally {
            await raw.stop();
          }
          for (const withSwaps of [false, true]) {
            // A fresh version first, so the cache (keyed by version) starts cold in every apfa run.
            const fresh = await make(tweak++);
            await publish(p, fresh);
            await waitVersion(apfa.base, fresh.manifest.version, 0);
            const versions: Version[] = [];
            for (let i = 0; withSwaps && i < swaps; i++) versions.push(await make(tweak++));
            ctx.log(`apfa /generate-advice, ${conns} connections${withSwaps ? `, ${swaps} swaps` : ""}`);
            const swapsBefore = await swapCount(apfa.base);
            const before = await serverCounters(apfa.base); // last /metrics read before the run: the delay monitor restarts here
            const rss = rssSampler(apfa.child.pid);
            const swapper = async () => {
              for (const v of versions) {
                await new Promise((res) => setTimeout(res, (durationS * 1000) / (swaps + 1)));
                await publish(p!, v);
              }
            };
            const [res] = await Promise.all([drive(c, { ...common, url: apfa.base, route: "/generate-advice", headers }, conns, 2), swapper()]);
            const use = rss.stop();
            const after = await serverCounters(apfa.base);
            const swapsDuring = (await swapCount(apfa.base)) - swapsBefore;
            const applied = withSwaps ? (await waitVersion(apfa.base, versions.at(-1)!.manifest.version, swapsBefore + swaps)) - swapsBefore : 0;
            cells.push({ server: "apfa", processes, conns, swaps: applied, result: res, counted503: after.rejected - before.rejected, cacheHits: after.hits - before.hits, cacheMisses: after.misses - before.misses, loopP99Ms: after.loopP99Ms, swapsDuring, ...use, swapsPublished: versions.length });
          }
        }
      } finally {
        await apfa.stop();
      }
    }
    const out = loadCellTables(cells, { n, durationS, queries: queries.length, zipfS: ZIPF_S, swaps });
    out.charts.push(saveChart(ctx, "serve-load", "2xx answers/s at 1k-10k connections, Zipf query mix", lineChart({
      title: `2xx answers/s, ${n / 1000}k index, Zipf s = ${ZIPF_S}`, xLabel: "connections (log scale)", yLabel: "2xx answers/s", logX: true,
      series: [
        { name: "raw /search", points: cells.filter((x) => x.server === "raw").map((x) => [x.conns, x.result.okMs.length / x.result.durationS]) },
        { name: "apfa /generate-advice", points: cells.filter((x) => x.server === "apfa" && !x.swapsPublished).map((x) => [x.conns, x.result.okMs.length / x.result.durationS]) },
        { name: `apfa + ${swaps} swaps`, points: cells.filter((x) => x.server === "apfa" && x.swapsPublished).map((x) => [x.conns, x.result.okMs.length / x.result.durationS]) },
      ],
    })));
    return out;
  });
}
