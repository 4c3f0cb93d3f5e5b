/**
 * `postgres` source: the rows of a SELECT, streamed through a server-side cursor (`DECLARE ... CURSOR` in a
 * read-only REPEATABLE READ transaction, then `FETCH fetch_size`), so a million-row query never sits in memory
 * at once and every page comes from one consistent snapshot. Columns other than the id and text columns go
 * to metadata, with pg's usual types (int8 and numeric as strings, timestamps as Date, json as objects).
 * The connection string comes from the environment; it is never logged or put in an error message.
 * @module
 */
import pg from "pg";
import { z } from "zod";
import { definePlugin, type Source } from "../../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../../runtime/errors.ts";
import { toRecord } from "./jsonl.ts";
import { paginate } from "./parquet.ts";

export const NAME = "postgres";

export interface PostgresOptions {
  /** Connection string; put it in the environment and write `${VAR}` here. @default the DATABASE_URL environment variable */
  url?: string;
  /** The SELECT whose rows are the documents; add ORDER BY for a stable order. */
  query: string;
  /** Result column holding the document id. @default "id" */
  id_column: string;
  /** Result column holding the text to embed. @default "text" */
  text_column: string;
  /** Rows per FETCH from the cursor. @default 1000 */
  fetch_size: number;
  /**
   * A column of the query that grows whenever its row changes (`updated_at`, a version counter). With it, an
   * incremental run reads only the rows at or past the previous run's high-water mark, plus the id column of
   * every row (to find deletions); without it, every run reads every row and compares hashes.
   */
  watermark_column?: string;
}

const options = z.strictObject({
  url: z.string().min(1).optional().describe("Connection string (use ${VAR}); defaults to the DATABASE_URL environment variable"),
  query: z.string().min(1).describe("SELECT whose rows are the documents; add ORDER BY for a stable order"),
  id_column: z.string().min(1).default("id").describe("Result column holding the document id"),
  text_column: z.string().min(1).default("text").describe("Result column holding the text to embed"),
  fetch_size: z.number().int().min(1).max(100_000).default(1000).describe("Rows per FETCH from the server-side cursor"),
  watermark_column: z.string().min(1).optional()
    .describe("Column that grows whenever a row changes (updated_at); incremental runs then read only rows at or past the last run's maximum"),
});

/** A column name as a quoted SQL identifier. */
const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** pg's messages name the failing SQL construct, never the password. SQLSTATE class 42 (syntax, unknown table
 * or column, permission) is a mistake in the query, so it is reported as config; the rest as database. */
function queryError(what: string, err: unknown): ApfaError {
  const e = err as { code?: string; position?: string };
  const pos = e.position ? ` (at character ${e.position} of the query)` : "";
  const code = e.code?.startsWith("42") ? "config" : "database";
  return new ApfaError(code, `postgres source: ${what} failed: ${errorMessage(err)}${pos}`, { cause: err, where: "stage:source:postgres" });
}

export default definePlugin({
  kind: "source",
  name: NAME,
  description: "Rows of a Postgres SELECT, streamed through a server-side cursor",
  options,
  create(opts: PostgresOptions, ctx): Source {
    const url = opts.url ?? ctx.env.DATABASE_URL;
    if (!url) throw new ApfaError("config", "postgres source needs a database: set the DATABASE_URL environment variable or the source option `url`");
    // A trailing `;` would end the DECLARE early; the query goes inside DECLARE and a subquery.
    const query = opts.query.trim().replace(/;\s*$/, "");
    if (!/\border\s+by\b/i.test(query)) ctx.log.warn("postgres source query has no ORDER BY; row order (and so page boundaries) may change between runs");
    const open = new Set<pg.Client>();

    async function connect(): Promise<pg.Client> {
      const client = new pg.Client({ connectionString: url, application_name: "apfa:source:postgres" });
      client.on("error", () => {}); // a dropped connection surfaces as the next query's rejection
      try {
        await client.connect();
      } catch (err) {
        throw new ApfaError("database", `postgres source cannot connect: ${errorMessage(err)}`, { cause: err, where: "stage:source:postgres" });
      }
      open.add(client);
      return client;
    }
    async function release(client: pg.Client) {
      open.delete(client);
      await client.end().catch(() => {});
    }

    const wm = opts.watermark_column;
    /** The high-water mark of the last read, taken in that read's snapshot. */
    let mark: string | undefined;

    /** Runs `fn` in a read-only REPEATABLE READ transaction: every statement sees one snapshot. */
    async function* inSnapshot<T>(fn: (client: pg.Client) => AsyncGenerator<T>): AsyncGenerator<T> {
      const client = await connect();
      let done = false;
      try {
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        yield* fn(client);
        await client.query("COMMIT");
        done = true;
      } finally {
        // An early exit (consumer stopped, error) rolls back, which also closes the cursor.
        if (!done) await client.query("ROLLBACK").catch(() => {});
        await release(client);
      }
    }

    /** Streams `sql` through a server-side cursor, checking once that the id and text columns exist. */
    async function* fetchAll(client: pg.Client, sql: string, params: unknown[], cols: Array<["id_column" | "text_column", string]>, signal?: AbortSignal) {
      try {
        await client.query(`DECLARE apfa_source NO SCROLL CURSOR FOR ${sql}`, params);
      } catch (err) {
        throw queryError("the query", err);
      }
      let checked = false;
      while (!signal?.aborted) {
        const res = await client.query(`FETCH ${opts.fetch_size} FROM apfa_source`).catch((err) => Promise.reject(queryError("FETCH", err)));
        if (!checked) {
          const names = res.fields.map((f) => f.name);
          for (const [opt, col] of cols) {
            if (!names.includes(col)) {
              throw new ApfaError("config", `postgres source query returns no column ${JSON.stringify(col)} (columns: ${names.join(", ")}); set \`${opt}\` or alias it in the query (AS ${col})`);
            }
          }
          checked = true;
        }
        yield* res.rows as Record<string, unknown>[];
        if (res.rows.length < opts.fetch_size) break;
      }
      await client.query("CLOSE apfa_source");
    }

    /** The query's rows (those at or past `since` with a watermark), and the new high-water mark, in one snapshot. */
    function rows(signal?: AbortSignal, since?: string) {
      return inSnapshot(async function* (client) {
        if (wm) {
          const r = await client.query(`SELECT max(q.${ident(wm)})::text AS m FROM (${query}) AS q`).catch((err) => Promise.reject(queryError(`reading watermark_column ${wm}`, err)));
          mark = r.rows[0].m ?? since;
        }
        const sql = since === undefined ? query : `SELECT * FROM (${query}) AS q WHERE q.${ident(wm!)} >= $1`;
        let n = 0;
        for await (const row of fetchAll(client, sql, since === undefined ? [] : [since], [["id_column", opts.id_column], ["text_column", opts.text_column]], signal)) {
          yield toRecord(row, opts.id_column, opts.text_column, `postgres:row ${++n}`);
        }
      });
    }

    return {
      async count() {
        const client = await connect();
        try {
          const res = await client.query(`SELECT count(*) AS n FROM (${query}) AS apfa_count`);
          return Number(res.rows[0].n);
        } catch (err) {
          throw queryError("count", err);
        } finally {
          await release(client);
        }
      },
      pages: ({ pageSize, signal }) => paginate(rows(signal), pageSize, signal),
      cursor: () => mark,
      async changes(since, { pageSize, signal }) {
        if (!wm) return undefined;
        return {
          // Rows written at the mark itself are read again: another transaction may have committed one since.
          pages: paginate(rows(signal, since), pageSize, signal),
          ids: () => paginate(
            inSnapshot(async function* (client) {
              for await (const row of fetchAll(client, `SELECT q.${ident(opts.id_column)} AS id FROM (${query}) AS q`, [], [], signal)) yield row.id;
            }),
            10_000,
            signal,
          ),
          async get(ids) {
            const out = [];
            for await (const row of inSnapshot((client) => fetchAll(client, `SELECT * FROM (${query}) AS q WHERE q.${ident(opts.id_column)}::text = ANY($1)`, [ids], [], signal))) {
              out.push(toRecord(row, opts.id_column, opts.text_column, `postgres:id ${String(row[opts.id_column])}`));
            }
            return out;
          },
        };
      },
      async close() {
        await Promise.all([...open].map(release));
      },
    };
  },
});
