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
}

const options = z.strictObject({
  url: z.string().min(1).optional().describe("Connection string (use ${VAR}); defaults to the DATABASE_URL environment variable"),
  query: z.string().min(1).describe("SELECT whose rows are the documents; add ORDER BY for a stable order"),
  id_column: z.string().min(1).default("id").describe("Result column holding the document id"),
  text_column: z.string().min(1).default("text").describe("Result column holding the text to embed"),
  fetch_size: z.number().int().min(1).max(100_000).default(1000).describe("Rows per FETCH from the server-side cursor"),
});

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

    async function* rows(signal?: AbortSignal) {
      const client = await connect();
      let done = false;
      try {
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        try {
          await client.query(`DECLARE apfa_source NO SCROLL CURSOR FOR ${query}`);
        } catch (err) {
          throw queryError("the query", err);
        }
        let n = 0;
        let checked = false;
        while (!signal?.aborted) {
          const res = await client.query(`FETCH ${opts.fetch_size} FROM apfa_source`).catch((err) => Promise.reject(queryError("FETCH", err)));
          if (!checked) {
            const cols = res.fields.map((f) => f.name);
            for (const [opt, col] of [["id_column", opts.id_column], ["text_column", opts.text_column]] as const) {
              if (!cols.includes(col)) {
                throw new ApfaError("config", `postgres source query returns no column ${JSON.stringify(col)} (columns: ${cols.join(", ")}); set \`${opt}\` or alias it in the query (AS ${col})`);
              }
            }
            checked = true;
          }
          for (const row of res.rows as Record<string, unknown>[]) yield toRecord(row, opts.id_column, opts.text_column, `postgres:row ${++n}`);
          if (res.rows.length < opts.fetch_size) break;
        }
        await client.query("COMMIT");
        done = true;
      } finally {
        // An early exit (consumer stopped, error) rolls back, which also closes the cursor.
        if (!done) await client.query("ROLLBACK").catch(() => {});
        await release(client);
      }
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
      async close() {
        await Promise.all([...open].map(release));
      },
    };
  },
});
