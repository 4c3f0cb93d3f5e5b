/** `apfa migrate` and `apfa worker`. @module */
import type { Command } from "./common.ts";
import { openDatabase } from "../db.ts";
import { migrate } from "../migrate.ts";
import { openPipeline } from "../pipeline.ts";
import { startWorker } from "../worker.ts";
import { cliLogger, loadOrFail, onceSignal } from "./common.ts";

export const migrateCmd: Command = {
  summary: "Apply graphile-worker's migrations and apfa's own (migrations/*.sql) to the configured database.",
  usage: "apfa migrate [-c pipeline.yaml] [--json]",
  options: { json: { type: "boolean" } },
  async run({ values }) {
    const config = await loadOrFail(values.config as string);
    const log = cliLogger({ cmd: "migrate" });
    const db = await openDatabase(config, log);
    try {
      const applied = await migrate(db.pool, log);
      if (values.json) console.log(JSON.stringify({ database: db.mode, applied }));
      else console.log(applied.length ? `applied ${applied.join(", ")}` : "database is up to date");
      return 0;
    } finally {
      await db.close();
    }
  },
};

export const worker: Command = {
  summary: "Run jobs: one graphile-worker runner per queue with the concurrency from pipeline.yaml, plus the crontab from schedules.",
  usage: "apfa worker [-c pipeline.yaml] [--queues embedding,indexing] [--no-cron] [--metrics-port [HOST:]PORT]\n" +
    "--metrics-port serves Prometheus metrics at /metrics (HOST defaults to 127.0.0.1; see docs/metrics.md).\n" +
    "Stops gracefully on SIGTERM/SIGINT: takes no new jobs and waits for running ones.",
  options: { queues: { type: "string", short: "q" }, "no-cron": { type: "boolean" }, "metrics-port": { type: "string" } },
  async run({ values }) {
    const config = await loadOrFail(values.config as string);
    const log = cliLogger({ cmd: "worker" });
    const p = await openPipeline(config, log);
    await migrate(p.db.pool, log);
    const queues = values.queues ? String(values.queues).split(",").map((s) => s.trim()).filter(Boolean) : undefined;
    const unknown = queues?.filter((q) => !(q in config.queues)) ?? [];
    if (unknown.length) {
      console.error(`apfa worker: unknown queue(s) ${unknown.join(", ")}; declared: ${Object.keys(config.queues).join(", ")}`);
      await p.close();
      return 2;
    }
    // graphile-worker records a job's outcome in the background; during a database outage that write can fail
    // after its retries and reject with no handler. Exiting would turn a Postgres restart into a dead worker;
    // the job stays locked by this live worker and its heartbeat releases it once the database is back.
    process.on("unhandledRejection", (err) => log.error("background database write failed; continuing", { error: err instanceof Error ? err.message : String(err) }));
    const w = await startWorker(p, { queues, cron: !values["no-cron"], metricsPort: values["metrics-port"] as string | undefined });
    log.info("worker ready", { id: w.id, database: p.db.mode, store: p.store.describe() });
    const sig = await Promise.race([onceSignal(), w.promise.then(() => "runners exited")]);
    await w.stop(sig);
    await p.close();
    return 0;
  },
};
