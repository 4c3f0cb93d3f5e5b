/**
 * The one retry policy for store calls. `openPipeline` wraps every store that does not retry by itself
 * (`Store.retriesItself`), so tasks, builds and the server call the store plainly and each call is retried at
 * exactly one level: transient failures with exponential backoff, permanent ones (`not_found`,
 * `access_denied`, bad keys, bad config) never. A streamed put cannot be replayed, so it gets one attempt.
 * @module
 */
import type { Logger, Store } from "./contracts.ts";
import { errorMessage } from "./errors.ts";
import { withRetry, type RetryOptions } from "./retry.ts";

export interface StoreRetryOptions {
  /** Attempts per call, the first included. @default 4 */
  attempts?: number;
  /** First backoff in ms, doubled per retry. @default 200 */
  baseMs?: number;
}

/** `store` with every call under the retry policy (returned as is when it retries by itself). */
export function retryingStore(store: Store, log: Logger, opts: StoreRetryOptions = {}): Store {
  if (store.retriesItself) return store;
  const policy = (op: string, key: string): RetryOptions => ({
    attempts: opts.attempts ?? 4,
    baseMs: opts.baseMs ?? 200,
    onRetry: (err, attempt, delayMs) => log.warn("store call failed; retrying", { op, key, attempt, delay_ms: delayMs, error: errorMessage(err) }),
  });
  return {
    ...store,
    describe: () => store.describe(),
    put: (key, data) => (data instanceof Uint8Array ? withRetry(() => store.put(key, data), policy("put", key)) : store.put(key, data)),
    get: (key) => withRetry(() => store.get(key), policy("get", key)),
    getStream: (key) => withRetry(() => store.getStream(key), policy("get", key)),
    copyToFile: store.copyToFile ? (key, dest) => withRetry(() => store.copyToFile!(key, dest), policy("get", key)) : undefined,
    stat: (key) => withRetry(() => store.stat(key), policy("stat", key)),
    list: (prefix) => store.list(prefix),
    delete: (key) => withRetry(() => store.delete(key), policy("delete", key)),
    close: store.close ? () => store.close!() : undefined,
  };
}
