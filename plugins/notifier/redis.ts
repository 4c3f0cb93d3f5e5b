/**
 * `redis` notifier: swap events over Redis pub/sub. Publishing uses one shared connection; each subscription
 * gets its own, since a Redis connection in subscriber mode can run nothing else. Connections retry forever
 * with capped backoff; a subscriber that comes back re-subscribes and then calls `onReconnect`, because
 * pub/sub does not replay what was published while it was away.
 * @module
 */
import { once } from "node:events";
import { Redis } from "ioredis";
import { z } from "zod";
import { definePlugin, type Notifier } from "../../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../../runtime/errors.ts";
import { redact } from "../../runtime/log.ts";
import { backoffMs } from "../../runtime/retry.ts";
import { decodeSwapEvent, encodeSwapEvent, withTimeout } from "./_event.ts";

export const NAME = "redis";

export interface RedisOptions {
  /** `redis://[:password@]host:port[/db]` (or `rediss://`). @default env REDIS_URL, else "redis://127.0.0.1:6379" */
  url?: string;
  /** Pub/sub channel. @default "apfa:index:swap" */
  channel: string;
  /** How long `publish` (and the first `subscribe`) waits for Redis before failing. @default 5000 */
  timeout_ms: number;
}

const options = z.strictObject({
  url: z
    .string()
    .regex(/^rediss?:\/\//, "`url` must start with redis:// or rediss://")
    .optional()
    .describe("Redis URL; defaults to $REDIS_URL, else redis://127.0.0.1:6379"),
  channel: z.string().min(1).default("apfa:index:swap").describe("Pub/sub channel for swap events"),
  timeout_ms: z.int().min(100).default(5000).describe("Milliseconds publish/subscribe wait for Redis before failing"),
});

const WHERE = "notifier:redis";

/** Waits until `r` can take commands: connects a lazy client, or waits for a reconnect in progress. */
async function whenReady(r: Redis, ms: number): Promise<void> {
  if (r.status === "ready") return;
  if (r.status === "wait") return r.connect();
  await once(r, "ready", { signal: AbortSignal.timeout(ms) });
}

async function disconnect(r: Redis): Promise<void> {
  if (r.status === "end") return;
  const ended = once(r, "end").catch(() => {});
  r.disconnect();
  await withTimeout(ended, 2000, "closing Redis connection", WHERE).catch(() => {});
}

export default definePlugin({
  kind: "notifier",
  name: NAME,
  description: "Swap events over Redis pub/sub (reconnects forever, re-checks on reconnect)",
  options,
  create(opts: RedisOptions, ctx): Notifier {
    const url = opts.url ?? ctx.env.REDIS_URL ?? "redis://127.0.0.1:6379";
    const shown = String(redact(url));
    const channel = opts.channel;
    const log = ctx.log.child({ notifier: NAME, channel });
    const retryStrategy = (times: number) => backoffMs(times - 1);
    const fail = (what: string, err: unknown) =>
      err instanceof ApfaError ? err : new ApfaError("notifier", `${what} at ${shown} failed: ${errorMessage(err)}`, { cause: err, where: WHERE });
    const conns = new Set<Redis>();
    let pub: Redis | undefined;

    /** Logs a connection's first error after it was up; the retries that follow would only repeat it. */
    const watch = (r: Redis, role: string) => {
      let up = false;
      r.on("ready", () => (up = true));
      r.on("error", (err: Error) => {
        if (up) log.warn(`redis ${role} connection lost; reconnecting`, { url: shown, error: err.message });
        else log.debug(`redis ${role} connection failed`, { url: shown, error: err.message });
        up = false;
      });
      conns.add(r);
      return r;
    };

    return {
      async publish(event) {
        const payload = encodeSwapEvent(event, WHERE);
        // No offline queue and no resend: a publish that cannot go out now fails now, instead of reaching
        // subscribers minutes later out of order.
        pub ??= watch(new Redis(url, {
          lazyConnect: true, enableOfflineQueue: false, autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 0,
          connectTimeout: opts.timeout_ms, retryStrategy,
        }), "publisher");
        const p = pub;
        try {
          await withTimeout(whenReady(p, opts.timeout_ms).then(() => p.publish(channel, payload)), opts.timeout_ms,
            `publishing to Redis channel ${channel} at ${shown} (is Redis up?)`, WHERE);
        } catch (err) {
          throw fail(`publishing to Redis channel ${channel}`, (err as Error).name === "AbortError" ? `Redis not reachable within ${opts.timeout_ms} ms` : err);
        }
      },

      async subscribe(handler, { onReconnect } = {}) {
        const sub = watch(new Redis(url, {
          lazyConnect: true, autoResubscribe: false, maxRetriesPerRequest: null, connectTimeout: opts.timeout_ms, retryStrategy,
          // Named so operators (and tests) can tell subscribers apart in CLIENT LIST.
          connectionName: `apfa:notifier:${channel}`.replace(/[^\x21-\x7e]/g, "_"),
        }), "subscriber");
        let live = false;
        sub.on("message", (ch: string, raw: string) => {
          if (ch !== channel) return;
          const event = decodeSwapEvent(raw, log);
          if (!event) return;
          try {
            handler(event);
          } catch (err) {
            log.error("swap event handler threw", { error: errorMessage(err) });
          }
        });
        // Re-subscribing ourselves (autoResubscribe off) lets onReconnect run only once the subscription is
        // back, so nothing published after the caller's re-check can be missed.
        sub.on("ready", () => {
          if (!live) return;
          sub.subscribe(channel).then(() => {
            log.info("redis subscriber reconnected", { url: shown });
            try {
              onReconnect?.();
            } catch (err) {
              log.error("onReconnect threw", { error: errorMessage(err) });
            }
          }, (err: unknown) => log.warn("redis re-subscribe failed", { error: errorMessage(err) }));
        });
        try {
          await withTimeout(sub.connect().then(() => sub.subscribe(channel)), opts.timeout_ms, `subscribing to Redis channel ${channel} at ${shown}`, WHERE);
        } catch (err) {
          conns.delete(sub);
          await disconnect(sub);
          throw fail(`subscribing to Redis channel ${channel}`, err);
        }
        live = true;
        return async () => {
          live = false;
          conns.delete(sub);
          await disconnect(sub);
        };
      },

      async close() {
        const all = [...conns];
        conns.clear();
        pub = undefined;
        await Promise.all(all.map(disconnect));
      },
    };
  },
});
