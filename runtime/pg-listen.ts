/**
 * One Postgres LISTEN that stays up: a dedicated connection (not a pooled one, which the pool could hand to
 * another query), re-established with capped, jittered backoff whenever it drops, after which `onReconnect` runs,
 * because NOTIFY is not replayed to a session that was not listening. Used by the `postgres` notifier (swap
 * events) and by the worker (which queue a new job belongs to).
 * @module
 */
import pg from "pg";
import type { Logger } from "./contracts.ts";
import { errorMessage } from "./errors.ts";
import { backoffMs } from "./retry.ts";

export interface ListenOptions {
  /** Connection settings of the dedicated client. */
  connection: pg.ClientConfig;
  /** A plain identifier. */
  channel: string;
  /** Called with each notification's payload on `channel`; a throw is logged, not fatal. */
  onPayload: (payload: string) => void;
  /** Called after a lost connection has been replaced and LISTENs again. */
  onReconnect?: () => void;
  /** Shown in the logs (the URL with its password redacted). */
  shown: string;
  log: Logger;
}

/** LISTENs on `channel` until the returned function is called. The first connection's failure is thrown. */
export async function listenForever(o: ListenOptions): Promise<() => Promise<void>> {
  let client: pg.Client | undefined;
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const listen = async (): Promise<pg.Client> => {
    const c = new pg.Client(o.connection);
    c.on("notification", (msg) => {
      if (msg.channel !== o.channel || msg.payload === undefined) return;
      try {
        o.onPayload(msg.payload);
      } catch (err) {
        o.log.error("notification handler threw", { channel: o.channel, error: errorMessage(err) });
      }
    });
    c.on("error", (err) => lost(c, err));
    c.on("end", () => lost(c));
    try {
      await c.connect();
      await c.query(`LISTEN ${pg.escapeIdentifier(o.channel)}`);
    } catch (err) {
      await c.end().catch(() => {});
      throw err;
    }
    return c;
  };

  const lost = (c: pg.Client, err?: Error) => {
    if (c !== client || closed) return; // the second of `error` + `end`, or a connection being retired
    client = undefined;
    o.log.warn("postgres listener connection lost; reconnecting", { url: o.shown, channel: o.channel, error: err?.message ?? "connection ended" });
    c.end().catch(() => {});
    void reconnect(0);
  };

  const reconnect = async (attempt: number): Promise<void> => {
    await new Promise<void>((r) => (timer = setTimeout(r, backoffMs(attempt))));
    if (closed) return;
    let c: pg.Client;
    try {
      c = await listen();
    } catch (err) {
      o.log.debug("postgres listener reconnect failed", { channel: o.channel, attempt: attempt + 1, error: errorMessage(err) });
      return reconnect(attempt + 1);
    }
    if (closed) return void (await c.end().catch(() => {}));
    client = c;
    o.log.info("postgres listener reconnected", { url: o.shown, channel: o.channel });
    try {
      o.onReconnect?.();
    } catch (err) {
      o.log.error("onReconnect threw", { channel: o.channel, error: errorMessage(err) });
    }
  };

  client = await listen();
  return async () => {
    closed = true;
    clearTimeout(timer);
    const c = client;
    client = undefined;
    await c?.end().catch(() => {});
  };
}
