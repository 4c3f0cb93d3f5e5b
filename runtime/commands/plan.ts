/**
 * `apfa plan`: what a pipeline.yaml creates — tasks and their queues with concurrency, cron entries with their
 * next fire times, batch size, run limits, and the plugins each stage loads — without starting anything.
 * @module
 */
import pg from "pg";
import type { Command } from "./common.ts";
import { nextFires } from "../config/cron.ts";
import { STAGE_KINDS, TASK_QUEUES, TASKS, type PipelineConfig } from "../config/schema.ts";
import type { PluginKind } from "../contracts.ts";
import { redact } from "../log.ts";
import { loadPlugin } from "../plugins.ts";
import { loadOrFail } from "./common.ts";

export interface Plan {
  pipeline: string;
  file: string;
  database: string;
  batch_size: number;
  run: PipelineConfig["run"];
  queues: Array<{ name: string; concurrency: number; serial: boolean; tasks: string[] }>;
  stages: Array<{ stage: string; kind: PluginKind; plugin: string; description: string; options: unknown }>;
  schedules: Array<{ name: string; cron: string; task: string; queue: string; overlap: string; enabled: boolean; backfill?: string | number; next: string[] }>;
  retention_days: number;
  keep_versions: number;
  server: { host: string; port: number; auth: string };
}

export async function makePlan(config: PipelineConfig, now = new Date()): Promise<Plan> {
  const stages: Plan["stages"] = [];
  const refs: Array<[string, PluginKind, { plugin: string; options: Record<string, unknown> }]> = [
    ["store", "store", config.store],
    ...Object.entries(STAGE_KINDS).map(([s, k]) => [s, k, config.stages[s as keyof typeof STAGE_KINDS]] as [string, PluginKind, { plugin: string; options: Record<string, unknown> }]),
  ];
  for (const [stage, kind, ref] of refs) {
    const def = await loadPlugin(kind, ref.plugin, config.baseDir);
    stages.push({ stage, kind, plugin: ref.plugin, description: def.description, options: redact(ref.options) });
  }
  const db = config.database.url || process.env.DATABASE_URL;
  return {
    pipeline: config.name,
    file: config.file,
    database: db ? String(redact(db)) : `embedded Postgres (data ${config.database.embedded.dir}, port ${config.database.embedded.port})`,
    batch_size: config.batch_size,
    run: config.run,
    queues: Object.entries(config.queues).map(([name, concurrency]) => ({
      name,
      concurrency,
      serial: concurrency === 1,
      tasks: TASKS.filter((t) => TASK_QUEUES[t] === name),
    })),
    stages,
    schedules: Object.entries(config.schedules).map(([name, s]) => ({
      name,
      cron: s.cron,
      task: s.task,
      queue: s.queue ?? TASK_QUEUES[s.task],
      overlap: s.overlap,
      enabled: s.enabled,
      backfill: s.backfill,
      next: s.enabled ? nextFires(s.cron, 3, now).map((d) => d.toISOString().replace(".000Z", "Z")) : [],
    })),
    retention_days: config.retention_days,
    keep_versions: config.keep_versions,
    server: {
      host: config.server.host,
      port: config.server.port,
      auth: config.server.auth.mode === "none" ? "none (localhost only)" : config.server.auth.jwks_url ? "JWT (JWKS)" : config.server.auth.public_key ? "JWT (public key)" : "JWT (shared secret)",
    },
  };
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => "  " + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n");
}

export function renderPlan(p: Plan): string {
  const out: string[] = [];
  out.push(`Pipeline "${p.pipeline}" from ${p.file}`);
  out.push(`  database     ${p.database}`);
  out.push(`  batch size   ${p.batch_size} documents per embed_batch job`);
  out.push(`  runs         timeout ${p.run.timeout}, ${p.run.max_attempts} attempts per job, build refuses if > ${p.run.missing_batch_threshold * 100}% batches missing`);
  out.push(`  retention    ${p.retention_days} days, always keeping the current + ${p.keep_versions} previous index versions`);
  out.push(`  server       http://${p.server.host}:${p.server.port}  auth: ${p.server.auth}`);
  out.push("", "Queues (concurrency per worker process; 1 = one job at a time across all workers)");
  out.push(table([["queue", "concurrency", "tasks"], ...p.queues.map((q) => [q.name, `${q.concurrency}${q.serial ? " (serial)" : ""}`, q.tasks.join(", ") || "-"])]));
  out.push("", "Stages (data path: source → embedder → store → index → notifier → server → generator)");
  out.push(table([["stage", "plugin", "what", "options"], ...p.stages.map((s) => [s.stage, s.plugin, s.description, JSON.stringify(s.options)])]));
  out.push("", "Schedules (UTC)");
  out.push(table([["name", "cron", "task → queue", "overlap", "next 3 fires"], ...p.schedules.map((s) => [
    s.name, s.cron, `${s.task} → ${s.queue}`, s.overlap, s.enabled ? s.next.join("  ") : "(disabled)",
  ])]));
  return out.join("\n");
}

/** The latest `compute_index_stats` advice for the pipeline, or why there is none (plan never starts a database). */
export async function latestAdvice(config: PipelineConfig): Promise<{ computed_at: string; version: string; engine: string; urgency: number; recommendation: string; notes: string[] } | string> {
  const url = config.database.url || process.env.DATABASE_URL;
  if (!url) return "not read: the pipeline uses embedded Postgres, which plan does not start";
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    const r = await client.query<{ computed_at: Date; version: string; engine: string; urgency: number; recommendation: string; notes: string[] | null }>(
      `select computed_at, version, engine, urgency, recommendation, reasoning->'notes' as notes
         from apfa.index_stats where pipeline = $1 order by computed_at desc, id desc limit 1`,
      [config.name],
    );
    const row = r.rows[0];
    if (!row) return "none yet: compute_index_stats has not run for this pipeline";
    return { computed_at: row.computed_at.toISOString(), version: row.version, engine: row.engine, urgency: Number(row.urgency), recommendation: row.recommendation, notes: row.notes ?? [] };
  } catch (err) {
    return `not read: ${(err as Error).message}`;
  } finally {
    await client.end().catch(() => {});
  }
}

export const plan: Command = {
  summary: "Show what a pipeline.yaml creates: tasks, queues with concurrency, cron entries with their next fires, batch size and plugins.",
  usage: "apfa plan [file] [--json]",
  options: { json: { type: "boolean" } },
  async run({ values, positionals }) {
    const config = await loadOrFail(positionals[0] ?? (values.config as string));
    const p = await makePlan(config);
    const advice = await latestAdvice(config);
    if (values.json) console.log(JSON.stringify({ ...p, index_advice: advice }, null, 2));
    else {
      console.log(renderPlan(p));
      console.log("\nIndex advice (latest compute_index_stats)");
      if (typeof advice === "string") console.log(`  ${advice}`);
      else {
        console.log(`  ${advice.recommendation}  (urgency ${advice.urgency}, ${advice.engine} version ${advice.version.slice(0, 12)}, ${advice.computed_at})`);
        for (const n of advice.notes) console.log(`  - ${n}`);
      }
    }
    return 0;
  },
};
