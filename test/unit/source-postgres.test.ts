import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import postgres from "../../plugins/source/postgres.ts";
import type { Source, SourceItem } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { testSource } from "../conformance/source.ts";

const DATABASE_URL = process.env.APFA_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = `apfa_src_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const N = 20_000;
const ctx = { baseDir: "/", log: silentLogger, env: { DATABASE_URL } };
const query = `SELECT 'doc-' || id AS id, body AS text, kind, id AS n FROM ${schema}.docs ORDER BY docs.id`;
const make = (o: Record<string, unknown> = {}) => postgres.create(postgres.options.parse({ query, ...o }), ctx) as Source;

async function withClient<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: DATABASE_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(() =>
  withClient(async (c) => {
    await c.query(`CREATE SCHEMA ${schema}`);
    await c.query(`CREATE TABLE ${schema}.docs (id int PRIMARY KEY, body text, kind text)`);
    await c.query(`INSERT INTO ${schema}.docs SELECT i, 'text of ' || i, CASE WHEN i % 2 = 0 THEN 'loan' ELSE 'card' END FROM generate_series(1, ${N}) i`);
  }));
afterAll(() => withClient((c) => c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)));

const ids = Array.from({ length: N }, (_, i) => `doc-${i + 1}`);
testSource("postgres", async () => make(), { ids });

describe("postgres source", () => {
  it("pages through a server-side cursor with fetch_size 500, in query order", async () => {
    const src = make({ fetch_size: 500 });
    const seen: string[] = [];
    let sawCursor = false;
    let pages = 0;
    for await (const page of src.pages({ pageSize: 300 })) {
      if (pages++ === 5) {
        // Mid-stream the source's connection sits in a transaction, its last statement a FETCH from the cursor.
        const act = await withClient((c) =>
          c.query(`SELECT state, query FROM pg_stat_activity WHERE application_name = 'apfa:source:postgres' AND query LIKE 'FETCH 500 FROM apfa_source%'`));
        sawCursor = act.rows.some((r) => r.state === "idle in transaction");
      }
      expect(page.length).toBeLessThanOrEqual(300);
      for (const r of page) seen.push(String((r as { id: unknown }).id));
    }
    expect(sawCursor).toBe(true);
    expect(seen).toEqual(ids);
  });

  it("maps columns: id and text out, the rest to metadata", async () => {
    for await (const page of make({ fetch_size: 2 }).pages({ pageSize: 3 })) {
      expect(page[1]).toEqual({ id: "doc-2", text: "text of 2", metadata: { kind: "loan", n: 2 }, location: "postgres:row 2" });
      break;
    }
  });

  it("an early stop rolls back and releases the connection", async () => {
    const src = make({ fetch_size: 100 });
    let first: SourceItem[] = [];
    for await (const p of src.pages({ pageSize: 10 })) {
      first = p;
      break;
    }
    expect(first).toHaveLength(10);
    // The backend exits just after the client disconnects; give it a moment before concluding it leaked.
    let left = -1;
    const until = Date.now() + 15_000;
    for (let i = 0; left !== 0 && (i === 0 || Date.now() < until); i++) {
      if (i) await new Promise((r) => setTimeout(r, 50));
      const res = await withClient((c) =>
        c.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'apfa:source:postgres' AND query LIKE '%FETCH 100 FROM apfa_source%'`));
      left = res.rows[0].n;
    }
    expect(left).toBe(0);
  });

  it("count() wraps the query", async () => {
    expect(await make({ query: `SELECT id, body AS text FROM ${schema}.docs WHERE kind = 'loan';` }).count!()).toBe(N / 2);
  });

  it("names the missing id column and how to fix it", async () => {
    const err = await collect(make({ query: `SELECT id AS doc_id, body AS text FROM ${schema}.docs ORDER BY id` })).catch((e) => e);
    expect(isApfaError(err, "config")).toBe(true);
    expect(err.message).toMatch(/returns no column "id" \(columns: doc_id, text\); set `id_column` or alias it in the query \(AS id\)/);
  });

  it("reports a bad query as a config error with the position", async () => {
    const err = await collect(make({ query: `SELECT id, body AS text FROM ${schema}.nope` })).catch((e) => e);
    expect(isApfaError(err, "config")).toBe(true);
    expect(err.message).toMatch(/relation ".*\.nope" does not exist \(at character \d+ of the query\)/);
  });

  it("needs a url or DATABASE_URL, and never echoes the password", async () => {
    expect(() => postgres.create(postgres.options.parse({ query }), { ...ctx, env: {} })).toThrow(/set the DATABASE_URL environment variable/);
    const bad = postgres.create(postgres.options.parse({ query, url: "postgres://postgres:s3cr3t-pw@127.0.0.1:1/test" }), ctx) as Source;
    const err = await collect(bad).catch((e) => e);
    expect(isApfaError(err, "database")).toBe(true);
    expect(err.message).not.toContain("s3cr3t-pw");
  });
});

async function collect(src: Source): Promise<SourceItem[]> {
  const out: SourceItem[] = [];
  for await (const p of src.pages({ pageSize: 1000 })) out.push(...p);
  return out;
}
