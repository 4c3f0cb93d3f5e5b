/**
 * The cores one process's native search threads may use. A single process has them all; under
 * `apfa serve --processes N` the supervisor gives each process its share (cores ÷ N, at least 1) in
 * {@link CORE_SHARE_ENV}, and OpenMP's `OMP_NUM_THREADS` (FAISS) unless the environment sets it, so N processes'
 * threads add up to the cores instead of N times them: with 2 processes on 2 cores, FAISS's per-query threads
 * (parallel_mode 2) and usearch's per-scan threads ran 4 busy threads on 2 cores, and the 1M IVF version served
 * 163 requests/s with 2 processes (p95 137 ms); with the shares, 184/s (p95 116 ms).
 * @module
 */
import * as os from "node:os";

/** Set by the supervisor in each server process it forks: that process's share of the cores. */
export const CORE_SHARE_ENV = "APFA_CORE_SHARE";

/** This process's share of the cores when a supervisor set one, else 0 (every core). */
export function coreShare(env: Record<string, string | undefined> = process.env): number {
  const n = Number(env[CORE_SHARE_ENV]);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

/** The environment a supervisor of `processes` processes gives each one (an `OMP_NUM_THREADS` already set wins). */
export function coreShareEnv(processes: number, env: Record<string, string | undefined> = process.env, cores = os.availableParallelism()): Record<string, string> {
  const share = String(Math.max(1, Math.floor(cores / Math.max(1, processes))));
  return { [CORE_SHARE_ENV]: share, ...(env.OMP_NUM_THREADS ? {} : { OMP_NUM_THREADS: share }) };
}
