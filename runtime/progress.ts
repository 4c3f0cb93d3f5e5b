/**
 * Follows a run to its end: a live bar on a TTY (batches done/total, docs/s, ETA, then the index build's vectors
 * inserted when the engine reports them), plain lines otherwise.
 * Reads the run row (display only; the fan-in itself never polls).
 * @module
 */
import type pg from "pg";
import { ACTIVE_STATUSES, getRun, type RunRow } from "./runs.ts";

function fmtEta(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  if (s < 60) return `${Math.ceil(s)}s`;
  return `${Math.floor(s / 60)}m${String(Math.ceil(s % 60)).padStart(2, "0")}s`;
}

export function describeProgress(r: RunRow, now = Date.now()): { line: string; fraction: number } {
  const total = r.batches_total;
  const done = r.batches_done + r.batches_failed;
  const elapsed = r.started_at ? (now - r.started_at.getTime()) / 1000 : 0;
  const embedded = Number(r.docs_embedded);
  const rate = elapsed > 0 ? embedded / elapsed : 0;
  const fraction = total ? done / total : 0;
  const eta = total && done && r.status === "embedding" ? (elapsed / done) * (total - done) : NaN;
  const batches = total === null ? `${r.batches_done} batches (enumerating)` : `${done}/${total} batches`;
  const reuse = r.status === "pending" || r.status === "enumerating" ? "" : `  reused ${Number(r.docs_reused ?? 0)}  removed ${Number(r.docs_removed ?? 0)}`;
  const built = r.status === "building" && r.build_total !== null && Number(r.build_total) > 0 ? `  index ${Number(r.build_done ?? 0)}/${Number(r.build_total)} vectors (${Math.floor((Number(r.build_done ?? 0) / Number(r.build_total)) * 100)}%)` : "";
  return { line: `${r.status.padEnd(11)} ${batches}  ${embedded} docs embedded${reuse}  ${rate.toFixed(1)} docs/s  ETA ${fmtEta(eta)}${built}`, fraction };
}

/** Resolves with the finished run. */
export async function followRun(pool: pg.Pool, runId: string, opts: { tty?: boolean; write?: (s: string) => void; intervalMs?: number } = {}): Promise<RunRow> {
  const tty = opts.tty ?? Boolean(process.stderr.isTTY);
  const write = opts.write ?? ((s: string) => void process.stderr.write(s));
  let last = "";
  let lastAt = 0;
  for (;;) {
    const r = await getRun(pool, runId);
    if (!r) throw new Error(`run ${runId} not found`);
    const { line, fraction } = describeProgress(r);
    if (tty) {
      const width = 24;
      const fill = Math.round(fraction * width);
      write(`\r[${"#".repeat(fill)}${".".repeat(width - fill)}] ${line}\x1b[K`);
    } else if (line !== last && Date.now() - lastAt > 2000) {
      write(`${runId} ${line}\n`);
      last = line;
      lastAt = Date.now();
    }
    if (!ACTIVE_STATUSES.includes(r.status)) {
      if (tty) write("\n");
      return r;
    }
    await new Promise((res) => setTimeout(res, opts.intervalMs ?? 500));
  }
}
