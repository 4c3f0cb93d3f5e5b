/**
 * What the notifiers share: the swap-event wire format and the reconnect backoff. Not a plugin (the `_`
 * prefix keeps it out of the built-in list).
 * @module
 */
import { z } from "zod";
import type { Logger, SwapEvent } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";

/** The JSON payload on the channel. Extra fields are dropped, so newer publishers can add some. */
export const swapEventSchema = z.object({
  version: z.string().min(1),
  engine: z.string().min(1),
  dims: z.int().positive(),
  count: z.int().nonnegative(),
  created_at: z.string().min(1),
});

/** Validates and serialises an event for publishing; a bad event is the caller's bug, so it throws. */
export function encodeSwapEvent(event: SwapEvent, where: string): string {
  const r = swapEventSchema.safeParse(event);
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${i.path.join(".") || "(event)"}: ${i.message}`).join("; ");
    throw new ApfaError("invalid_input", `cannot publish swap event: ${problems}`, { where });
  }
  return JSON.stringify(r.data);
}

/** Parses a received payload; anything else on the channel is logged and skipped, never thrown, so one bad
 * publisher cannot stop a server from hearing the next good event. */
export function decodeSwapEvent(raw: string, log: Logger): SwapEvent | undefined {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    log.warn("ignoring swap notification that is not JSON", { payload: raw.slice(0, 200) });
    return undefined;
  }
  const r = swapEventSchema.safeParse(json);
  if (!r.success) {
    log.warn("ignoring malformed swap notification", { payload: raw.slice(0, 200), problem: r.error.issues[0]?.message });
    return undefined;
  }
  return r.data;
}


/** Rejects with a `notifier`/`timeout` error when `p` does not settle within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string, where: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  p.catch(() => {}); // a late rejection after the timeout won must not become an unhandled rejection
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ApfaError("timeout", `${what} timed out after ${ms} ms`, { where })), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
