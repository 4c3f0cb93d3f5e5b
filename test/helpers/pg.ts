/**
 * Real Postgres for tests. apfa uses fixed schema names (`apfa`, `graphile_worker`), so a test file isolates
 * itself with a fresh DATABASE (`withTestDatabase`) on the server at `APFA_TEST_ADMIN_URL` (default
 * `postgres://postgres@127.0.0.1:5432/postgres`) and drops it afterwards. `testConfig` builds a validated
 * PipelineConfig from YAML text or an object through the real loader; `openTestPipeline` does both, runs the
 * migrations and opens a Pipeline on it.
 * @module
 */
import * as crypto from "node:crypto";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { stringify } from "yaml";
import { formatProblem, loadConfig } from "../../runtime/config/load.ts";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import type { Logger, Store } from "../../runtime/contracts.ts";
import type { Database } from "../../runtime/db.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { createPlugin, openPipeline, type Pipeline } from "../../runtime/pipeline.ts";

/** The server tests create their databases on (its own database is only used to CREATE/DROP). */
export const ADMIN_URL = process.env.APFA_TEST_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/** Absolute path of the deterministic test embedder (test/fixtures/plugins/hash-embedder.ts). */
export const HASH_EMBEDDER = fileURLToPath(new URL("../fixtures/plugins/hash-embedder.ts", import.meta.url));

export interface TestDatabase {
  name: string;
  url: string;
  pool: pg.Pool;
  /** Ends the pool, terminates other sessions on the database and drops it. Safe to call twice. */
  drop(): Promise<void>;
}

/** The URL of database `name` on the admin server. */
export function databaseUrl(name: string): string {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * Creates `apfa_test_<random>` and returns a pool on it. The pool is sized for several in-process workers: each
 * graphile-worker runner keeps one connection for LISTEN and its jobs borrow more.
 */
export async function withTestDatabase(opts: { prefix?: string; max?: number } = {}): Promise<TestDatabase> {
  const name = `${opts.prefix ?? "apfa_test"}_${Date.now().toString(36)}_${crypto.randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`create database "${name}"`);
  } finally {
    await admin.end();
  }
  const url = databaseUrl(name);
  const pool = new pg.Pool({ connectionString: url, max: opts.max ?? 20 });
  // graphile-worker warns unless the pool and its clients have error handlers (a dropped connection must not crash).
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  let dropped = false;
  return {
    name,
    url,
    pool,
    async drop() {
      if (dropped) return;
      dropped = true;
      await pool.end().catch(() => {});
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

/** A Database (as runtime/db.ts returns) over a test database, without owning its lifetime. */
export function asDatabase(db: TestDatabase): Database {
  return { url: db.url, pool: db.pool, mode: "external", close: async () => {} };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === "object" && !Array.isArray(v);

/** Recursive merge of plain objects; arrays and scalars in `b` replace those in `a`. */
export function deepMerge(a: Obj, b: Obj): Obj {
  const out: Obj = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = isObj(v) && isObj(out[k]) ? deepMerge(out[k] as Obj, v) : v;
  return out;
}

export interface TestConfigOptions {
  /** Where the file pretends to live (relative plugin paths and store dirs resolve against its directory). */
  file?: string;
  env?: Record<string, string | undefined>;
  /** Load and validate the stage plugins too. @default true */
  checkPlugins?: boolean;
}

/**
 * A PipelineConfig from YAML text or an object, through `loadConfig` exactly as the CLI loads a file.
 * Throws with every problem formatted as `apfa lint` prints it.
 */
export async function testConfig(input: string | Obj, opts: TestConfigOptions = {}): Promise<PipelineConfig> {
  const text = typeof input === "string" ? input : stringify(input);
  const file = opts.file ?? path.join(process.cwd(), "pipeline.test.yaml");
  const r = await loadConfig(file, { text, env: opts.env ?? {}, checkPlugins: opts.checkPlugins ?? true });
  if (!r.config) throw new Error(`test config is invalid:\n${r.problems.map(formatProblem).join("\n")}\n--- yaml ---\n${text}`);
  return r.config;
}

export interface TestPipeline {
  pipeline: Pipeline;
  config: PipelineConfig;
  db: TestDatabase;
  /** Temp directory holding the fs store (`store/`) and anything a test writes next to it. */
  dir: string;
  /** Closes the pipeline, drops the database (unless it was passed in) and removes `dir`. */
  close(): Promise<void>;
}

/**
 * A migrated pipeline on a fresh database: name `test`, fs store under a temp dir, a jsonl source reading
 * `<dir>/docs.jsonl` (write it before a run), the hash test embedder, the flat index, the postgres notifier on
 * the same database, schedules as the defaults give them. `overrides` is deep-merged over that.
 */
export async function openTestPipeline(
  overrides: Obj = {},
  opts: {
    db?: TestDatabase;
    log?: Logger;
    /** Wraps the configured store (fault injection, counting). */
    wrapStore?: (store: Store) => Store;
    env?: Record<string, string | undefined>;
  } = {},
): Promise<TestPipeline> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-pipeline-"));
  const db = opts.db ?? (await withTestDatabase());
  try {
    const base: Obj = {
      name: "test",
      database: { url: db.url },
      store: { plugin: "fs", options: { dir: path.join(dir, "store") } },
      stages: {
        source: { plugin: "jsonl", options: { path: "docs.jsonl" } },
        embedder: { plugin: HASH_EMBEDDER },
        index: { plugin: "flat" },
        notifier: { plugin: "postgres", options: { url: db.url } },
      },
    };
    const config = await testConfig(deepMerge(base, overrides), { file: path.join(dir, "pipeline.yaml"), env: opts.env });
    const log = opts.log ?? silentLogger;
    await migrate(db.pool, log);
    let store: Store | undefined;
    if (opts.wrapStore) {
      const made = await createPlugin<Store>("store", config.store, { baseDir: config.baseDir, log, env: opts.env ?? {} });
      store = opts.wrapStore(made);
    }
    const pipeline = await openPipeline(config, log, { db: asDatabase(db), store });
    return {
      pipeline,
      config,
      db,
      dir,
      async close() {
        await pipeline.close().catch(() => {});
        if (!opts.db) await db.drop();
        await fsp.rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (!opts.db) await db.drop().catch(() => {});
    await fsp.rm(dir, { recursive: true, force: true });
    throw err;
  }
}
