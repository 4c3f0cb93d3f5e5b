/**
 * Response cache for `/generate-advice`, keyed by (index version, normalised query, k). The index version is
 * part of the key, so a swap to a new version can never serve an answer computed against the old one.
 *
 * Redis (shared by every server process) when configured and connected; otherwise, and whenever a Redis
 * call fails or takes longer than `command_timeout_ms`, an in-process LRU. A down or stalled Redis therefore
 * costs a request at most one short timeout and never an error; ioredis keeps reconnecting in the
 * background and the cache goes back to Redis on its own.
 * @module
 */
import type { Redis } from "ioredis";
import type { Logger } from "../runtime/contracts.ts";
import { ApfaError } from "../runtime/errors.ts";
import { silentLogger } from "../runtime/log.ts";

export interface CacheOptions {
  /** `redis://` URL of the shared cache; unset = in-process LRU only. */
  redis_url?: string;
  /** Prepended to every Redis key, so several deployments can share one Redis. @default "apfa:cache:" */
  key_prefix?: string;
  /** Seconds an answer stays cached. @default 300 */
  ttl_s?: number;
  /** Entries the in-process LRU keeps. @default 10000 */
  max_entries?: number;
  /** Longest a Redis command may take before the LRU answers instead. @default 100 */
  command_timeout_ms?: number;
  /**
   * The other server processes' in-process caches (`apfa serve --processes N`): an answer stored in this
   * process's LRU is sent to them, and theirs come in here, so each answer is computed once, not once per process.
   * Not used for answers stored in Redis, which every process reads already.
   */
  peers?: CachePeers;
  /** Called for every answer a peer sent (wire to `apfa_cache_peer_fills_total`). */
  onPeerFill?: () => void;
  /** Called on every hit/miss with the tier that answered (wire to `apfa_cache_hits_total` / `_misses_total`). */
  onHit?: (backend: CacheBackend) => void;
  onMiss?: (backend: CacheBackend) => void;
  log?: Logger;
}

export type CacheBackend = "redis" | "memory";

/** One answer stored by a process, as its peers receive it. */
export interface CacheFill {
  version: string;
  query: string;
  k: number;
  value: unknown;
}

/** How an in-process cache reaches the other processes' (server/cluster.ts over the supervisor's IPC channel). */
export interface CachePeers {
  send(fill: CacheFill): void;
  /** `receive` is called with every fill another process sends. */
  onFill(receive: (fill: CacheFill) => void): void;
}

export interface CacheStats {
  /** Where the next call goes. */
  backend: CacheBackend;
  hits: number;
  misses: number;
  sets: number;
  /** Redis calls that failed or timed out (and were answered by the LRU). */
  redis_errors: number;
  /** Answers other processes computed, stored in this process's LRU. */
  peer_fills: number;
  memory_entries: number;
}

export interface ResponseCache<T> {
  get(version: string, query: string, k: number): Promise<T | undefined>;
  set(version: string, query: string, k: number, value: T): Promise<void>;
  stats(): CacheStats;
  close(): Promise<void>;
}

/** NFKC, lowercase, whitespace collapsed and trimmed: "  Best  LOAN\t" and "best loan" share an entry. */
export function normaliseQuery(query: string): string {
  return query.normalize("NFKC").toLowerCase().replace(/\s+/gu, " ").trim();
}

/** `<version>:<k>:<sha256 of the normalised query>`; the hash keeps keys short whatever the query. */
export async function cacheKey(version: string, query: string, k: number): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(normaliseQuery(query))));
  return `${version}:${k}:${Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * The in-process tier's key: the normalised query itself, no digest. Hashing only keeps Redis keys short; in a
 * Map it would cost an asynchronous SHA-256 per request (a tenth of a busy server's CPU, measured under 10k
 * connections) for nothing.
 */
const memoryKey = (version: string, query: string, k: number): string => `${version}:${k}:${normaliseQuery(query)}`;

/**
 * A Map keeps insertion order, so re-inserting on read makes its first key the least recently used. Values are
 * kept as they were set, not serialised: a hit hands back the same object, which callers treat as read-only.
 */
class Lru<V> {
  private readonly _map = new Map<string, { value: V; expires: number }>();
  private readonly _max: number;
  constructor(max: number) {
    this._max = max;
  }
  get size(): number {
    return this._map.size;
  }
  get(key: string): V | undefined {
    const e = this._map.get(key);
    if (!e) return undefined;
    this._map.delete(key);
    if (e.expires <= Date.now()) return undefined;
    this._map.set(key, e);
    return e.value;
  }
  set(key: string, value: V, ttlMs: number): void {
    this._map.delete(key);
    this._map.set(key, { value, expires: Date.now() + ttlMs });
    while (this._map.size > this._max) this._map.delete(this._map.keys().next().value!);
  }
  clear(): void {
    this._map.clear();
  }
}

export function createCache<T>(opts: CacheOptions = {}): ResponseCache<T> {
  const prefix = opts.key_prefix ?? "apfa:cache:";
  const ttl = opts.ttl_s ?? 300;
  if (!Number.isInteger(ttl) || ttl < 1) throw new ApfaError("config", `server.cache.ttl_s must be a whole number of seconds >= 1, got ${ttl}`);
  const log = (opts.log ?? silentLogger).child({ component: "cache" });
  const lru = new Lru<T>(opts.max_entries ?? 10_000);
  const s = { hits: 0, misses: 0, sets: 0, redis_errors: 0, peer_fills: 0 };
  let redis: Redis | undefined;
  let warned = false;

  let closed = false;
  if (opts.redis_url) {
    const url = opts.redis_url;
    // ioredis is loaded only when a Redis cache is configured; until it connects the LRU answers anyway.
    void import("ioredis").then(({ Redis }) => {
      if (closed) return;
      const r = new Redis(url, {
        commandTimeout: opts.command_timeout_ms ?? 100,
        connectTimeout: 1000,
        enableOfflineQueue: false, // while disconnected, fail at once (→ LRU) instead of queueing
        maxRetriesPerRequest: 0,
        autoResendUnfulfilledCommands: false,
        retryStrategy: (times) => Math.min(100 * times, 2000), // keep trying forever, at most every 2 s
      });
      r.on("error", (err: Error) => {
        if (!warned) log.warn("redis cache unavailable; using the in-process cache", { redis: url, error: err.message });
        warned = true;
      });
      r.on("ready", () => {
        if (warned) log.info("redis cache is back");
        warned = false;
      });
      redis = r;
    }, (err: unknown) => log.warn("redis cache unavailable (ioredis did not load); using the in-process cache", { error: (err as Error).message }));
  }

  opts.peers?.onFill((f) => {
    s.peer_fills++;
    opts.onPeerFill?.();
    lru.set(memoryKey(f.version, f.query, f.k), f.value as T, ttl * 1000);
  });

  const usable = () => redis !== undefined && redis.status === "ready";
  const failed = (op: string, err: unknown) => {
    s.redis_errors++;
    log.debug(`redis ${op} failed; using the in-process cache`, { error: (err as Error).message });
  };

  return {
    async get(version, query, k) {
      let found: T | undefined;
      let backend: CacheBackend = "memory";
      if (usable()) {
        try {
          const raw = await redis!.get(prefix + (await cacheKey(version, query, k)));
          backend = "redis";
          if (raw !== null) found = JSON.parse(raw) as T;
        } catch (err) {
          failed("GET", err);
        }
      }
      if (backend === "memory") found = lru.get(memoryKey(version, query, k));
      if (found === undefined) {
        s.misses++;
        opts.onMiss?.(backend);
        return undefined;
      }
      s.hits++;
      opts.onHit?.(backend);
      return found;
    },
    async set(version, query, k, value) {
      s.sets++;
      if (usable()) {
        try {
          await redis!.set(prefix + (await cacheKey(version, query, k)), JSON.stringify(value), "EX", ttl);
          return;
        } catch (err) {
          failed("SET", err);
        }
      }
      lru.set(memoryKey(version, query, k), value, ttl * 1000);
      opts.peers?.send({ version, query, k, value });
    },
    stats: () => ({ backend: usable() ? "redis" : "memory", ...s, memory_entries: lru.size }),
    async close() {
      closed = true;
      lru.clear();
      if (!redis) return;
      const r = redis;
      redis = undefined;
      if (r.status === "ready") await Promise.race([r.quit().catch(() => {}), new Promise((res) => setTimeout(res, 500))]);
      r.disconnect();
    },
  };
}

/**
 * The questions asked most of late, so a new index version can answer them before it serves (`warm_on_swap`).
 * A count per key; past `4 × keep` keys (at least 1,024) the least asked half goes, and each `top` halves every
 * count, so questions that stop being asked fade out over a few swaps.
 */
export interface HotSet<T> {
  /** Counts one asking of `key`; `value` is kept from its first asking. */
  add(key: string, value: T): void;
  /** The `n` most asked values, most asked first; then every count is halved. */
  top(n: number): T[];
  readonly size: number;
}

export function createHotSet<T>(keep: number): HotSet<T> {
  const cap = Math.max(1024, keep * 4);
  let counts = new Map<string, { value: T; n: number }>();
  const ranked = () => [...counts.entries()].sort((a, b) => b[1].n - a[1].n);
  return {
    add(key, value) {
      const e = counts.get(key);
      if (e) {
        e.n++;
        return;
      }
      counts.set(key, { value, n: 1 });
      if (counts.size > cap) counts = new Map(ranked().slice(0, cap / 2));
    },
    top(n) {
      const out = ranked().slice(0, n).map(([, e]) => e.value);
      for (const [key, e] of counts) {
        e.n /= 2;
        if (e.n < 0.25) counts.delete(key); // asked once, and not again over three swaps
      }
      return out;
    },
    get size() {
      return counts.size;
    },
  };
}
