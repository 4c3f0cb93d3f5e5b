/**
 * Prometheus metrics of the server (prom-client), with the seed's names. Each server gets its own registry so
 * tests can run several in one process. Every metric is documented in docs/metrics.md.
 * @module
 */
import client from "prom-client";

export function createServerMetrics() {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "apfa_process_" });
  const m = {
    registry,
    responseTime: new client.Histogram({
      name: "apfa_response_time_seconds",
      help: "HTTP response time by route",
      labelNames: ["route"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    requests: new client.Counter({ name: "apfa_requests_total", help: "HTTP requests by route and status", labelNames: ["route", "status"], registers: [registry] }),
    cacheHits: new client.Counter({ name: "apfa_cache_hits_total", help: "Response cache hits by backend", labelNames: ["backend"], registers: [registry] }),
    cacheMisses: new client.Counter({ name: "apfa_cache_misses_total", help: "Response cache misses by backend", labelNames: ["backend"], registers: [registry] }),
    cachePeerFills: new client.Counter({ name: "apfa_cache_peer_fills_total", help: "Answers another server process computed and sent to this one's in-process cache (apfa serve --processes N without Redis)", registers: [registry] }),
    cacheWarmed: new client.Counter({ name: "apfa_cache_warmed_total", help: "Most asked questions answered again on a new index version before it serves (answered), or not within server.cache.warm_budget_ms (skipped)", labelNames: ["outcome"], registers: [registry] }),
    search: new client.Histogram({
      name: "apfa_faiss_search_seconds",
      help: "Vector search time (any engine; the name is the seed's)",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    embedQuery: new client.Histogram({ name: "apfa_query_embedding_seconds", help: "Time to embed a query", buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers: [registry] }),
    vectorCount: new client.Gauge({ name: "apfa_index_vector_count", help: "Vectors in the served index", registers: [registry] }),
    memoryBytes: new client.Gauge({ name: "apfa_index_memory_bytes", help: "Resident bytes of the served index (vectors + document offsets; documents are read from the file on demand)", registers: [registry] }),
    versionInfo: new client.Gauge({ name: "apfa_index_version_info", help: "1 for the served index version", labelNames: ["version", "engine"], registers: [registry] }),
    indexAge: new client.Gauge({ name: "apfa_index_age_seconds", help: "Seconds since the served version was built", registers: [registry] }),
    loadSeconds: new client.Gauge({ name: "apfa_index_load_seconds", help: "Time the last index load took (opening the local files)", registers: [registry] }),
    fetchSeconds: new client.Gauge({ name: "apfa_index_fetch_seconds", help: "Time the last index took to reach the local cache (download + checksum, or sync build)", registers: [registry] }),
    swaps: new client.Counter({ name: "apfa_swap_total", help: "Index swaps by outcome (success, refused, failed, aborted: a coordinated swap under --processes N that was not applied anywhere)", labelNames: ["outcome", "reason"], registers: [registry] }),
    byVersion: new client.Counter({ name: "apfa_requests_by_index_version_total", help: "Answered search/advice requests by index version", labelNames: ["version"], registers: [registry] }),
    generatorFallbacks: new client.Counter({ name: "apfa_generator_fallback_total", help: "Advice answered by the fallback generator", registers: [registry] }),
    querySamples: new client.Counter({ name: "apfa_query_samples_total", help: "Sampled query vectors by outcome of their write to apfa.query_samples (written, failed: dropped with the failed write)", labelNames: ["outcome"], registers: [registry] }),
    coalesced: new client.Counter({ name: "apfa_requests_coalesced_total", help: "Search/advice requests answered by sharing an identical request's computation already in flight (no admission slot, no search of their own)", labelNames: ["route"], registers: [registry] }),
    overloadRejected: new client.Counter({ name: "apfa_overload_rejected_total", help: "Search/advice requests answered 503 by admission control: the queue was full, or no slot came within max_wait_ms", labelNames: ["route", "reason"], registers: [registry] }),
    /** Set under `--processes`: renders every process's metrics (each with a `process` label), not only this one's. */
    render: undefined as undefined | (() => Promise<string>),
    /** Set by the app: the admission gate's live counts, read at scrape time. */
    admission: undefined as undefined | (() => { active: number; queued: number }),
  };
  new client.Gauge({
    name: "apfa_requests_active", help: "Search/advice requests holding an admission slot", registers: [registry],
    collect() {
      this.set(m.admission?.().active ?? 0);
    },
  });
  new client.Gauge({
    name: "apfa_requests_queued", help: "Search/advice requests waiting for an admission slot", registers: [registry],
    collect() {
      this.set(m.admission?.().queued ?? 0);
    },
  });
  return m;
}

export type ServerMetrics = ReturnType<typeof createServerMetrics>;
