/** Exponential backoff for transient failures (store uploads, remote calls) inside one job attempt, and the
 * reconnect delay of long-lived connections (notifiers, the worker's LISTEN). @module */

/** Reconnect delay after `attempt` failures: 100 ms doubling to a 5 s cap, with jitter so a fleet of
 * servers does not reconnect in lockstep. */
export function backoffMs(attempt: number): number {
  return Math.round(Math.min(100 * 2 ** attempt, 5000) * (0.75 + Math.random() * 0.5));
}

export interface RetryOptions {
  /** Total attempts including the first. @default 4 */
  attempts?: number;
  /** First delay in ms, doubled each time. @default 200 */
  baseMs?: number;
  maxMs?: number;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Return false for errors that must not be retried. */
  retryable?: (err: unknown) => boolean;
}

export async function withRetry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 4;
  const base = opts.baseMs ?? 200;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || (opts.retryable ?? isTransient)(err) === false) throw err;
      const delay = Math.min(opts.maxMs ?? 10_000, base * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.5);
      opts.onRetry?.(err, attempt, Math.round(delay));
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Error codes another attempt cannot fix: missing objects, refused access, bad keys, bad config or input. */
const PERMANENT = new Set(["not_found", "access_denied", "invalid_key", "config", "invalid_input", "ENOENT", "EACCES", "EPERM"]);

/** False for errors that another attempt cannot fix (see PERMANENT); true for everything else. */
export function isTransient(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return !(typeof code === "string" && PERMANENT.has(code));
}
