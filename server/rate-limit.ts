/**
 * Per-client token buckets for the expensive routes. A client over its rate gets 429 with `Retry-After`;
 * buckets idle long enough to be full again are dropped, so memory stays bounded by active clients.
 * @module
 */

export interface RateLimiter {
  /** 0 when allowed, else seconds until a token is available. */
  take(client: string, now?: number): number;
  size(): number;
}

export function createRateLimiter(opts: { rps: number; burst: number; maxClients?: number }): RateLimiter {
  const buckets = new Map<string, { tokens: number; at: number }>();
  const max = opts.maxClients ?? 100_000;
  const refillMs = opts.rps > 0 ? (opts.burst / opts.rps) * 1000 : Infinity;
  let sweepAt = 0;
  return {
    take(client, now = Date.now()) {
      if (opts.rps <= 0) return 0;
      if (now - sweepAt > 10_000 || buckets.size > max) {
        sweepAt = now;
        for (const [k, b] of buckets) if (now - b.at > refillMs) buckets.delete(k);
      }
      const b = buckets.get(client) ?? { tokens: opts.burst, at: now };
      b.tokens = Math.min(opts.burst, b.tokens + ((now - b.at) / 1000) * opts.rps);
      b.at = now;
      buckets.set(client, b);
      if (b.tokens >= 1) {
        b.tokens -= 1;
        return 0;
      }
      return Math.ceil((1 - b.tokens) / opts.rps);
    },
    size: () => buckets.size,
  };
}
