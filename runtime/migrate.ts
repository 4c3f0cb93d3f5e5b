/**
 * Applies graphile-worker's migrations, then apfa's own numbered SQL files from `migrations/` (each once, in a
 * transaction, recorded in `apfa.migrations`, serialised across processes by an advisory lock).
 * @module
 */
import * as fs from "node:fs";
import type pg from "pg";
import { runMigrations } from "graphile-worker";
import type { Logger } from "./contracts.ts";
import { ApfaError, errorMessage } from "./errors.ts";

const DIR = new URL("../migrations/", import.meta.url);
const LOCK = 7_411_001;

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

export function listMigrations(): Migration[] {
  return fs
    .readdirSync(DIR)
    .filter((f) => /^\d{6}_[\w-]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ id: Number(f.slice(0, 6)), name: f, sql: fs.readFileSync(new URL(f, DIR), "utf8") }));
}

/** Returns the names of the apfa migrations applied by this call. */
export async function migrate(pool: pg.Pool, log: Logger): Promise<string[]> {
  await runMigrations({ pgPool: pool, logger: undefined });
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query("select pg_advisory_lock($1)", [LOCK]);
    await client.query("create schema if not exists apfa");
    await client.query(
      "create table if not exists apfa.migrations (id int primary key, name text not null, applied_at timestamptz not null default now())",
    );
    const done = new Set((await client.query<{ id: number }>("select id from apfa.migrations")).rows.map((r) => r.id));
    for (const m of listMigrations()) {
      if (done.has(m.id)) continue;
      try {
        await client.query("begin");
        await client.query(m.sql);
        await client.query("insert into apfa.migrations (id, name) values ($1, $2)", [m.id, m.name]);
        await client.query("commit");
      } catch (err) {
        await client.query("rollback").catch(() => {});
        throw new ApfaError("database", `migration ${m.name} failed: ${errorMessage(err)}`, { cause: err });
      }
      applied.push(m.name);
      log.info("applied migration", { name: m.name });
    }
  } finally {
    await client.query("select pg_advisory_unlock($1)", [LOCK]).catch(() => {});
    client.release();
  }
  return applied;
}
