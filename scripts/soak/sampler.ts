/**
 * One sample of the server every few seconds: resident memory from `/proc/<pid>/status` (what the kernel
 * charges the process, whatever the allocator), and from the server's own `/metrics` the V8 heap, the memory
 * outside it (`external`, where the flat engine's vectors live), the swap counters and open file descriptors,
 * so RSS growth can be attributed to the heap, to index buffers or to neither (allocator fragmentation).
 * @module
 */
import * as fs from "node:fs";
import { errorCount, type TrafficCounters } from "./traffic.ts";

export interface Sample {
  /** Seconds since the traffic started. */
  t: number;
  rss_mb: number;
  heap_used_mb: number;
  external_mb: number;
  /** `apfa_index_memory_bytes`: the served index's vectors + documents. */
  index_mb: number;
  fds: number;
  swaps: number;
  swaps_refused: number;
  responses: number;
  errors: number;
  /** The rebuild worker's RSS while it runs. */
  worker_rss_mb?: number;
}

const MB = 1024 * 1024;

/** `VmRSS` (or another `/proc/<pid>/status` field) in MiB; NaN when the process is gone. */
export function procMiB(pid: number | undefined, field = "VmRSS"): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

function fdCount(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

/** The value of metric `name` in Prometheus text (summed over the label sets containing `labels`); NaN if absent. */
function metric(text: string, name: string, labels = ""): number {
  let sum = NaN;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || line.startsWith("#")) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith(" ") || rest.startsWith("{"))) continue;
    if (labels && !rest.includes(labels)) continue;
    sum = (Number.isNaN(sum) ? 0 : sum) + Number(rest.slice(rest.lastIndexOf(" ") + 1));
  }
  return sum;
}

export async function scrape(base: string): Promise<string> {
  const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) });
  return res.text();
}

export async function takeSample(base: string, pid: number, t: number, c: TrafficCounters, workerPid?: number): Promise<Sample> {
  const rss = procMiB(pid); // read first: the scrape itself allocates in the server
  const text = await scrape(base).catch(() => "");
  return {
    t,
    rss_mb: rss,
    heap_used_mb: metric(text, "apfa_process_nodejs_heap_size_used_bytes") / MB,
    external_mb: metric(text, "apfa_process_nodejs_external_memory_bytes") / MB,
    index_mb: metric(text, "apfa_index_memory_bytes") / MB,
    fds: fdCount(pid),
    swaps: metric(text, "apfa_swap_total", 'outcome="success"') || 0,
    swaps_refused: (metric(text, "apfa_swap_total", 'outcome="refused"') || 0) + (metric(text, "apfa_swap_total", 'outcome="failed"') || 0),
    responses: c.responses,
    errors: errorCount(c),
    ...(workerPid ? { worker_rss_mb: procMiB(workerPid) } : {}),
  };
}
