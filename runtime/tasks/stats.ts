/**
 * `compute_index_stats` (maintenance queue, every 5 minutes by default): measures the current index version
 * and scores how urgently it should move from exact (`flat`) to approximate search. One row per call goes to
 * `apfa.index_stats`; the worker exports the newest row as the `apfa_index_stats_*` gauges.
 *
 * - vectors and dims from the version's manifest; bytes in memory = count × dims × 4 + 12 bytes a document (the
 *   server keeps each document's line offset and length, server/doc-table.ts, and reads the text from the file);
 *   bytes on store = the sum of the files under `indexes/<version>/`.
 * - search p95: when the payload lists server URLs (`schedules.stats.options.servers`), their `/metrics` are
 *   scraped and `apfa_faiss_search_seconds` merged; the p95 covers the interval since the previous stats row
 *   (or the servers' lifetime after a restart). No reachable server: p95 is null and the model estimates it.
 * - the urgency model is `assessMigration` below, documented in docs/metrics.md.
 * @module
 */
import type { JobHelpers } from "graphile-worker";
import { errorMessage } from "../errors.ts";
import { layout } from "../keys.ts";
import type { Pipeline } from "../pipeline.ts";
import { readLatest, readManifest } from "../versions.ts";

export interface StatsPayload {
  /** Server base URLs (or their /metrics URLs) to scrape for the search latency. */
  servers?: string[];
  /** Vector-search p95 considered the limit for exact search. @defaultValue 50 */
  latency_budget_ms?: number;
  /** Memory one server may give the index; above it an HNSW graph is not recommended. @defaultValue 16 GiB */
  memory_budget_bytes?: number;
}

/** Cumulative bucket counts by upper bound (`+Inf` as Infinity). */
export type Buckets = Array<[number, number]>;

/** Sums the `<name>_bucket` series of a Prometheus text exposition (all label sets) by `le`. */
export function parseHistogram(text: string, name: string): Buckets {
  const sums = new Map<number, number>();
  const re = new RegExp(`^${name}_bucket\\{([^}]*)\\}\\s+(\\S+)`, "gm");
  for (const m of text.matchAll(re)) {
    const le = /(?:^|,)le="([^"]+)"/.exec(m[1])?.[1];
    if (le === undefined) continue;
    const bound = le === "+Inf" ? Infinity : Number(le);
    sums.set(bound, (sums.get(bound) ?? 0) + Number(m[2]));
  }
  return [...sums.entries()].sort((a, b) => a[0] - b[0]);
}

/** Like PromQL's histogram_quantile: linear interpolation inside the bucket that holds the rank. */
export function histogramQuantile(q: number, buckets: Buckets): number | null {
  const total = buckets.at(-1)?.[1] ?? 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(count - prevCount, 1e-12);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** Merges the servers' search histograms; unreachable servers are listed, not fatal. */
export async function scrapeSearchLatency(urls: string[], timeoutMs = 3000): Promise<{ buckets: Buckets; reached: string[]; failed: Array<{ url: string; error: string }> }> {
  const sums = new Map<number, number>();
  const reached: string[] = [];
  const failed: Array<{ url: string; error: string }> = [];
  await Promise.all(urls.map(async (u) => {
    const url = /\/metrics\/?$/.test(u) ? u : `${u.replace(/\/+$/, "")}/metrics`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      for (const [le, n] of parseHistogram(await res.text(), "apfa_faiss_search_seconds")) sums.set(le, (sums.get(le) ?? 0) + n);
      reached.push(url);
    } catch (err) {
      failed.push({ url, error: errorMessage(err) });
    }
  }));
  return { buckets: [...sums.entries()].sort((a, b) => a[0] - b[0]), reached, failed };
}

/** Bucket-wise difference; null when there is no previous snapshot or a counter went down (a server restarted). */
export function bucketDelta(now: Buckets, before: Buckets | undefined): Buckets | null {
  if (!before?.length) return null;
  const prev = new Map(before);
  const out: Buckets = [];
  for (const [le, n] of now) {
    const d = n - (prev.get(le) ?? 0);
    if (d < 0) return null;
    out.push([le, d]);
  }
  return out;
}

// ---------------------------------------------------------------- the migration model

// Rates calibrated on bench/results/quick (2 cores, 10k × 384): flat search p50 5.7 ms / p95 13.8 ms,
// HNSW build 7.2 s, HNSW search p50 0.2 ms. The estimates are planning numbers, good to about a factor of two.
/** Exact search streams every vector once: effective bytes per second, plus a fixed per-query overhead. */
export const SCAN_BYTES_PER_S = 5e9;
export const SCAN_OVERHEAD_MS = 1;
/** p95 of exact search over its typical (p50) time. */
export const P95_OVER_P50 = 2;
/** Distance arithmetic while inserting into a graph (random access): effective multiply-adds per second per core. */
export const GRAPH_BUILD_FLOPS = 1e9;
/** Distance arithmetic while searching a graph or probing inverted lists. */
export const SEARCH_FLOPS = 4e9;
/** Dense arithmetic of k-means and PQ encoding (BLAS). */
export const DENSE_FLOPS = 8e9;
const GiB = 1024 ** 3;
/** Heap bytes per document of a served version: its line's offset and length in docs.jsonl (server/doc-table.ts). */
export const DOC_TABLE_BYTES = 12;
const clamp01 = (x: number) => Math.min(1, Math.max(0, x));

export interface MigrationInput {
  engine: string;
  count: number;
  dims: number;
  /** Heap bytes a server holds for the documents ({@link DOC_TABLE_BYTES} each). */
  docsBytes: number;
  /** Observed vector-search p95 in ms, or null. */
  p95Ms: number | null;
  latencyBudgetMs?: number;
  memoryBudgetBytes?: number;
  /** The version's build-time recall check (manifest `recall`), when its engine ran one. */
  recall?: { engine: string; measured: number; target: number; met: boolean; sample: number; method?: string; params: Record<string, number>; fallback?: string; corpus?: { sample: number; measured: number }; queries?: { sample: number; measured: number } };
}

export interface Alternative {
  engine: "hnsw" | "faiss";
  options: Record<string, unknown>;
  est_memory_bytes: number;
  /** Single-core estimate; the build spreads over the indexing worker's cores. */
  est_build_s: number;
  est_search_ms: number;
}

export interface MigrationAssessment {
  urgency: number;
  recommendation: string;
  reasoning: {
    model: string;
    latency_budget_ms: number;
    p95_ms: number;
    p95_source: "observed" | "estimated";
    latency_term: number;
    size_term: number;
    scan_bytes: number;
    alternatives: Alternative[];
    chosen: string | null;
    notes: string[];
  };
}

/** Exact-search p95 for `count × dims` f32 vectors, by the calibrated scan rate. */
export function estimateExactP95Ms(count: number, dims: number): number {
  return P95_OVER_P50 * (SCAN_OVERHEAD_MS + ((count * dims * 4) / SCAN_BYTES_PER_S) * 1000);
}

/** Inverted lists for `count` vectors: 4·√count rounded to a power of two within 64…65536. */
const ivfLists = (count: number) => 2 ** Math.round(Math.log2(Math.min(65536, Math.max(64, 4 * Math.sqrt(count)))));

/** Estimated costs of the two approximate alternatives for `count × dims` vectors. */
export function alternatives(count: number, dims: number, docsBytes: number, M = 16): Alternative[] {
  const efC = 128, ef = 64;
  const lg = Math.log2(Math.max(count, 2));
  const hnsw: Alternative = {
    engine: "hnsw",
    options: { connectivity: M, expansion_add: efC, expansion_search: ef },
    // f32 vectors + level-0 links (2M four-byte ids; upper levels add ~1/M of that) + a 16-byte node header.
    est_memory_bytes: Math.round(count * (dims * 4 + 2 * M * 4 * (1 + 1 / M) + 16) + docsBytes),
    // Each insert searches with efC candidates over ~log2(count) hops: count·efC·log2(count) distances.
    est_build_s: (count * efC * lg * dims * 2) / GRAPH_BUILD_FLOPS,
    est_search_ms: ((ef * 2 * M * dims * 2) / SEARCH_FLOPS) * 1000,
  };
  const nlist = ivfLists(count);
  let m = 1;
  for (let d = Math.max(1, Math.floor(dims / 4)); d >= 1; d--) if (dims % d === 0 && dims / d >= 4) { m = d; break; }
  const train = Math.min(count, 100_000), nprobe = 16;
  const ivf: Alternative = {
    engine: "faiss",
    options: { factory: `IVF${nlist},PQ${m}`, nprobe, train_rows: 100_000 },
    // m one-byte codes + an 8-byte id per vector, the coarse centroids and the PQ codebooks.
    est_memory_bytes: Math.round(count * (m + 8) + nlist * dims * 4 + 256 * dims * 4 + docsBytes),
    // k-means (25 iterations) on the training rows, then assigning and encoding every vector.
    est_build_s: (train * nlist * dims * 2 * 25 + count * nlist * dims * 2 + count * 256 * dims * 2) / DENSE_FLOPS,
    est_search_ms: ((nlist * dims * 2 + nprobe * (count / nlist) * m * 2) / SEARCH_FLOPS) * 1000,
  };
  // The same graph over one-byte scalars (usearch i8): a quarter of the vector bytes, same links.
  const i8: Alternative = { ...hnsw, options: { ...hnsw.options, quantization: "i8" }, est_memory_bytes: Math.round(hnsw.est_memory_bytes - count * dims * 3) };
  return [hnsw, i8, ivf];
}

/**
 * Inverted lists over uncompressed vectors (`IVF<nlist>,Flat`), or one-byte scalars (`SQ8`) when those do not fit
 * the memory budget: what to move to when a graph's recall check has shown that no graph reaches the target on
 * this corpus. A probed list is scanned whole, so near-duplicates that a graph's pruning drops are still found
 * (measured at 1M near-duplicate rows: outside queries' recall@10 0.978 at nprobe 32 where HNSW gave 0.63-0.66).
 */
export function invertedFile(count: number, dims: number, docsBytes: number, memoryBudgetBytes: number): Alternative {
  const nlist = ivfLists(count);
  const train = Math.min(count, 100_000), nprobe = 32;
  const centroids = nlist * dims * 4;
  const flatBytes = count * (dims * 4 + 8) + centroids + docsBytes;
  const code = flatBytes <= memoryBudgetBytes ? "Flat" : "SQ8";
  const perVector = code === "Flat" ? dims * 4 : dims;
  return {
    engine: "faiss",
    options: { factory: `IVF${nlist},${code}`, nprobe, train_rows: 100_000 },
    est_memory_bytes: Math.round(count * (perVector + 8) + centroids + docsBytes),
    est_build_s: (train * nlist * dims * 2 * 25 + count * nlist * dims * 2) / DENSE_FLOPS,
    est_search_ms: ((nlist * dims * 2 + nprobe * (count / nlist) * dims * 2) / SEARCH_FLOPS) * 1000,
  };
}

/**
 * Urgency 0..1 of moving off exact search, the max of two terms:
 * - latency: p95 (observed, else `estimateExactP95Ms`) against the budget, on a log
 *   scale: 0 at a quarter of the budget, 0.5 at half, 1 at the budget;
 * - size: bytes scanned per query, 0 at 256 MiB (~175k × 384), 1 at 4 GiB (~2.8M × 384), log scale, because
 *   exact search time grows linearly with them while HNSW's grows with log(count).
 * Below 0.3 keep flat, from 0.3 plan the move, from 0.7 make it. The alternative is HNSW while its graph fits
 * the memory budget, else IVF-PQ (compressed codes); when the version's recall check showed that HNSW misses its
 * target on this corpus, inverted lists over full vectors (`invertedFile`). Engines that are already approximate
 * score the latency term only, and the advice is to tune them.
 */
export function assessMigration(input: MigrationInput): MigrationAssessment {
  const budget = input.latencyBudgetMs ?? 50;
  const memBudget = input.memoryBudgetBytes ?? 16 * GiB;
  const scan = input.count * input.dims * 4;
  const estimated = estimateExactP95Ms(input.count, input.dims);
  const p95 = input.p95Ms ?? estimated;
  const latency = clamp01(Math.log2(Math.max(p95, 1e-9) / (budget / 4)) / 2);
  const flat = input.engine === "flat";
  const size = flat ? clamp01(Math.log2(Math.max(scan, 1) / (256 * 1024 ** 2)) / 4) : 0;
  // A recall check that had to grow the graph measured what this corpus needs; estimate with that.
  const r = input.recall;
  const alts = alternatives(input.count, input.dims, input.docsBytes, Math.max(16, r?.params.connectivity ?? 16));
  // A graph that missed its target even after the check grew it will miss again: inverted lists instead.
  const graphFailed = r?.fallback !== undefined && r.engine === "hnsw";
  if (graphFailed) alts.push(invertedFile(input.count, input.dims, input.docsBytes, memBudget));
  const pick = graphFailed ? alts[alts.length - 1] : (alts.find((a) => a.est_memory_bytes <= memBudget) ?? alts[alts.length - 1]);
  const label = pick.engine === "hnsw" ? `hnsw${pick.options.quantization ? ` (quantization ${String(pick.options.quantization)})` : ""}${pick.options.connectivity !== 16 ? ` connectivity ${String(pick.options.connectivity)}` : ""}` : `faiss ${String(pick.options.factory)}`;
  const urgency = Math.round((flat ? Math.max(latency, size) : latency) * 1000) / 1000;
  const notes: string[] = [];
  if (input.p95Ms === null) notes.push(`no server measured: p95 estimated as ${P95_OVER_P50} × (${SCAN_OVERHEAD_MS} ms + count × dims × 4 bytes at ${SCAN_BYTES_PER_S / 1e9} GB/s)`);
  let recommendation: string;
  if (!flat) recommendation = urgency >= 0.5 ? `tune ${input.engine}` : `keep ${input.engine}`;
  else if (urgency < 0.3) recommendation = "keep flat";
  else recommendation = `${urgency >= 0.7 ? "migrate to" : "plan"} ${label}`;
  if (!flat && urgency >= 0.5) notes.push(`${input.engine} search p95 ${p95.toFixed(1)} ms is near the ${budget} ms budget: raise nprobe/expansion_search less, or add servers`);
  if (flat && pick !== alts[0]) notes.push(`HNSW would need ${(alts[0].est_memory_bytes / GiB).toFixed(1)} GiB, over the ${(memBudget / GiB).toFixed(1)} GiB budget`);
  if (r) {
    const params = Object.entries(r.params).map(([k, v]) => `${k} ${v}`).join(", ");
    notes.push(`${r.engine} measured recall@10 ${r.measured.toFixed(3)} (target ${r.target}) at ${params} on ${r.sample} ${r.method?.startsWith("held-out") ? "held-out " : ""}corpus rows${r.queries && r.corpus ? ` (${r.corpus.measured.toFixed(3)}) and ${r.queries.sample} logged queries (${r.queries.measured.toFixed(3)})` : ""}`);
    if (graphFailed) {
      notes.push(`hnsw missed its recall target even at ${params}, so this version is served by exact search; ` +
        `a graph will miss again on this corpus, inverted lists scan whole clusters and keep recall on near-duplicate data (docs/index-engines.md; the faiss engine needs scripts/build-faiss-node.sh)`);
    } else if (r.fallback) {
      // The approximate engine could not reach the target: moving to it again would only repeat the fallback.
      recommendation = urgency >= 0.3 ? `tune ${r.engine}: a finer code (Flat or SQ8 in place of PQ) or lower target_recall (served exactly meanwhile)` : "keep flat";
      notes.push(`${r.engine} missed its recall target, so this version is served by exact search`);
    } else if (!r.met) {
      recommendation = `tune ${input.engine}: recall ${r.measured.toFixed(3)} is under its target ${r.target}`;
      // Published anyway (on_recall_miss: accept): the same evidence as a fallback that a graph misses here.
      if (r.engine === "hnsw") {
        const ivf = invertedFile(input.count, input.dims, input.docsBytes, memBudget);
        notes.push(`hnsw missed its recall target at ${params} and was published as accepted; raise max_connectivity, or move to faiss ${String(ivf.options.factory)}: ` +
          `inverted lists scan whole clusters and keep recall on near-duplicate data (docs/index-engines.md)`);
      }
    }
  }
  return {
    urgency,
    recommendation,
    reasoning: {
      model: "urgency = max(latency_term, size_term); latency_term = clamp(log2(p95 / (budget/4)) / 2); size_term = clamp(log2(scan_bytes / 256 MiB) / 4) (flat only)",
      latency_budget_ms: budget,
      p95_ms: Math.round(p95 * 1000) / 1000,
      p95_source: input.p95Ms === null ? "estimated" : "observed",
      latency_term: Math.round(latency * 1000) / 1000,
      size_term: Math.round(size * 1000) / 1000,
      scan_bytes: scan,
      alternatives: alts,
      chosen: flat ? label : null,
      notes,
    },
  };
}

// ---------------------------------------------------------------- the task

export interface IndexStatsRow {
  version: string;
  engine: string;
  count: number;
  dims: number;
  bytes_memory: number;
  bytes_store: number;
  search_p95_ms: number | null;
  urgency: number;
  recommendation: string;
  reasoning: Record<string, unknown>;
}

/** Measures the current version and records one `apfa.index_stats` row; undefined when nothing is published. */
export async function computeIndexStats(p: Pipeline, payload: StatsPayload = {}): Promise<IndexStatsRow | undefined> {
  const latest = await readLatest(p.store);
  if (!latest) return undefined;
  const manifest = await readManifest(p.store, latest.version);
  let bytesStore = 0;
  for await (const st of p.store.list(layout.indexPrefix(latest.version))) bytesStore += st.size;
  const docsBytes = manifest.count * DOC_TABLE_BYTES;

  let p95: number | null = null;
  let search: Record<string, unknown> = { servers: 0 };
  if (payload.servers?.length) {
    const prev = (await p.db.pool.query<{ b: Array<[number | null, number]> | null; reached: string[] | null }>(
      `select reasoning->'search'->'buckets' as b, reasoning->'search'->'reached' as reached
         from apfa.index_stats where pipeline = $1 order by computed_at desc, id desc limit 1`,
      [p.config.name],
    )).rows[0];
    const s = await scrapeSearchLatency(payload.servers);
    // A window is only meaningful over the same servers as the previous snapshot.
    const same = prev?.reached && [...prev.reached].sort().join() === [...s.reached].sort().join();
    const delta = same ? bucketDelta(s.buckets, prev.b?.map(([le, n]): [number, number] => [le ?? Infinity, n])) : null;
    const q = histogramQuantile(0.95, delta ?? s.buckets);
    p95 = q === null ? null : q * 1000;
    // JSON has no Infinity: the +Inf bound is stored as null.
    search = { servers: payload.servers.length, reached: s.reached, failed: s.failed, window: delta ? "since previous stats" : "since server start", searches: (delta ?? s.buckets).at(-1)?.[1] ?? 0, buckets: s.buckets.map(([le, n]) => [Number.isFinite(le) ? le : null, n]) };
  }
  const a = assessMigration({
    engine: manifest.engine, count: manifest.count, dims: manifest.dims, docsBytes, p95Ms: p95, recall: manifest.recall,
    latencyBudgetMs: payload.latency_budget_ms, memoryBudgetBytes: payload.memory_budget_bytes,
  });
  const row: IndexStatsRow = {
    version: manifest.version,
    engine: manifest.engine,
    count: manifest.count,
    dims: manifest.dims,
    bytes_memory: manifest.count * manifest.dims * 4 + docsBytes,
    bytes_store: bytesStore,
    search_p95_ms: p95,
    urgency: a.urgency,
    recommendation: a.recommendation,
    reasoning: { ...a.reasoning, search },
  };
  await p.db.pool.query(
    `insert into apfa.index_stats (pipeline, version, engine, count, dims, bytes_memory, bytes_store, search_p95_ms, urgency, recommendation, reasoning)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
    [p.config.name, row.version, row.engine, row.count, row.dims, row.bytes_memory, row.bytes_store, row.search_p95_ms, row.urgency, row.recommendation, JSON.stringify(row.reasoning)],
  );
  return row;
}

export function makeComputeIndexStats(p: Pipeline) {
  return async (raw: unknown, helpers: JobHelpers): Promise<void> => {
    const log = p.log.child({ task: "compute_index_stats", job: helpers.job.id });
    const row = await computeIndexStats(p, (raw ?? {}) as StatsPayload);
    if (!row) return log.info("no index version published yet; nothing to measure");
    log.info("index stats computed", {
      version: row.version, engine: row.engine, count: row.count, dims: row.dims, bytes_memory: row.bytes_memory,
      bytes_store: row.bytes_store, search_p95_ms: row.search_p95_ms, urgency: row.urgency, recommendation: row.recommendation,
    });
  };
}
