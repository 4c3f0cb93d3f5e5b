/** `apfa run` and `apfa main` (the README's first command). @module */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Command } from "./common.ts";
import { migrate } from "../migrate.ts";
import { openPipeline } from "../pipeline.ts";
import { followRun } from "../progress.ts";
import { createRun, type RunRow } from "../runs.ts";
import { startWorker } from "../worker.ts";
import { cliLogger, loadOrFail } from "./common.ts";

function summary(r: RunRow): Record<string, unknown> {
  return {
    run: r.id,
    status: r.status,
    error: r.error ?? undefined,
    docs_read: Number(r.docs_read),
    docs_embedded: Number(r.docs_embedded),
    docs_reused: Number(r.docs_reused),
    docs_changed: Number(r.docs_changed),
    docs_removed: Number(r.docs_removed),
    docs_skipped: Number(r.docs_skipped),
    docs_truncated: Number(r.docs_truncated),
    skipped: r.skipped,
    batches: r.batches_total,
    batches_failed: r.batches_failed,
    index_version: r.index_version ?? undefined,
    base_version: r.base_version ?? undefined,
    base_reason: r.base_reason ?? undefined,
    duration_s: r.started_at && r.finished_at ? (r.finished_at.getTime() - r.started_at.getTime()) / 1000 : undefined,
    docs_per_s: r.stats?.docs_per_s,
  };
}

export function printSummary(r: RunRow): void {
  const s = summary(r);
  console.log(`run ${s.run}: ${s.status}${s.error ? ` (${s.error})` : ""}`);
  console.log(`  documents  read ${s.docs_read}, embedded ${s.docs_embedded} (${s.docs_changed} changed), reused ${s.docs_reused}, removed ${s.docs_removed}, skipped ${s.docs_skipped}${Object.keys(r.skipped).length ? ` ${JSON.stringify(r.skipped)}` : ""}, truncated ${s.docs_truncated}`);
  console.log(`  base       ${r.base_version ? `${r.base_version} (unchanged documents keep their vectors)` : `none: ${r.base_reason ?? "no previous version"}`}`);
  console.log(`  batches    ${s.batches ?? 0}${r.batches_failed ? ` (${r.batches_failed} failed)` : ""}`);
  if (s.duration_s !== undefined) console.log(`  time       ${(s.duration_s as number).toFixed(1)} s${s.docs_per_s ? `, ${(s.docs_per_s as number).toFixed(1)} docs/s` : ""}`);
  if (s.index_version) console.log(`  index      ${s.index_version}`);
}

export const runCmd: Command = {
  summary: "Start an embedding run: the orchestrator reads the source, fans out embed_batch jobs and fans in to build_index.",
  usage: "apfa run [-c pipeline.yaml] [--wait] [--json] [--full]\nWith --wait: exit 0 when the run succeeds, 3 when it fails. --full embeds every document again instead of reusing unchanged ones.",
  options: { wait: { type: "boolean", short: "w" }, json: { type: "boolean" }, full: { type: "boolean" } },
  async run({ values }) {
    const config = await loadOrFail(values.config as string);
    const log = cliLogger({ cmd: "run" });
    const p = await openPipeline(config, log);
    try {
      await migrate(p.db.pool, log);
      const id = await createRun(p.db.pool, config, "cli", { full: Boolean(values.full) });
      if (!values.wait) {
        console.log(values.json ? JSON.stringify({ run: id, status: "pending" }) : `run ${id} enqueued; follow it with apfa run --wait or apfa inspect runs`);
        return 0;
      }
      const r = await followRun(p.db.pool, id, { tty: values.json ? false : undefined });
      if (values.json) console.log(JSON.stringify(summary(r)));
      else printSummary(r);
      return r.status === "succeeded" ? 0 : 3;
    } finally {
      await p.close();
    }
  },
};

export const main: Command = {
  summary: "Run the embedded default end to end: embedded Postgres, migrations, an in-process worker, one run over the sample corpus, the index build, and a summary.",
  usage: "apfa main [-c pipeline.yaml] [--json] [--full]",
  options: { json: { type: "boolean" }, full: { type: "boolean" } },
  async run({ values }) {
    const config = await loadOrFail(values.config as string);
    const log = cliLogger({ cmd: "main" });
    const src = config.stages.source;
    if (src.plugin === "jsonl" && typeof src.options.path === "string") {
      const file = path.resolve(config.baseDir, src.options.path);
      if (!fs.existsSync(file)) {
        const { writeCorpus } = await import("../../examples/corpus.ts");
        writeCorpus(file);
        console.error(`generated the sample corpus at ${path.relative(process.cwd(), file)}`);
      }
    }
    const p = await openPipeline(config, log);
    try {
      await migrate(p.db.pool, log);
      const w = await startWorker(p, { cron: false });
      try {
        const id = await createRun(p.db.pool, config, "main", { full: Boolean(values.full) });
        const r = await followRun(p.db.pool, id, { tty: values.json ? false : undefined });
        if (values.json) console.log(JSON.stringify(summary(r)));
        else {
          printSummary(r);
          if (r.status === "succeeded") {
            const cfgArg = values.config === "pipeline.yaml" ? "" : ` -c ${values.config}`;
            const url = `http://${config.server.host}:${config.server.port}`;
            console.log(`\nServe it:  npx apfa serve${cfgArg}`);
            console.log(`Ask it:    curl -s -X POST ${url}/generate-advice -H "Authorization: Bearer $(npx apfa token${cfgArg})" \\`);
            console.log(`             -H 'content-type: application/json' -d '{"query": "I have a 650 credit score and want to consolidate card debt", "k": 4}'`);
            console.log(`Watch it:  ${url}/dashboard`);
          }
        }
        return r.status === "succeeded" ? 0 : 3;
      } finally {
        await w.stop("main finished");
      }
    } finally {
      await p.close();
    }
  },
};
