/**
 * What the soak concludes from its samples: RSS after the warm-up against RSS at the end, the least-squares
 * slope of RSS (and of the V8 heap and external memory) over the post-warm-up samples, a per-minute table,
 * the verdict, `soak.json` and an SVG chart of memory over time.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { num, percentile, printTable, type Table } from "../../bench/lib.ts";
import { lineChart } from "../../bench/svg.ts";
import type { Sample } from "./sampler.ts";

/** Least-squares line through (x, y); slope in y per x, r² its fit. */
export function regression(pts: Array<[number, number]>): { slope: number; intercept: number; r2: number } {
  const ok = pts.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const n = ok.length;
  if (n < 2) return { slope: NaN, intercept: NaN, r2: NaN };
  const mx = ok.reduce((a, [x]) => a + x, 0) / n;
  const my = ok.reduce((a, [, y]) => a + y, 0) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (const [x, y] of ok) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
    syy += (y - my) ** 2;
  }
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx, r2: syy === 0 ? 1 : (sxy * sxy) / (sxx * syy) };
}

export interface MemorySummary {
  warmup_s: number;
  /** Median RSS over the minute after the warm-up, and over the last minute (single samples swing by an index during swaps). */
  rss_after_warmup_mb: number;
  rss_end_mb: number;
  rss_first_sample_after_warmup_mb: number;
  rss_last_sample_mb: number;
  rss_max_mb: number;
  /** MB per minute over the post-warm-up samples. */
  rss_slope_mb_per_min: number;
  rss_slope_r2: number;
  heap_slope_mb_per_min: number;
  external_slope_mb_per_min: number;
  fds_start: number;
  fds_end: number;
  /** Largest served index (vectors + documents), for scale: growth of one index per soak would be a leak. */
  index_mb: number;
}

const med = (xs: number[]) => percentile(xs.filter(Number.isFinite), 50);

export function summariseMemory(samples: Sample[], warmupS: number): MemorySummary {
  const post = samples.filter((s) => s.t >= warmupS);
  const end = samples.at(-1)?.t ?? 0;
  const fit = (f: (s: Sample) => number) => regression(post.map((s) => [s.t / 60, f(s)]));
  const rss = fit((s) => s.rss_mb);
  return {
    warmup_s: warmupS,
    rss_after_warmup_mb: med(post.filter((s) => s.t < warmupS + 60).map((s) => s.rss_mb)),
    rss_end_mb: med(samples.filter((s) => s.t > end - 60).map((s) => s.rss_mb)),
    rss_first_sample_after_warmup_mb: post[0]?.rss_mb ?? NaN,
    rss_last_sample_mb: samples.at(-1)?.rss_mb ?? NaN,
    rss_max_mb: Math.max(...samples.map((s) => s.rss_mb).filter(Number.isFinite)),
    rss_slope_mb_per_min: rss.slope,
    rss_slope_r2: rss.r2,
    heap_slope_mb_per_min: fit((s) => s.heap_used_mb).slope,
    external_slope_mb_per_min: fit((s) => s.external_mb).slope,
    fds_start: post[0]?.fds ?? NaN,
    fds_end: samples.at(-1)?.fds ?? NaN,
    index_mb: Math.max(...samples.map((s) => s.index_mb).filter(Number.isFinite)),
  };
}

/** One row per minute: medians of its samples, and requests/errors/swaps during it. */
export function minuteTable(samples: Sample[]): Table {
  const rows: Table["rows"] = [];
  let prev: Sample | undefined;
  for (let m = 0; ; m++) {
    const inMin = samples.filter((s) => s.t >= m * 60 && s.t < (m + 1) * 60);
    if (!inMin.length) break;
    const last = inMin.at(-1)!;
    const secs = last.t - (prev?.t ?? 0);
    rows.push([
      m + 1, num(med(inMin.map((s) => s.rss_mb)), 1), num(Math.max(...inMin.map((s) => s.rss_mb)), 1), num(med(inMin.map((s) => s.heap_used_mb)), 1),
      num(med(inMin.map((s) => s.external_mb)), 1), num((last.responses - (prev?.responses ?? 0)) / (secs || 1), 0),
      last.errors - (prev?.errors ?? 0), last.swaps, last.fds, inMin.some((s) => Number.isFinite(s.worker_rss_mb ?? NaN)) ? "rebuild" : "",
    ]);
    prev = last;
  }
  return {
    title: "Server per minute (medians of the 5 s samples)",
    columns: ["min", "RSS MB", "max RSS MB", "heap MB", "external MB", "req/s", "errors", "swaps (total)", "fds", ""],
    rows,
  };
}

export function rssChart(samples: Sample[], m: MemorySummary, title: string): string {
  const series = (name: string, f: (s: Sample) => number | undefined) => ({
    name,
    points: samples.map((s) => [Math.round((s.t / 60) * 100) / 100, f(s) ?? NaN] as [number, number]).filter(([, v]) => Number.isFinite(v)),
  });
  return lineChart({
    title,
    xLabel: "minutes since the traffic started",
    yLabel: "MiB",
    series: [
      series("server RSS", (s) => s.rss_mb),
      series("V8 heap used", (s) => s.heap_used_mb),
      series("external (buffers)", (s) => s.external_mb),
      series("rebuild worker RSS", (s) => s.worker_rss_mb),
    ].filter((s) => s.points.length),
    refLine: { y: m.rss_after_warmup_mb, label: `RSS after warm-up ${num(m.rss_after_warmup_mb, 0)} MiB` },
  });
}

export function writeOutputs(file: string, chartFile: string, result: unknown, svg: string): void {
  for (const f of [file, chartFile]) fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + "\n");
  fs.writeFileSync(chartFile, svg);
}

export { printTable };
