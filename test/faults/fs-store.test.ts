/**
 * The fs store's disk fills up or its directory is not writable, with real worker processes: `embed_batch`,
 * `build_index` (and `embed_all`) fail with an error naming the cause, graphile-worker retries them, no
 * `.apfa-tmp-*` file is left behind, `indexes/latest` keeps naming the previous complete version (or stays
 * absent), and once the space or the permission is back the run completes with a valid `latest`.
 *
 * Disk full is a real tmpfs (`mount -t tmpfs -o size=2m`) grown with `mount -o remount,size=…`; permission
 * denied is a worker run as `nobody` through `setpriv`, since root ignores file modes. Both need root, so the
 * file is skipped only where the test process is not root.
 */
import { execFileSync, spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { blockedFolder } from "../../runtime/db-access.ts";
import { createRun, getRun } from "../../runtime/runs.ts";
import type { LatestPointer, Manifest } from "../../runtime/versions.ts";
import { withTestDatabase, type TestDatabase } from "../helpers/pg.ts";
import {
  assertExactlyOnce, FIXTURES, finished, indexIds, makeProject, ready, ROOT, sleep, spawnWorker, waitFor, type Project, type WorkerProc,
} from "./harness.ts";

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;
/** A checkout inside a private (0700) folder: `nobody` cannot even load apfa there, so that case cannot run. */
const nobodyBlocked = blockedFolder(path.join(ROOT, "bin"), { uid: NOBODY, gid: NOBODY });

let db: TestDatabase | undefined;
let workers: WorkerProc[] = [];
const mounts: string[] = [];
const dirs: string[] = [];
let stopWatch = () => {};

afterEach(async () => {
  stopWatch();
  for (const w of workers) if (w.proc.exitCode === null) w.proc.kill("SIGKILL");
  await Promise.all(workers.map((w) => w.exited));
  workers = [];
  await db?.drop();
  db = undefined;
  for (const m of mounts.splice(0)) {
    try {
      execFileSync("umount", [m]);
    } catch {
      execFileSync("umount", ["-l", m]);
    }
  }
  for (const d of dirs.splice(0)) await fsp.rm(d, { recursive: true, force: true });
});

/** A pipeline on a fresh database: fs store at `storeDir`, the hash embedder, 250 documents per batch. */
async function project(docs: number, storeDir: string, dims: number): Promise<Project> {
  db = await withTestDatabase({ prefix: "apfa_fault" });
  const p = await makeProject(docs, {
    database: { url: db.url },
    store: { plugin: "fs", options: { dir: storeDir } },
    queues: { embedding: 2 },
    batch_size: 250,
    stages: {
      source: { plugin: "jsonl", options: { path: "docs.jsonl" } },
      embedder: { plugin: path.join(FIXTURES, "hash-embedder.ts"), options: { dims } },
      notifier: { plugin: "postgres", options: { url: db.url } },
    },
    run: { max_attempts: 25 },
  });
  dirs.push(p.dir);
  await migrate(db.pool, silentLogger);
  return p;
}

/** Every `.apfa-tmp-*` file under `dir`. */
async function tmpFiles(dir: string): Promise<string[]> {
  const all = await fsp.readdir(dir, { recursive: true });
  return all.filter((f) => path.basename(f).startsWith(".apfa-tmp-"));
}

async function latest(store: string): Promise<LatestPointer | undefined> {
  const text = await fsp.readFile(path.join(store, "indexes/latest"), "utf8").catch(() => undefined);
  return text === undefined ? undefined : (JSON.parse(text) as LatestPointer);
}

/** Reads a version's manifest and checks every file it lists is there, whole (size and SHA-256). */
async function checkVersion(store: string, version: string): Promise<Manifest> {
  const dir = path.join(store, "indexes", version);
  const m = JSON.parse(await fsp.readFile(path.join(dir, "manifest.json"), "utf8")) as Manifest;
  expect(m.version).toBe(version);
  expect(Object.keys(m.files).sort()).toEqual([m.main, "docs.jsonl", "rows.jsonl", "lexical.json"].sort());
  for (const [name, f] of Object.entries(m.files)) {
    const bytes = await fsp.readFile(path.join(dir, name));
    expect(bytes.byteLength, `${version}/${name} size`).toBe(f.bytes);
    expect(crypto.createHash("sha256").update(bytes).digest("hex"), `${version}/${name} sha256`).toBe(f.sha256);
  }
  return m;
}

/** Records every value `indexes/latest` takes (polled), to show nothing but complete versions ever appears there. */
function watchLatest(store: string): { seen: Array<{ version: string; at: number }>; stop(): void } {
  const seen: Array<{ version: string; at: number }> = [];
  const timer = setInterval(() => {
    latest(store).then(
      (l) => l && seen.at(-1)?.version !== l.version && seen.push({ version: l.version, at: Date.now() }),
      () => seen.push({ version: "unparseable", at: Date.now() }),
    );
  }, 50);
  stopWatch = () => clearInterval(timer);
  return { seen, stop: stopWatch };
}

/** The errors of `task`'s attempts that graphile-worker is going to retry. */
async function retries(runId: string, task: string): Promise<string[]> {
  const r = await db!.pool.query<{ error: string }>(
    "select error from apfa.job_history where run_id = $1 and task = $2 and outcome = 'retry' order by id",
    [runId, task],
  );
  return r.rows.map((x) => x.error);
}

const locked = async () => (await db!.pool.query("select 1 from graphile_worker.jobs where locked_at is not null")).rowCount!;

/** Waits until no job is running and then no temp file is left; a leaked one fails with its name. */
async function noTempFilesWhenIdle(store: string, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  let left: string[] = [];
  for (;;) {
    if ((await locked()) === 0) {
      left = await tmpFiles(store);
      if (left.length === 0 && (await locked()) === 0) return;
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`temp files left behind with no job running: ${left.join(", ")}`);
    await sleep(200);
  }
}

const mountTmpfs = (dir: string, size: string) => execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0755`, "tmpfs", dir]);
const resize = (dir: string, size: string) => execFileSync("mount", ["-o", `remount,size=${size}`, dir]);
const used = async (dir: string) => {
  const s = await fsp.statfs(dir);
  return (s.blocks - s.bfree) * s.bsize;
};

describe.skipIf(!isRoot)("fs store faults (needs root: mount, setpriv)", () => {
  it("disk full: embed_batch and build_index fail as 'disk full' and retry; latest stays on the complete version", async () => {
    const DOCS = 3000, DIMS = 128, FIRST = 200;
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-tmpfs-"));
    dirs.push(dir);
    const store = path.join(dir, "store");
    await fsp.mkdir(store);
    mountTmpfs(store, "2m");
    mounts.push(store);
    const p = await project(DOCS, store, DIMS);
    const corpus = await fsp.readFile(path.join(p.dir, "docs.jsonl"), "utf8");
    const lines = corpus.split("\n").filter(Boolean);
    workers = [spawnWorker(p.yaml), spawnWorker(p.yaml)];
    await Promise.all(workers.map((w) => ready(w)));

    // A first, small run fits in 2 MiB and publishes v1.
    await fsp.writeFile(path.join(p.dir, "docs.jsonl"), lines.slice(0, FIRST).join("\n") + "\n");
    const first = await finished(db!.pool, await createRun(db!.pool, p.config, "fault-test"), 60_000);
    expect(first.status, first.error ?? "").toBe("succeeded");
    const v1 = first.index_version!;
    expect((await latest(store))?.version).toBe(v1);
    await checkVersion(store, v1);
    const watch = watchLatest(store);

    // The full corpus needs ~2.1 MiB of batch files and ~1.8 MiB of index: the batch artifacts overflow the disk.
    await fsp.writeFile(path.join(p.dir, "docs.jsonl"), corpus);
    const usedBefore = await used(store);
    // Full: every document is embedded again, so the batch files are as large as this test sizes the disk for.
    const runId = await createRun(db!.pool, p.config, "fault-test", { full: true });
    const batchErrors = await waitFor(async () => {
      const e = await retries(runId, "embed_batch");
      return e.length > 0 && e;
    }, 90_000, "an embed_batch attempt to fail and be retried");
    expect(batchErrors[0]).toMatch(/\[store:fs\] put batches\/.+ failed: disk full/);
    expect((await latest(store))?.version).toBe(v1);

    // Room for every batch but not for the index: build_index fails the same way, v1 stays latest.
    const run = await waitFor(async () => {
      const r = await getRun(db!.pool, runId);
      return r && r.status !== "pending" && r.status !== "enumerating" && r;
    }, 60_000, "the run to be enumerated");
    let inputs = 0;
    for (const f of await fsp.readdir(path.join(store, "batches", runId))) {
      if (f.endsWith(".input.jsonl")) inputs += (await fsp.stat(path.join(store, "batches", runId, f))).size;
    }
    const batches = run.batches_total ?? 0;
    const vectors = DOCS * DIMS * 4 + 128 * batches;
    const mid = usedBefore + inputs + (inputs + vectors) + 3 * 4096 * batches + Math.floor((inputs + vectors) / 2);
    resize(store, `${Math.ceil(mid / 1024)}k`);
    const buildErrors = await waitFor(async () => {
      const e = await retries(runId, "build_index");
      return e.length > 0 && e;
    }, 120_000, "a build_index attempt to fail and be retried");
    expect(buildErrors[0]).toMatch(/\[store:fs\] put indexes\/[0-9a-f]{64}\/.+ failed: disk full/);
    expect((await getRun(db!.pool, runId))!.status).toBe("building");
    expect(await db!.pool.query("select 1 from apfa.batches where run_id = $1 and status <> 'done'", [runId])).toHaveProperty("rowCount", 0);
    await noTempFilesWhenIdle(store);
    expect((await latest(store))?.version).toBe(v1);
    await checkVersion(store, v1);

    // Space is back: the retried build publishes a complete v2.
    const grownAt = Date.now();
    resize(store, "200m");
    const done = await finished(db!.pool, runId, 180_000);
    expect(done.status, done.error ?? "").toBe("succeeded");
    const v2 = done.index_version!;
    // The pointer moves just before the run is marked done; let the 50 ms watcher take its look at it.
    await waitFor(async () => watch.seen.some((s) => s.version === v2), 5_000, "the watcher to see the new version");
    watch.stop();
    expect(v2).not.toBe(v1);
    expect((await latest(store))?.version).toBe(v2);
    const m = await checkVersion(store, v2);
    expect(m.count).toBe(DOCS);
    assertExactlyOnce(await indexIds(store, v2), p.ids);
    expect(watch.seen.map((s) => s.version)).toEqual([v1, v2]);
    expect(watch.seen[1].at).toBeGreaterThanOrEqual(grownAt);
    await noTempFilesWhenIdle(store);
    for (const w of workers) expect(w.proc.exitCode, w.logs.slice(-10).join("\n")).toBeNull();
  }, 400_000);

  it.skipIf(nobodyBlocked)("permission denied: puts fail as 'permission denied' and retry; after chmod the run completes", async () => {
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-nobody-"));
    dirs.push(tmp);
    // tsx keeps its compile cache under TMPDIR, which the unprivileged worker must be able to write.
    await fsp.chmod(tmp, 0o1777);
    const p = await project(1500, "store", 64);
    await fsp.chmod(p.dir, 0o755);
    const store = path.join(p.dir, "store");
    await fsp.mkdir(store, { mode: 0o755 });
    await fsp.mkdir(path.join(store, "indexes"), { mode: 0o755 });
    workers = [spawnAs(NOBODY, p.yaml, { TMPDIR: tmp, HOME: tmp })];
    await ready(workers[0]);
    const runId = await createRun(db!.pool, p.config, "fault-test");

    // The store root belongs to root, mode 0755: writing the batch inputs is refused.
    const enumErrors = await waitFor(async () => {
      const e = await retries(runId, "embed_all");
      return e.length > 0 && e;
    }, 60_000, "embed_all to fail and be retried");
    expect(enumErrors[0]).toMatch(/^writing batch input failed: \[apfa\] \[store:fs\] put batches\/.+ failed: permission denied/);
    await fsp.chmod(store, 0o777);

    // Batches go through; `indexes/` is still root's, so the build is refused and nothing is published.
    const buildErrors = await waitFor(async () => {
      const e = await retries(runId, "build_index");
      return e.length > 0 && e;
    }, 120_000, "build_index to fail and be retried");
    expect(buildErrors[0]).toMatch(/\[store:fs\] put indexes\/[0-9a-f]{64}\/.+ failed: permission denied/);
    expect(await latest(store)).toBeUndefined();
    await noTempFilesWhenIdle(store);
    await fsp.chmod(path.join(store, "indexes"), 0o777);

    const done = await finished(db!.pool, runId, 180_000);
    expect(done.status, done.error ?? "").toBe("succeeded");
    expect((await latest(store))?.version).toBe(done.index_version);
    await checkVersion(store, done.index_version!);
    assertExactlyOnce(await indexIds(store, done.index_version!), p.ids);
    // The files were written by the unprivileged worker, not by root.
    expect(fs.statSync(path.join(store, "indexes/latest")).uid).toBe(NOBODY);
    await noTempFilesWhenIdle(store);
  }, 400_000);
});

/** `spawnWorker`, but the worker process runs as `uid` (same gid, no supplementary groups) through setpriv. */
function spawnAs(uid: number, yaml: string, env: Record<string, string>): WorkerProc {
  const proc = spawn("setpriv", [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", process.execPath, path.join(ROOT, "bin/apfa.mjs"), "worker", "--no-cron", "-c", yaml], {
    cwd: path.dirname(yaml),
    env: { ...process.env, APFA_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  const collect = (b: Buffer) => logs.push(...b.toString().split("\n").filter(Boolean));
  proc.stdout!.on("data", collect);
  proc.stderr!.on("data", collect);
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  return { proc, logs, exited };
}
