/**
 * What every benchmark suite shares: the result shape (tables, ratios against a raw baseline, charts), small
 * statistics, a fresh Postgres database per suite run, and TypeScript child processes (workers, servers) whose
 * peak memory is read from `/proc/<pid>/status`.
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { stringify } from "yaml";

/** `.js` when the bench runs compiled (dist/bench/, as `npm run bench` does), `.ts` from the sources. */
export const EXT = import.meta.url.endsWith(".js") ? ".js" : ".ts";
/** Repository root (bench/ lives directly under it, or under dist/ when compiled). */
export const ROOT = path.resolve(fileURLToPath(new URL(EXT === ".js" ? "../.." : "..", import.meta.url)));
/** A file of bench/ as this bench runs it: the compiled `.js` next to this module, or the `.ts` source. */
export const benchFile = (rel: string): string => fileURLToPath(new URL(rel.replace(/\.ts$/, EXT), new URL(".", import.meta.url)));

export type Cell = string | number;

export interface Table {
  title: string;
  columns: string[];
  rows: Cell[][];
  note?: string;
}

/**
 * A figure divided by its raw baseline from the same run. `better` says which direction is an improvement;
 * `goal` (when set) is the threshold: `value >= goal` for "higher", `value <= goal` for "lower".
 */
export interface Ratio {
  id: string;
  label: string;
  value: number;
  better: "higher" | "lower";
  goal?: number;
  detail?: string;
}

export interface SuiteResult {
  suite: string;
  mode: "quick" | "full";
  large: boolean;
  env: EnvInfo;
  duration_s: number;
  tables: Table[];
  ratios: Ratio[];
  /** SVG file names under the charts directory. */
  charts: Array<{ file: string; title: string }>;
  notes: string[];
}

export interface BenchContext {
  quick: boolean;
  large: boolean;
  /** Where `<name>.svg` charts go (bench/charts for full runs, bench/results/quick/charts for quick ones). */
  chartsDir: string;
  /** When set, child processes run with `--cpu-prof` into this directory. */
  profileDir?: string;
  /** Where child processes' stdout/stderr go (bench/results/logs/<suite>.log). */
  logFile: string;
  log(msg: string): void;
}

export interface EnvInfo {
  date: string;
  node: string;
  cpus: number;
  cpu_model: string;
  mem_gb: number;
  load_start: number[];
  load_end?: number[];
  commit?: string;
}

export function envInfo(): EnvInfo {
  let commit: string | undefined;
  try {
    const head = fs.readFileSync(path.join(ROOT, ".git/HEAD"), "utf8").trim();
    commit = head.startsWith("ref: ") ? fs.readFileSync(path.join(ROOT, ".git", head.slice(5)), "utf8").trim().slice(0, 12) : head.slice(0, 12);
  } catch {
    commit = undefined;
  }
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model ?? "unknown",
    mem_gb: Math.round(os.totalmem() / 2 ** 30),
    load_start: os.loadavg().map((x) => Math.round(x * 100) / 100),
    commit,
  };
}

// ---------------------------------------------------------------- statistics

/** Linear-interpolated percentile (p in 0..100) of unsorted samples. */
export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const at = (p / 100) * (s.length - 1);
  const lo = Math.floor(at);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (at - lo);
}

export const median = (xs: number[]): number => percentile(xs, 50);

export async function timeMs(fn: () => unknown): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** Formats a number with sensible precision for tables. */
export function num(x: number, digits?: number): string {
  if (!Number.isFinite(x)) return "–";
  const d = digits ?? (Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2);
  return x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

export const ratioText = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : "–");

export function goalMet(r: Ratio): boolean | undefined {
  if (r.goal === undefined) return undefined;
  return r.better === "higher" ? r.value >= r.goal : r.value <= r.goal;
}

/** Prints a table with aligned columns (numbers right-aligned). */
export function printTable(t: Table): void {
  const cells = [t.columns, ...t.rows.map((r) => r.map(String))];
  const widths = t.columns.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? "").length)));
  const line = (r: Cell[]) => r.map((c, i) => (typeof c === "number" || /^[\d.,×%–-]+( ?\w+)?$/.test(String(c)) ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join("  ");
  console.log(`\n${t.title}`);
  console.log(line(t.columns));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of t.rows) console.log(line(r));
  if (t.note) console.log(`(${t.note})`);
}

// ---------------------------------------------------------------- Postgres

/** The server suites create their databases on; only CREATE/DROP DATABASE run on its own database. */
export const ADMIN_URL = process.env.APFA_BENCH_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export interface BenchDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

/** Creates `apfa_bench_<random>`; `drop` terminates its sessions and removes it. */
export async function createBenchDatabase(): Promise<BenchDatabase> {
  const name = `apfa_bench_${crypto.randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  try {
    await admin.connect();
    await admin.query(`create database "${name}"`);
  } catch (err) {
    throw new Error(`[apfa] [bench] cannot create a database on ${ADMIN_URL.replace(/:[^:@/]*@/, ":***@")}: ${(err as Error).message}; ` +
      "start Postgres on 127.0.0.1:5432 or set APFA_BENCH_ADMIN_URL", { cause: err });
  } finally {
    await admin.end().catch(() => {});
  }
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return {
    name,
    url: u.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: ADMIN_URL });
      await c.connect();
      try {
        await c.query(`drop database if exists "${name}" with (force)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Writes a pipeline.yaml from an object and returns its path. */
export function writePipeline(dir: string, config: Record<string, unknown>, name = "pipeline.yaml"): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, stringify(config));
  return file;
}

/** Schedules off: a bench worker must not start its own runs. */
export const NO_SCHEDULES = { rebuild: { enabled: false }, cleanup: { enabled: false }, stats: { enabled: false } };

// ---------------------------------------------------------------- child processes

/**
 * Starts `node [--cpu-prof] ...args` from the repository root with an IPC channel, output appended to `log`.
 * With `profileDir`, the child writes a V8 CPU profile there when it exits.
 */
export function spawnNode(args: string[], opts: { profileDir?: string; env?: Record<string, string>; log?: string; fdLimit?: number } = {}): ChildProcess {
  const nodeArgs: string[] = [];
  if (opts.profileDir) {
    fs.mkdirSync(opts.profileDir, { recursive: true });
    nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${opts.profileDir}`);
  }
  const out = opts.log ? fs.openSync(opts.log, "a") : "ignore";
  // Thousands of sockets need more descriptors than a login shell's soft limit; bash raises it (to the hard
  // limit where a container forbids more) and execs node, so the pid (for /proc RSS) and IPC stay node's own.
  const argv = opts.fdLimit ? ["-c", `{ ulimit -n ${opts.fdLimit} || ulimit -n "$(ulimit -Hn)"; } 2>/dev/null; exec "$0" "$@"`, process.execPath, ...nodeArgs, ...args] : [...nodeArgs, ...args];
  const child = spawn(opts.fdLimit ? "bash" : process.execPath, argv, {
    cwd: ROOT,
    stdio: ["ignore", out, out, "ipc"],
    env: { ...process.env, APFA_LOG_LEVEL: "warn", ...opts.env },
  });
  if (typeof out === "number") fs.closeSync(out);
  return child;
}

/** `node --import tsx <file> ...args` (see spawnNode); a compiled `.js` file runs on plain node. */
export function spawnTs(file: string, args: string[], opts: Parameters<typeof spawnNode>[1] = {}): ChildProcess {
  return spawnNode(file.endsWith(".js") ? [file, ...args] : ["--import", "tsx", file, ...args], opts);
}

/** Resolves with the first IPC message satisfying `pick`, rejecting if the child exits or the time runs out. */
export function waitMessage<T>(child: ChildProcess, pick: (m: unknown) => T | undefined, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const done = (fn: () => void) => {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
      fn();
    };
    const onMessage = (m: unknown) => {
      const v = pick(m);
      if (v !== undefined) done(() => resolve(v));
      else if (m && typeof m === "object" && "error" in m) done(() => reject(new Error(`child ${child.pid}: ${(m as { error: string }).error}`)));
    };
    const onExit = (code: number | null) => done(() => reject(new Error(`child ${child.pid} exited (code ${code}) before answering`)));
    const timer = setTimeout(() => done(() => reject(new Error(`child ${child.pid} did not answer in ${timeoutMs} ms`))), timeoutMs);
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

/** Sends SIGTERM and waits for exit (SIGKILL after `graceMs`). */
export async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Peak resident set size of a live process in MiB (`VmHWM`), or NaN when it cannot be read. */
export function peakRssMiB(pid: number | undefined): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `apfa-bench-${prefix}-`));
}

/** `docs` repeated until there are `n`, copies' ids suffixed `~1`, `~2`, … so every id stays unique. */
export function repeatDocs<T extends { id: string }>(docs: T[], n: number): T[] {
  return Array.from({ length: n }, (_, i) => {
    const d = docs[i % docs.length];
    const k = Math.floor(i / docs.length);
    return k === 0 ? d : { ...d, id: `${d.id}~${k}` };
  });
}

/** Writes `<name>.svg` into the run's charts directory and returns its entry for the report. */
export function saveChart(ctx: BenchContext, name: string, title: string, svg: string): { file: string; title: string } {
  fs.mkdirSync(ctx.chartsDir, { recursive: true });
  fs.writeFileSync(path.join(ctx.chartsDir, `${name}.svg`), svg);
  return { file: `${name}.svg`, title };
}

/** The part of a suite's result the suite itself produces (the runner adds mode, env and timing). */
export type SuiteOutput = Pick<SuiteResult, "tables" | "ratios" | "charts" | "notes">;
export type Suite = (ctx: BenchContext) => Promise<SuiteOutput>;

/**
 * CPU time (ms) of the client backends serving database `db` (their process titles name it) since `since`, a
 * snapshot this function returned before, from /proc; autovacuum workers are left out. Returns the figure and
 * the new snapshot. Counted per backend, so one that ends meanwhile (a pool closed by the run before) takes
 * nothing away; one that starts and ends between two snapshots is not counted, so sample before closing the
 * pools being measured.
 */
export function postgresCpuMs(db: string, since: Map<number, number> = new Map()): { ms: number; snapshot: Map<number, number> } {
  const snapshot = new Map<number, number>();
  let ticks = 0;
  for (const pid of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number)) {
    try {
      const title = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
      // Autovacuum comes and goes on its own schedule; counting it would make single runs incomparable.
      if (!title.includes(` ${db} `) || title.includes("autovacuum")) continue;
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const t = Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
      snapshot.set(pid, t);
      ticks += t - (since.get(pid) ?? 0);
    } catch {
      // the process ended meanwhile
    }
  }
  return { ms: (ticks * 1000) / 100, snapshot }; // USER_HZ is 100 on Linux
}

/** Seconds from the fan-in to build_index starting (job history is written just after the job ends, so wait for it). */
export async function buildWait(pool: pg.Pool, runId: string): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const r = (await pool.query<{ s: number }>(
      `select extract(epoch from h.started_at - r.embedded_at)::float8 as s from apfa.job_history h join apfa.runs r on r.id = h.run_id
        where h.run_id = $1 and h.task = 'build_index' order by h.id desc limit 1`,
      [runId],
    )).rows[0];
    if (r) return Math.max(0, r.s);
    await new Promise((res) => setTimeout(res, 100));
  }
  return NaN;
}
