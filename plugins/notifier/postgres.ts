/**
 * `postgres` notifier: swap events over LISTEN/NOTIFY, so a deployment that already has Postgres (it runs
 * graphile-worker) needs no Redis. Each subscription holds one dedicated connection; when it drops, the
 * listener reconnects with capped backoff, LISTENs again and then calls `onReconnect`, because NOTIFY is not
 * replayed to a session that was not listening.
 * @module
 */
import pg from "pg";
import { z } from "zod";
import { definePlugin, type Notifier } from "../../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../../runtime/errors.ts";
import { redact } from "../../runtime/log.ts";
import { listenForever } from "../../runtime/pg-listen.ts";
import { decodeSwapEvent, encodeSwapEvent, withTimeout } from "./_event.ts";

export const NAME = "postgres";

export interface PostgresOptions {
  /** `postgres://user[:password]@host:port/db`. @default env DATABASE_URL (the runtime sets it for embedded Postgres) */
  url?: string;
  /** LISTEN/NOTIFY channel (a plain identifier). @default "apfa_index_swap" */
  channel: string;
  /** How long `publish` (and the first `subscribe`) waits for Postgres before failing. @default 5000 */
  timeout_ms: number;
}

const options = z.strictObject({
  url: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "`url` must start with postgres:// or postgresql://")
    .optional()
    .describe("Postgres URL; defaults to $DATABASE_URL"),
  channel: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, "`channel` must be an identifier: letters, digits and _, at most 63 characters")
    .default("apfa_index_swap")
    .describe("LISTEN/NOTIFY channel"),
  timeout_ms: z.int().min(100).default(5000).describe("Milliseconds publish/subscribe wait for Postgres before failing"),
});

const WHERE = "notifier:postgres";

export default definePlugin({
  kind: "notifier",
  name: NAME,
  description: "Swap events over Postgres LISTEN/NOTIFY (reconnects forever, re-checks on reconnect)",
  options,
  create(opts: PostgresOptions, ctx): Notifier {
    const url = opts.url ?? ctx.env.DATABASE_URL;
    if (!url) {
      throw new ApfaError("config", "no Postgres URL: set option `url` or the DATABASE_URL environment variable", { where: WHERE });
    }
    const shown = String(redact(url));
    const channel = opts.channel;
    const log = ctx.log.child({ notifier: NAME, channel });
    const connOpts = {
      connectionString: url, connectionTimeoutMillis: opts.timeout_ms, query_timeout: opts.timeout_ms, application_name: "apfa-notifier", keepAlive: true,
    };
    const fail = (what: string, err: unknown) =>
      err instanceof ApfaError ? err : new ApfaError("notifier", `${what} at ${shown} failed: ${errorMessage(err)}`, { cause: err, where: WHERE });
    const closers = new Set<() => Promise<void>>();
    let pool: pg.Pool | undefined;

    return {
      async publish(event) {
        const payload = encodeSwapEvent(event, WHERE);
        if (!pool) {
          pool = new pg.Pool({ ...connOpts, max: 2, idleTimeoutMillis: 10_000, allowExitOnIdle: true });
          // An idle pooled connection that dies emits here; without a listener it would crash the process.
          pool.on("error", (err) => log.debug("idle postgres publisher connection lost", { error: err.message }));
        }
        try {
          await withTimeout(pool.query("SELECT pg_notify($1, $2)", [channel, payload]), opts.timeout_ms, `NOTIFY ${channel} at ${shown}`, WHERE);
        } catch (err) {
          throw fail(`NOTIFY ${channel}`, err);
        }
      },

      async subscribe(handler, { onReconnect } = {}) {
        let end: () => Promise<void>;
        try {
          end = await listenForever({ // the first LISTEN is bounded by connectionTimeoutMillis and query_timeout
            connection: connOpts,
            channel,
            shown,
            log,
            onReconnect,
            onPayload(payload) {
              const event = decodeSwapEvent(payload, log);
              if (event) handler(event);
            },
          });
        } catch (err) {
          throw fail(`LISTEN ${channel}`, err);
        }
        const unsubscribe = async () => {
          closers.delete(unsubscribe);
          await end();
        };
        closers.add(unsubscribe);
        return unsubscribe;
      },

      async close() {
        await Promise.all([...closers].map((f) => f()));
        const p = pool;
        pool = undefined;
        await p?.end().catch(() => {});
      },
    };
  },
});
