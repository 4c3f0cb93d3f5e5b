/**
 * Fault-injection harness: a pipeline directory with a corpus, worker processes started through the real CLI
 * (`node bin/apfa.mjs worker`), and helpers to follow a run and read the ids of the index it published.
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type pg from "pg";
import { stringify } from "yaml";
import { loadConfig, formatProblem } from "../../runtime/config/load.ts";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import { getRun, type RunRow } from "../../runtime/runs.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const FIXTURES = path.join(ROOT, "test/fixtures/plugins");

export interface Project {
  dir: string;
  yaml: string;
  config: PipelineConfig;
  ids: string[];
}

/** Writes `docs` documents and a pipeline.yaml (deep object) into a temp dir and loads it. */
export async function makeProject(docs: number, pipeline: Record<string, unknown>): Promise<Project> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-fault-"));
  const ids = Array.from({ length: docs }, (_, i) => `doc-${String(i).padStart(6, "0")}`);
  await fsp.writeFile(path.join(dir, "docs.jsonl"), ids.map((id, i) => JSON.stringify({ id, text: `loan product ${i} with rate ${i % 17}% and term ${i % 60} months` })).join("\n") + "\n");
  const yaml = path.join(dir, "pipeline.yaml");
  await fsp.writeFile(yaml, stringify({ name: "faults", ...pipeline }));
  const r = await loadConfig(yaml, { env: process.env as Record<string, string> });
  if (!r.config) throw new Error(r.problems.map(formatProblem).join("\n"));
  return { dir, yaml, config: r.config, ids };
}

export interface WorkerProc {
  proc: ChildProcess;
  logs: string[];
  exited: Promise<number | null>;
}

export function spawnWorker(yaml: string, env: Record<string, string> = {}, cmd: string[] = ["worker", "--no-cron"]): WorkerProc {
  const proc = spawn(process.execPath, [path.join(ROOT, "bin/apfa.mjs"), ...cmd, "-c", yaml], {
    cwd: path.dirname(yaml),
    env: { ...process.env, APFA_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  const collect = (b: Buffer) => logs.push(...b.toString().split("\n").filter(Boolean));
  proc.stdout!.on("data", collect);
  proc.stderr!.on("data", collect);
  // "close", not "exit": it fires once the output pipes are drained too, so `logs` is complete.
  const exited = new Promise<number | null>((resolve) => proc.on("close", (code) => resolve(code)));
  return { proc, logs, exited };
}

/** Waits until the worker logged "worker ready". */
export async function ready(w: WorkerProc, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!w.logs.some((l) => l.includes('"worker ready"'))) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`worker not ready:\n${w.logs.slice(-20).join("\n")}`);
    if (w.proc.exitCode !== null) throw new Error(`worker exited ${w.proc.exitCode}:\n${w.logs.slice(-20).join("\n")}`);
    await sleep(100);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(fn: () => Promise<T | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
}

/** Waits for a run to leave the active states. */
export async function finished(pool: pg.Pool, runId: string, timeoutMs: number): Promise<RunRow> {
  return waitFor(async () => {
    const r = await getRun(pool, runId);
    return r && ["succeeded", "failed", "cancelled"].includes(r.status) ? r : undefined;
  }, timeoutMs, `run ${runId} to finish`);
}

/** Ids in the published index's docs.jsonl (fs store under `storeDir`). */
export async function indexIds(storeDir: string, version: string): Promise<string[]> {
  const text = await fsp.readFile(path.join(storeDir, "indexes", version, "docs.jsonl"), "utf8");
  return text.split("\n").filter(Boolean).map((l) => (JSON.parse(l) as { id: string }).id);
}

/** Every id exactly once. */
export function assertExactlyOnce(got: string[], want: string[]): void {
  const counts = new Map<string, number>();
  for (const id of got) counts.set(id, (counts.get(id) ?? 0) + 1);
  const dup = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
  const missing = want.filter((id) => !counts.has(id));
  if (dup.length || missing.length || got.length !== want.length) {
    throw new Error(`index ids: ${got.length} (want ${want.length}); duplicates ${dup.slice(0, 5).join(",")} (${dup.length}); missing ${missing.slice(0, 5).join(",")} (${missing.length})`);
  }
}
