/**
 * The load suite's table and ratios, from its cells (one server × processes × connections × swaps run each).
 * A 503 the server counted in `apfa_overload_rejected_total` is an answer (the admission gate's fast refusal);
 * every other non-2xx, socket error or timeout is an error.
 * @module
 */
import type { LoadGenResult } from "../child/load-gen.ts";
import { num, percentile, ratioText, type Ratio, type SuiteOutput, type Table } from "../lib.ts";

/** One measured run. */
export interface Cell {
  server: "raw" | "apfa";
  processes: number;
  conns: number;
  /** Swaps the server applied during the run. */
  swaps: number;
  /** Of `swaps`, those applied before the load ended (the rest landed while the suite waited afterwards). */
  swapsDuring?: number;
  /** Versions published during the run that the server dropped because a newer one came first (`--processes N` only). */
  swapsSuperseded?: number;
  /** Versions published during the run (0 or undefined: the no-swap run). */
  swapsPublished?: number;
  result: LoadGenResult;
  /** The server's own count of overload 503s during the run. */
  counted503: number;
  cacheHits: number;
  cacheMisses: number;
  /** Peak of the summed resident sets of the server's processes (pages they share count once per process). */
  rssMiB: number;
  /** Peak of the summed proportional set sizes (shared pages split among their sharers); NaN where unavailable. */
  pssMiB: number;
  /** The part of {@link pssMiB} that is the served versions' mapped index files (apfa only; see memorySampler). */
  filesPssMiB?: number;
  /** Processes in the server's tree (1, or a supervisor and `processes` serving ones). */
  treeSize: number;
  /** CPU cores the server kept busy during the run (user + system seconds ÷ wall seconds). */
  cores: number;
  /** The server's event-loop delay p99 over the run (prom-client's monitor, reset by each /metrics read). */
  loopP99Ms?: number;
}

interface Setup {
  n: number;
  durationS: number;
  queries: number;
  zipfS: number;
  swaps: number;
  /** Bytes of the index file each serving process loads (the yardstick of the memory goal). */
  indexBytes: number;
}

const okRate = (c: Cell) => c.result.okMs.length / c.result.durationS;
const seen503 = (c: Cell) => c.result.statuses["503"] ?? 0;
const non2xx = (c: Cell) => Object.entries(c.result.statuses).filter(([s]) => !s.startsWith("2")).reduce((a, [, v]) => a + v, 0);
/** Non-2xx answers that are not 503s the server counted. */
const otherNon2xx = (c: Cell) => non2xx(c) - Math.min(seen503(c), c.counted503);
/** Requests with no response at all (autocannon counts timeouts among its errors). */
const socketErrors = (c: Cell) => c.result.errors;
const hitRate = (c: Cell) => (c.cacheHits + c.cacheMisses ? c.cacheHits / (c.cacheHits + c.cacheMisses) : NaN);
const pct = (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(1)} %` : "–");

/** The load table (one row per cell) and, per apfa cell, its ratios with the issue's goals. */
export function loadCellTables(cells: Cell[], s: Setup): SuiteOutput {
  const raw = (c: Cell) => cells.find((x) => x.server === "raw" && x.conns === c.conns && x.processes === c.processes);
  const table: Table = {
    title: `Load: ${s.n / 1000}k × 384 flat index, ${s.durationS} s per run, queries drawn by Zipf rank (s = ${s.zipfS}) from ${s.queries.toLocaleString("en-US")} distinct ones`,
    columns: ["server", "processes", "connections", "swaps applied", "answers/s", "2xx/s", "2xx/s ÷ raw", "2xx p50 ms", "2xx p95 ms", "2xx p99 ms", "503 (counted)", "503 p50 ms", "other non-2xx", "no response (of which timeouts)", "cache hit rate", "server CPU cores", "event-loop delay p99 ms", "peak RSS MiB (sum over processes)", "peak PSS MiB (sum over processes)", "of which mapped index files, peak PSS MiB"],
    rows: cells.map((c) => [
      c.server === "raw" ? "raw /search" : "apfa /generate-advice", c.processes, c.conns.toLocaleString("en-US"), c.server === "raw" ? "–" : c.swapsPublished ? `${c.swaps} of ${c.swapsPublished} (${c.swapsDuring ?? "?"} during the run${c.swapsSuperseded ? `, ${c.swapsSuperseded} superseded` : ""})` : "–",
      num(c.result.total / c.result.durationS), num(okRate(c)), c.server === "raw" ? "1.00×" : ratioText(okRate(c) / (raw(c) ? okRate(raw(c)!) : NaN)),
      num(percentile(c.result.okMs, 50)), num(percentile(c.result.okMs, 95)), num(percentile(c.result.okMs, 99)),
      c.server === "raw" ? seen503(c) : `${seen503(c)} (${c.counted503})`, c.result.rejectedMs.length ? num(percentile(c.result.rejectedMs, 50)) : "–",
      otherNon2xx(c), `${socketErrors(c)} (${c.result.timeouts})`, c.server === "raw" ? "–" : pct(hitRate(c)), num(c.cores, 2), c.loopP99Ms === undefined ? "–" : num(c.loopP99Ms), num(c.rssMiB, 0), Number.isFinite(c.pssMiB) ? num(c.pssMiB, 0) : "–",
      c.filesPssMiB === undefined ? "–" : num(c.filesPssMiB, 0),
    ]),
    note: "raw = node:http + the same hash embedder + usearch exactSearch + hits JSON, no cache and no admission gate; apfa /generate-advice adds JWT, validation, the response cache (in-process LRU, keyed by version; under several processes an answer one computes is sent to the others), the admission gate (64 active, 1024 queued, 0.5 s wait; 8 searches at a time within that wait; cached and in-flight answers skip it), index leases, metrics and the template generator. Each apfa run starts on a version of its own, published just before it to a server that has served this traffic (an unmeasured third of a run comes before the first), so no cached answer carries over and the server warms the version with its most asked recent questions (`server.cache.warm_on_swap` 256, at most 2 s), as it does each version swapped in during a run; a swap published during the run may be applied only after it. Load generators (autocannon, one process per 2,500 connections) run on the same machine. processes = serving processes (`apfa serve --processes N`; the raw server forks as many with node:cluster); above 1 a supervisor that serves nothing comes on top, and memory and CPU are summed over all of them. RSS counts pages the processes share (code, the mapped index) once per process; PSS splits each shared page among its sharers, so its sum is what the server holds. apfa's flat engine maps its vectors from the version's file (one copy in the page cache for every process) where its native helper is built; the last column is the PSS of those mapped files, at most two versions' worth during a swap; the raw server reads the vectors into each process's heap.",
  };
  const ratios: Ratio[] = [];
  for (const c of cells.filter((x) => x.server === "apfa")) {
    const tag = `p${c.processes}/c${c.conns}${c.swapsPublished ? "/swaps" : ""}`;
    const what = `${c.conns.toLocaleString("en-US")} connections${c.swapsPublished ? `, ${s.swaps} swaps` : ""}`;
    if (raw(c)) ratios.push({ id: `load/${tag}/ok_rps`, label: `2xx answers/s ÷ raw, ${what}`, value: okRate(c) / okRate(raw(c)!), better: "higher" });
    ratios.push({ id: `load/${tag}/p95_s`, label: `2xx p95 (seconds), ${what}`, value: percentile(c.result.okMs, 95) / 1000, better: "lower", goal: 3 });
    ratios.push({ id: `load/${tag}/errors`, label: `errors other than counted 503s, ${what}`, value: otherNon2xx(c) + socketErrors(c), better: "lower", goal: 0 });
    if (!c.swapsPublished) ratios.push({ id: `load/${tag}/cache_hit_rate`, label: `cache hit rate, ${what}`, value: hitRate(c), better: "higher", goal: 0.8 });
    else ratios.push({ id: `load/${tag}/swaps_missed`, label: `swaps neither applied nor superseded by a newer version, of ${s.swaps}, ${what}`, value: s.swaps - c.swaps - (c.swapsSuperseded ?? 0), better: "lower", goal: 0 });
  }
  ratios.push(...scalingRatios(cells, s));
  const notes = cells.filter((c) => c.result.errors).map((c) =>
    `${c.server} at ${c.conns.toLocaleString("en-US")} connections${c.swapsPublished ? " with swaps" : ""}, requests with no response by cause: ${Object.entries(c.result.errorCodes).map(([k, v]) => `${k} ${v}`).join(", ")}`);
  return { tables: [table], ratios, charts: [], notes };
}

/**
 * What more processes buy, per connection count, from the runs without swaps: 2xx answers/s at N processes ÷
 * (N × at 1), for apfa (goal ≥ 0.8) and for the raw server (no goal: it shows what the machine allows), and
 * the memory each process beyond the first adds, as a share of the index file (goal ≤ 0.1). Memory is the PSS
 * sum where the kernel reports it, else the RSS sum (which counts shared pages in every process).
 */
export function scalingRatios(cells: Cell[], s: Pick<Setup, "indexBytes">): Ratio[] {
  const ratios: Ratio[] = [];
  const plain = cells.filter((c) => !c.swapsPublished);
  for (const conns of [...new Set(plain.map((c) => c.conns))]) {
    const at = (server: Cell["server"], processes: number) => plain.find((c) => c.server === server && c.conns === conns && c.processes === processes);
    const counts = [...new Set(plain.filter((c) => c.conns === conns).map((c) => c.processes))].sort((a, b) => a - b);
    const what = `${conns.toLocaleString("en-US")} connections`;
    for (const n of counts.filter((x) => x > 1)) {
      for (const server of ["apfa", "raw"] as const) {
        const one = at(server, 1);
        const many = at(server, n);
        if (!one || !many) continue;
        const id = `load/c${conns}/${server === "raw" ? "raw_" : ""}scaling_${n}p`;
        const label = `${server === "raw" ? "raw /search" : "apfa /generate-advice"} 2xx answers/s at ${n} processes ÷ (${n} × at 1), ${what}`;
        ratios.push({ id, label, value: okRate(many) / (n * okRate(one)), better: "higher", ...(server === "apfa" ? { goal: 0.8 } : {}) });
      }
    }
    const top = counts.at(-1);
    const one = at("apfa", 1);
    const many = top && top > 1 ? at("apfa", top) : undefined;
    if (one && many && top) {
      const pss = Number.isFinite(one.pssMiB) && Number.isFinite(many.pssMiB);
      const mib = (c: Cell) => (pss ? c.pssMiB : c.rssMiB);
      ratios.push({
        id: `load/c${conns}/extra_process_rss_share`,
        label: `memory each process beyond the first adds ÷ index size (peak ${pss ? "PSS" : "RSS"} sums, 1 vs ${top} processes), ${what}`,
        value: ((mib(many) - mib(one)) * 2 ** 20) / (top - 1) / s.indexBytes,
        better: "lower",
        goal: 0.1,
        detail: `${num(mib(one), 0)} MiB at 1 process, ${num(mib(many), 0)} MiB at ${top}; index file ${num(s.indexBytes / 2 ** 20, 0)} MiB`,
      });
      // The index's own part: the mapped files' PSS, which sharing keeps flat however many processes map them. Not
      // reported when nothing was mapped (no native helper): the index was then in each heap, counted above.
      if (pss && one.filesPssMiB && many.filesPssMiB) {
        ratios.push({
          id: `load/c${conns}/extra_process_index_share`,
          label: `index-file memory each process beyond the first adds ÷ index size (peak PSS of the mapped version files, 1 vs ${top} processes), ${what}`,
          value: ((many.filesPssMiB - one.filesPssMiB) * 2 ** 20) / (top - 1) / s.indexBytes,
          better: "lower",
          goal: 0.1,
          detail: `${num(one.filesPssMiB, 0)} MiB at 1 process, ${num(many.filesPssMiB, 0)} MiB at ${top}`,
        });
      }
    }
  }
  return ratios;
}
