/**
 * Load suite (`apfa bench serve --load`): the seed's load test, repeatable. `apfa serve` and the raw node:http
 * baseline (bench/child/raw-server.ts) over the same 100k × 384 flat index, at 1k and 10k open connections,
 * each request a query drawn by Zipf rank (s = 1.1) from 10k distinct corpus-template queries; apfa also with
 * 10 hot swaps published during the run. Load comes from several autocannon processes (bench/child/load-gen.ts),
 * every process with its descriptor limit raised. Both servers run with 1, 2, … processes up to the core
 * count (at most 4), `apfa serve --processes N` and the raw server under node:cluster alike. Per cell:
 * answers/s, 2xx latency percentiles, 503s split into those the server counted (`apfa_overload_rejected_total`)
 * and any others, socket errors, the response cache's hit rate, and the peak RSS and PSS summed over the
 * server's processes; then how throughput scales with processes and what memory each extra process adds
 * (`scalingRatios` in load-report.ts). `--quick`: one process, 200 connections, a 10k index, 10 s per cell.
 * @module
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { LoadGenArgs, LoadGenResult } from "../child/load-gen.ts";
import { benchFile, saveChart, spawnTs, waitMessage, type BenchContext, type SuiteOutput } from "../lib.ts";
import { lineChart } from "../svg.ts";
import { querySet } from "../zipf.ts";
import { loadCellTables, type Cell } from "./load-report.ts";
import { allProcessesReady, firstOk, publish, startApfa, startRaw, swapCounts, versionFactory, waitVersion, withServeBench, writeFiles, type Ctx, type Version } from "./serve.ts";

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
export function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "gm"))) sum += Number(m[1]);
  return sum;
}

/** The largest value among every series of a gauge (one per process under `--processes N`), or 0. */
function metricMax(text: string, name: string): number {
  let max = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "gm"))) max = Math.max(max, Number(m[1]));
  return max;
}

/**
 * The server's counters, summed over its processes; its event-loop delay p99 (the worst process's) covers the
 * time since the previous /metrics read.
 */
async function serverCounters(base: string): Promise<{ hits: number; misses: number; rejected: number; loopP99Ms: number }> {
  const res = await fetch(`${base}/metrics`);
  const text = await res.text();
  // A failed read would count as zeros and skew every figure taken from it.
  if (!res.ok) throw new Error(`[apfa] [bench:load] ${base}/metrics answered ${res.status}: ${text.slice(0, 200)}`);
  return {
    hits: metricSum(text, "apfa_cache_hits_total"),
    misses: metricSum(text, "apfa_cache_misses_total"),
    rejected: metricSum(text, "apfa_overload_rejected_total"),
    loopP99Ms: metricMax(text, "apfa_process_nodejs_eventloop_lag_p99_seconds") * 1000,
  };
}

/**
 * `pid` and every process below it (a supervisor and the processes it forked). Built from each process's parent
 * in /proc/<pid>/stat, since /proc/<pid>/task/<tid>/children needs a kernel option not every host has.
 */
function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const parent = statFields(Number(entry))?.[1];
    if (parent !== undefined) children.set(Number(parent), [...(children.get(Number(parent)) ?? []), Number(entry)]);
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]) ?? []));
  return tree;
}

/** /proc/<pid>/stat's fields after the command name (state is [0], parent [1], utime [11], stime [12]), or undefined once the process is gone. */
function statFields(pid: number): string[] | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ");
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) the processes have used so far; Linux counts them in ticks of 1/100 s. */
function cpuSeconds(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    const f = statFields(pid);
    if (f) sum += (Number(f[11]) + Number(f[12])) / 100;
  }
  return sum;
}

/** A `kB` field of a /proc file (`VmRSS` of status, `Pss` of smaps_rollup), or NaN when it cannot be read. */
function procKb(file: string, field: string): number {
  try {
    return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(fs.readFileSync(file, "utf8"))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

/** What {@link memorySampler} reports: peaks of the sums over the server's processes, and the cores they kept busy. */
export interface ServerUse {
  /** Largest sum of resident sets (VmRSS) over the server's processes, MiB; counts pages they share once per process. */
  rssMiB: number;
  /** Largest sum of proportional set sizes (Pss of /proc/<pid>/smaps_rollup), MiB: shared pages split among their sharers, so the sum is what the server holds; NaN where the kernel lacks smaps_rollup. */
  pssMiB: number;
  /**
   * With `filesUnder`: the largest sum of the PSS of mapped files under it (the served versions' index files), MiB;
   * the part of {@link pssMiB} that is the index when the engine maps it (0 when it reads it into the heap).
   */
  filesPssMiB?: number;
  /** Processes in the server's tree when sampling ended (with `--processes N` > 1: the supervisor and N). */
  treeSize: number;
  cores: number;
}

/** Pss of every mapping of `file` (a /proc/<pid>/smaps), and of those mapping a file whose path starts with `under`, kB. */
function smapsPss(file: string, under: string): { all: number; files: number } {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return { all: NaN, files: NaN };
  }
  let all = 0;
  let files = 0;
  let inside = false;
  for (const line of text.split("\n")) {
    // A mapping's header: "<from>-<to> <perms> <offset> <dev> <inode>   <path>"; its fields follow, "Pss:   12 kB".
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) inside = head[1].startsWith(under);
    else if (line.startsWith("Pss:")) {
      const kb = Number(/(\d+)/.exec(line)?.[1] ?? 0);
      all += kb;
      if (inside) files += kb;
    }
  }
  return { all, files };
}

/**
 * Samples the memory of the server's whole process tree (`pid` and, with `--processes N`, the N processes it
 * forked) every 250 ms; `stop()` returns the largest sums and the cores the tree kept busy. With `filesUnder`
 * (the server's version cache) it also splits out the PSS of the index files mapped from there.
 */
export function memorySampler(pid: number | undefined, filesUnder?: string): { stop(): ServerUse } {
  const tree0 = pid === undefined ? [] : processTree(pid);
  const hasPss = fs.existsSync("/proc/self/smaps_rollup");
  let tree = tree0;
  let rss = 0;
  let pss = hasPss ? 0 : NaN;
  let filesPss = 0;
  const cpu0 = cpuSeconds(tree0);
  const t0 = performance.now();
  const read = () => {
    if (pid !== undefined) tree = processTree(pid); // again each time: a process that died and was restarted counts
    let r = 0;
    let p = 0;
    let f = 0;
    for (const x of tree) {
      r += procKb(`/proc/${x}/status`, "VmRSS");
      if (filesUnder !== undefined) {
        const both = smapsPss(`/proc/${x}/smaps`, filesUnder);
        p += both.all;
        f += both.files;
      } else if (hasPss) p += procKb(`/proc/${x}/smaps_rollup`, "Pss");
    }
    // NaN: a process ended between listing and reading; that sample is skipped.
    if (!Number.isNaN(r)) rss = Math.max(rss, r / 1024);
    if (!Number.isNaN(p)) pss = Math.max(pss, p / 1024);
    if (!Number.isNaN(f)) filesPss = Math.max(filesPss, f / 1024);
  };
  read();
  const timer = setInterval(read, 250);
  return {
    stop: () => {
      clearInterval(timer);
      read();
      const files = filesUnder !== undefined && hasPss ? { filesPssMiB: filesPss } : {};
      return { rssMiB: rss, pssMiB: pss, ...files, treeSize: tree.length, cores: (cpuSeconds(tree0) - cpu0) / ((performance.now() - t0) / 1000) };
    },
  };
}

/** The load suite: every cell's run, then the table, ratios and chart ({@link loadCellTables}). */
export async function loadSuite(ctx: BenchContext): Promise<SuiteOutput> {
  const q = ctx.quick;
  const n = q ? 10_000 : 100_000;
  const connCounts = q ? [200] : [1_000, 10_000];
  const durationS = q ? 10 : 30;
  const swaps = q ? 3 : 10;
  // Multi-process serving is a dimension of its own: each entry starts both servers with that many processes
  // (1 up to the cores, at most 4); quick mode keeps to one.
  const processCounts = q ? [1] : Array.from({ length: Math.min(os.availableParallelism(), 4) }, (_, i) => i + 1);
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
      const apfa = await startApfa(c, `load-p${processes}`, { processes, fdLimit: FD_LIMIT });
      const rawDir = writeFiles(path.join(dir, "raw"), first);
      try {
        await allProcessesReady(apfa.base, processes, apfa.t0);
        const headers = { authorization: `Bearer ${token}` };
        // Every measured run starts on a version new to a server that has been in service: a fresh one would warm
        // it with the most asked questions of the traffic before it (server.cache.warm_on_swap), and the first run
        // has none before it. So the same traffic runs unmeasured first, for a third of a run.
        ctx.log(`apfa /generate-advice, ${connCounts[0]} connections, unmeasured traffic before the runs`);
        await drive(c, { durationS: Math.ceil(durationS / 3), bodiesFile, zipfS: ZIPF_S, url: apfa.base, route: "/generate-advice", headers }, connCounts[0], 3);
        for (const conns of connCounts) {
          const common = { durationS, bodiesFile, zipfS: ZIPF_S };
          // The raw server has no admission gate: when its run ends it still holds every request it has read and
          // would search them for many seconds, on the cores the next run needs. So it lives for its run only.
          const raw = await startRaw(c, rawDir, { processes, fdLimit: FD_LIMIT });
          try {
            // Its primary reports ready once every process listens (connections made earlier would all go to the first).
            await waitMessage(raw.child, (m) => (m && typeof m === "object" && "ready" in m ? true : undefined));
            await firstOk(`${raw.base}/search`, { method: "POST", body: JSON.stringify({ query: "warm up", k: 5 }) }, raw.t0);
            ctx.log(`raw /search, ${conns} connections`);
            const rawUse = memorySampler(raw.child.pid);
            const r = await drive(c, { ...common, url: raw.base, route: "/search", headers: {} }, conns, 1);
            cells.push({ server: "raw", processes, conns, swaps: 0, result: r, counted503: 0, cacheHits: 0, cacheMisses: 0, ...rawUse.stop() });
          } finally {
            await raw.stop();
          }
          for (const withSwaps of [false, true]) {
            // A fresh version first, so no answer cached for the version served before carries over (the cache is
            // keyed by version); the server warms it with the most asked questions of the traffic so far.
            const fresh = await make(tweak++);
            await publish(p, fresh);
            await waitVersion(apfa.base, fresh.manifest.version, 0);
            const versions: Version[] = [];
            for (let i = 0; withSwaps && i < swaps; i++) versions.push(await make(tweak++));
            ctx.log(`apfa /generate-advice, ${conns} connections${withSwaps ? `, ${swaps} swaps` : ""}`);
            const swapsBefore = await swapCounts(apfa.base);
            const before = await serverCounters(apfa.base); // last /metrics read before the run: the delay monitor restarts here
            const use = memorySampler(apfa.child.pid, apfa.cacheDir);
            const swapper = async () => {
              for (const v of versions) {
                await new Promise((res) => setTimeout(res, (durationS * 1000) / (swaps + 1)));
                await publish(p!, v);
              }
            };
            const [res] = await Promise.all([drive(c, { ...common, url: apfa.base, route: "/generate-advice", headers }, conns, 2), swapper()]);
            const used = use.stop();
            const after = await serverCounters(apfa.base);
            const swapsDuring = (await swapCounts(apfa.base)).success - swapsBefore.success;
            const settledBefore = swapsBefore.success + swapsBefore.superseded;
            const settled = withSwaps ? (await waitVersion(apfa.base, versions.at(-1)!.manifest.version, settledBefore + swaps)) - settledBefore : 0;
            const superseded = (await swapCounts(apfa.base)).superseded - swapsBefore.superseded;
            const applied = settled - superseded;
            cells.push({ server: "apfa", processes, conns, swaps: applied, result: res, counted503: after.rejected - before.rejected, cacheHits: after.hits - before.hits, cacheMisses: after.misses - before.misses, loopP99Ms: after.loopP99Ms, swapsDuring, swapsSuperseded: superseded, ...used, swapsPublished: versions.length });
          }
        }
      } finally {
        await apfa.stop();
      }
    }
    const out = loadCellTables(cells, { n, durationS, queries: queries.length, zipfS: ZIPF_S, swaps, indexBytes: first.files[first.manifest.main].byteLength });
    out.charts.push(saveChart(ctx, "serve-load", "2xx answers/s at 1k-10k connections, Zipf query mix", lineChart({
      title: `2xx answers/s, ${n / 1000}k index, Zipf s = ${ZIPF_S}`, xLabel: "connections (log scale)", yLabel: "2xx answers/s", logX: true,
      series: processCounts.flatMap((processes) => {
        const tag = processCounts.length > 1 ? `, ${processes} process${processes > 1 ? "es" : ""}` : "";
        const points = (pick: (x: Cell) => boolean) => cells.filter((x) => x.processes === processes && pick(x)).map((x): [number, number] => [x.conns, x.result.okMs.length / x.result.durationS]);
        return [
          { name: `raw /search${tag}`, points: points((x) => x.server === "raw") },
          { name: `apfa /generate-advice${tag}`, points: points((x) => x.server === "apfa" && !x.swapsPublished) },
          { name: `apfa + ${swaps} swaps${tag}`, points: points((x) => x.server === "apfa" && !!x.swapsPublished) },
        ];
      }),
    })));
    return out;
  });
}
