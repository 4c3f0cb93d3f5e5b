/**
 * `apfa inspect`: prints the queries of runtime/queries.ts (the same ones the dashboard's `/api` serves) as
 * tables or JSON.
 * @module
 */
import { heartbeatTimeoutS, inspectJobs, inspectQueues, inspectRuns, inspectScheduled, inspectWorkers } from "../queries.ts";
import { openDatabase } from "../db.ts";
import { cliLogger, loadOrFail, type Command } from "./common.ts";

const ago = (d: Date | string | null) => (d ? `${Math.max(0, Math.round((Date.now() - new Date(d).getTime()) / 1000))}s ago` : "-");
const iso = (d: Date | string | null) => (d ? new Date(d).toISOString().replace(/\.\d+Z$/, "Z") : "-");

function table(head: string[], rows: string[][]): string {
  if (!rows.length) return "  (none)";
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all.map((r) => "  " + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n");
}

const SUBCOMMANDS = ["workers", "active", "scheduled", "queues", "runs"] as const;

export const inspect: Command = {
  summary: "Inspect the running system from the database: workers (ping), active jobs, scheduled cron fires, queues, runs.",
  usage: [
    "apfa inspect <workers|active|scheduled|queues|runs> [--json] [--limit N]",
    "  workers    which workers are alive (heartbeat within workers.heartbeat_timeout) and what they run; exit 1 when none is online",
    "  active     jobs running now, with the worker holding each",
    "  scheduled  next fires (UTC) of the enabled schedules in pipeline.yaml (reads no database)",
    "  queues     depth (ready + scheduled), running, last hour's completed/failed and the rate per minute",
    "  runs       the latest runs with progress",
  ].join("\n"),
  options: { json: { type: "boolean" }, limit: { type: "string", default: "20" } },
  async run({ values, positionals }) {
    const sub = positionals[0] as (typeof SUBCOMMANDS)[number] | undefined;
    if (!sub || !SUBCOMMANDS.includes(sub) || positionals.length > 1) {
      console.error(`apfa inspect: expected one of ${SUBCOMMANDS.join(", ")}${sub ? ` (got ${positionals.join(" ")})` : ""}\n\n${inspect.usage}`);
      return 2;
    }
    const limit = Number(values.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      console.error(`apfa inspect: --limit must be a whole number from 1 to 1000 (got ${values.limit})`);
      return 2;
    }
    const config = await loadOrFail(values.config as string);
    const out = (data: unknown, text: () => string) => console.log(values.json ? JSON.stringify(data, null, 2) : text());
    if (sub === "scheduled") {
      const s = inspectScheduled(config);
      out(s, () => table(["schedule", "cron", "task → queue", "overlap", "next fires (UTC)"], s.map((x) => [x.name, x.cron, `${x.task} → ${x.queue}`, x.overlap, x.next.map(iso).join("  ")])));
      return 0;
    }
    const db = await openDatabase(config, cliLogger({ cmd: "inspect" }));
    try {
      if (sub === "workers") {
        const w = await inspectWorkers(db.pool, heartbeatTimeoutS(config));
        out(w, () => table(["worker", "status", "heartbeat", "queues", "running"], w.map((x) => [
          x.id, x.status, ago(x.last_heartbeat_at), Object.entries(x.queues).sort(([a], [b]) => a.localeCompare(b)).map(([q, c]) => `${q}:${c}`).join(","),
          x.running.map((j) => `${j.task}#${j.id}`).join(", ") || "-",
        ])));
        return w.some((x) => x.online) ? 0 : 1;
      }
      if (sub === "active") {
        const j = await inspectJobs(db.pool, "running", limit);
        out(j, () => table(["job", "task", "queue", "worker", "run", "attempt", "since"], j.map((x) => [
          x.id, x.task, x.queue ?? "-", x.worker_id ?? `(${x.locked_by})`, x.run_id ?? "-", `${x.attempts}/${x.max_attempts}`, ago(x.locked_at),
        ])));
        return 0;
      }
      if (sub === "queues") {
        const q = await inspectQueues(db.pool, config);
        out(q, () => table(["queue", "concurrency", "depth", "ready", "scheduled", "running", "done 1h", "failed 1h", "rate/min"], q.map((x) => [
          x.queue, String(x.concurrency ?? "-"), String(x.depth), String(x.ready), String(x.scheduled), String(x.running),
          String(x.completed_1h), x.failed_jobs ? `${x.failed_1h} (${x.failed_jobs} kept)` : String(x.failed_1h), x.rate_per_min.toFixed(1),
        ])));
        return 0;
      }
      const r = await inspectRuns(db.pool, config.name, limit);
      out(r, () => table(["run", "status", "trigger", "progress", "embedded", "reused", "removed", "created", "index / error"], r.map((x) => [
        x.id, x.status, x.trigger, `${Math.round(x.progress * 100)}% (${x.batches_done + x.batches_failed}/${x.batches_total ?? "?"})`,
        String(x.docs_embedded), String(x.docs_reused), String(x.docs_removed), iso(x.created_at), x.error ?? (x.index_version ? x.index_version.slice(0, 16) : "-"),
      ])));
      return 0;
    } finally {
      await db.close();
    }
  },
};
