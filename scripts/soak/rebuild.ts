/**
 * The soak's full rebuild: a real `apfa worker --no-cron` child process, one run created with `createRun`
 * (as `apfa run` does), followed until it finishes, then the worker is stopped. The run embeds the project's
 * corpus, builds the index and publishes it, so the server swaps to a version made by the real pipeline.
 * @module
 */
import type { ChildProcess } from "node:child_process";
import pg from "pg";
import { spawnNode, stopChild } from "../../bench/lib.ts";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import { createRun, getRun, type RunRow } from "../../runtime/runs.ts";

export interface RebuildResult {
  run_id: string;
  status: string;
  /** Seconds since the traffic started. */
  started_t: number;
  finished_t: number;
  duration_s: number;
  docs_embedded: number;
  batches: number;
  index_version: string | null;
  error: string | null;
  worker_peak_rss_mb: number;
}

export interface Rebuild {
  /** The worker's pid while it runs (for the sampler). */
  pid(): number | undefined;
  done: Promise<RebuildResult>;
}

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function startRebuild(yaml: string, config: PipelineConfig, opts: { dbUrl: string; log: string; now: () => number; timeoutS: number; peakMiB: (pid: number) => number }): Rebuild {
  let worker: ChildProcess | undefined = spawnNode(["bin/apfa.mjs", "worker", "--no-cron", "-c", yaml], { log: opts.log, env: { APFA_LOG_LEVEL: "info", APFA_LOG_FORMAT: "json" } });
  const pool = new pg.Pool({ connectionString: opts.dbUrl, max: 1 });
  pool.on("error", () => {});
  const started = opts.now();
  let peak = NaN;
  const done = (async (): Promise<RebuildResult> => {
    try {
      // The jobs wait in the queue until the worker is up; no need to wait for its "worker ready" line.
      const id = await createRun(pool, config, "soak");
      const deadline = Date.now() + opts.timeoutS * 1000;
      let run: RunRow | undefined;
      for (;;) {
        run = await getRun(pool, id);
        if (worker?.pid) peak = Math.max(Number.isNaN(peak) ? 0 : peak, opts.peakMiB(worker.pid) || 0);
        if (run && FINAL.has(run.status)) break;
        if (worker && worker.exitCode !== null) throw new Error(`[apfa] [soak] the rebuild worker exited (code ${worker.exitCode}) before run ${id} finished; see ${opts.log}`);
        if (Date.now() > deadline) throw new Error(`[apfa] [soak] run ${id} still ${run?.status} after ${opts.timeoutS} s; see ${opts.log}`);
        await new Promise((r) => setTimeout(r, 500));
      }
      const finished = opts.now();
      return {
        run_id: id,
        status: run.status,
        started_t: started,
        finished_t: finished,
        duration_s: finished - started,
        docs_embedded: Number(run.docs_embedded),
        batches: run.batches_total ?? 0,
        index_version: run.index_version,
        error: run.error,
        worker_peak_rss_mb: peak,
      };
    } finally {
      const w = worker;
      worker = undefined;
      if (w) await stopChild(w);
      await pool.end().catch(() => {});
    }
  })();
  return { pid: () => worker?.pid, done };
}
