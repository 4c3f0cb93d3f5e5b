/**
 * Runs benchmark suites: prints each suite's tables and ratios, writes `bench/results/<suite>.json`, rewrites
 * the suite's section of the report with its charts, and optionally compares with (`--compare`) or replaces
 * (`--accept`) `bench/baseline.json`. Quick runs write under bench/results/quick/ and never touch the
 * committed report, charts or baseline.
 * @module
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { envInfo, goalMet, printTable, ROOT, type BenchContext, type Suite, type SuiteResult } from "./lib.ts";
import { printSummary, profileSelf, profilesIn, summarise } from "./profile.ts";
import { acceptBaseline, compareBaseline, readResults, SUITE_ORDER, writeReport } from "./report.ts";

export const SUITES: Record<string, () => Promise<Suite>> = {
  embedding: async () => (await import("./suites/embedding.ts")).embeddingSuite,
  queue: async () => (await import("./suites/queue.ts")).queueSuite,
  index: async () => (await import("./suites/index.ts")).indexSuite,
  ann: async () => (await import("./suites/ann.ts")).annSuite,
  million: async () => (await import("./suites/million.ts")).millionSuite,
  serve: async () => (await import("./suites/serve.ts")).serveSuite,
  load: async () => (await import("./suites/load.ts")).loadSuite,
  incremental: async () => (await import("./suites/incremental.ts")).incrementalSuite,
  quality: async () => (await import("./suites/quality.ts")).qualitySuite,
};

export interface BenchOptions {
  suites: string[];
  quick: boolean;
  large: boolean;
  /** `serve --load`: the serve suite's 1k/10k-connection load test (the `load` suite) instead of the serve suite. */
  load?: boolean;
  compare: boolean;
  accept: boolean;
  profile: boolean;
  /** Only rewrite the report from the saved results (after editing the hand-written parts, or the renderer). */
  reportOnly?: boolean;
}

export const BASELINE = path.join(ROOT, "bench/baseline.json");

/** Returns the exit code: 0 ok, 1 a suite failed or --compare found a regression, 2 usage. */
export async function runBench(opts: BenchOptions): Promise<number> {
  const unknown = opts.suites.filter((s) => !(s in SUITES));
  if (unknown.length) {
    console.error(`apfa bench: unknown suite ${unknown.map((s) => `"${s}"`).join(", ")}; suites: ${SUITE_ORDER.join(", ")}`);
    return 2;
  }
  if (opts.quick && opts.accept) {
    console.error("apfa bench: --accept takes a full run's ratios; drop --quick");
    return 2;
  }
  // `apfa bench index --large` is the FAISS comparison at 100k and 1M (the ann suite) and a 1M-document run
  // served (the million suite). `serve --load` is the load suite. A full run of every suite leaves load (10k
  // sockets, about 5 minutes) and million (about an hour) out unless asked for, while a quick run (CI)
  // includes their small forms.
  const chosen = opts.load ? [...new Set(opts.suites.length ? opts.suites.map((s) => (s === "serve" ? "load" : s)) : ["load"])] : opts.suites;
  const all = opts.quick ? SUITE_ORDER : SUITE_ORDER.filter((s) => s !== "load" && s !== "million");
  const names = !chosen.length ? all : opts.large && chosen.includes("index") ? [...new Set([...chosen, "ann", "million"])] : chosen;
  const resultsDir = path.join(ROOT, opts.quick ? "bench/results/quick" : "bench/results");
  const report = opts.quick ? path.join(resultsDir, "BENCHMARKS.md") : path.join(ROOT, "BENCHMARKS.md");
  const chartsDir = opts.quick ? path.join(resultsDir, "charts") : path.join(ROOT, "bench/charts");
  const load = os.loadavg()[0];
  if (!opts.quick && !opts.reportOnly && load > 1.5) console.error(`apfa bench: load average is ${load.toFixed(2)} on ${os.cpus().length} cores; numbers will be noisy`);

  const results: SuiteResult[] = [];
  let failed = 0;
  for (const name of opts.reportOnly ? [] : names) {
    const profileDir = opts.profile ? path.join(ROOT, "bench/results/profiles", `${name}-${Date.now()}`) : undefined;
    const logFile = path.join(ROOT, "bench/results/logs", `${name}${opts.quick ? ".quick" : ""}.log`);
    fs.mkdirSync(path.dirname(logFile), { recursive: true });
    fs.writeFileSync(logFile, "");
    const t0 = performance.now();
    const log = (m: string) => console.error(`[bench:${name}] ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s  ${m}`);
    const ctx: BenchContext = { quick: opts.quick, large: opts.large, chartsDir, profileDir, logFile, log };
    const env = envInfo();
    console.error(`[bench:${name}] ${opts.quick ? "quick" : "full"} run, load average ${env.load_start[0]}`);
    const stopProfile = profileDir ? await profileSelf(profileDir, "bench-parent") : undefined;
    try {
      const out = await (await SUITES[name]())(ctx);
      env.load_end = os.loadavg().map((x) => Math.round(x * 100) / 100);
      const r: SuiteResult = { suite: name, mode: opts.quick ? "quick" : "full", large: opts.large, env, duration_s: (performance.now() - t0) / 1000, ...out };
      results.push(r);
      fs.mkdirSync(resultsDir, { recursive: true });
      fs.writeFileSync(path.join(resultsDir, `${name}.json`), JSON.stringify(r, null, 2) + "\n");
      console.log(`\n=== ${name} (${r.duration_s.toFixed(0)} s) ===`);
      for (const t of out.tables) printTable(t);
      printTable({ title: "Ratios", columns: ["ratio", "value", "goal", "met"], rows: out.ratios.map((x) => [x.id, x.value.toFixed(3), x.goal === undefined ? "" : `${x.better === "higher" ? ">=" : "<="} ${x.goal}`, String(goalMet(x) ?? "")]) });
      for (const n of out.notes) console.log(`- ${n}`);
    } catch (err) {
      failed++;
      console.error(`[bench:${name}] failed: ${(err as Error).stack ?? err}\n(child process output: ${path.relative(process.cwd(), logFile)})`);
    }
    await stopProfile?.();
    if (profileDir) for (const f of profilesIn(profileDir)) printSummary(summarise(f));
  }
  // The report shows every suite's latest result of this mode, not only the suites run now.
  const latest = new Map(readResults(resultsDir).map((r) => [r.suite, r]));
  for (const r of results) latest.set(r.suite, r);
  if (latest.size) writeReport(report, [...latest.values()], path.relative(path.dirname(report), chartsDir) || ".");
  console.log(`\nreport: ${path.relative(process.cwd(), report)}; results: ${path.relative(process.cwd(), resultsDir)}/`);

  let code = failed ? 1 : 0;
  if (opts.compare) {
    const { table, worse } = compareBaseline(results, BASELINE);
    printTable(table);
    if (worse) {
      console.log(`${worse} ratio${worse > 1 ? "s are" : " is"} more than 20% worse than the baseline`);
      code = 1;
    }
  }
  if (opts.accept && !failed) {
    acceptBaseline(results, BASELINE);
    console.log(`baseline written: ${path.relative(process.cwd(), BASELINE)}`);
  }
  return code;
}
