/**
 * The pipeline.yaml schema. One zod schema validates the file, supplies every default, and generates the JSON
 * Schema editors use (`apfa schema`). Stage plugin options are validated separately by each plugin's own schema.
 * @module
 */
import { z } from "zod";
import { cronProblem } from "./cron.ts";
import { AUTH_DEFAULTS, DEFAULT_HOST } from "./auth-block.ts";

/** Tasks the runtime registers, each routed to one queue. */
export const TASKS = ["embed_all", "embed_batch", "build_index", "cleanup", "compute_index_stats", "noop"] as const;
export type TaskName = (typeof TASKS)[number];

/** Which queue each task runs on. */
export const TASK_QUEUES: Record<TaskName, string> = {
  embed_all: "embedding",
  embed_batch: "embedding",
  build_index: "indexing",
  cleanup: "maintenance",
  compute_index_stats: "maintenance",
  noop: "maintenance",
};

export const DEFAULT_QUEUES = { embedding: 4, indexing: 1, maintenance: 1 } satisfies Record<string, number>;

const duration = z
  .union([z.number().positive(), z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, "expected a duration like 30s, 5m, 1h or 2d")])
  .describe("Duration: seconds as a number, or a string like 30s, 5m, 1h, 2d");

/** Parses a duration value (as validated above) to milliseconds. */
export function durationMs(v: number | string): number {
  if (typeof v === "number") return v * 1000;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(v)!;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms"];
  return Number(m[1]) * unit;
}

const stage = (defaultPlugin: string, what: string) =>
  z
    .strictObject({
      plugin: z.string().min(1).default(defaultPlugin).describe(`Built-in ${what} plugin name, a path (./x.ts) or a package name`),
      options: z.record(z.string(), z.unknown()).default({}).describe("Options of the plugin (see docs/plugins.md)"),
    })
    .prefault({});

const cron = z.string().superRefine((v, ctx) => {
  const p = cronProblem(v);
  if (p) ctx.addIssue({ code: "custom", message: p });
});

const schedule = z.strictObject({
  cron: cron.describe("Five-field cron expression: minute hour day-of-month month day-of-week (UTC)"),
  task: z.enum(TASKS).describe("Task to enqueue"),
  queue: z.string().optional().describe("Queue override (defaults to the task's queue)"),
  options: z.record(z.string(), z.unknown()).default({}).describe("Payload passed to the task"),
  overlap: z.enum(["skip", "queue", "replace"]).default("skip")
    .describe("When a run of this pipeline is still active: skip this fire, queue it, or cancel the active run"),
  backfill: duration.optional().describe("On worker start, run fires missed within this period"),
  enabled: z.boolean().default(true),
});

export const DEFAULT_SCHEDULES = {
  rebuild: { cron: "0 * * * *", task: "embed_all" },
  cleanup: { cron: "0 2 * * *", task: "cleanup" },
  stats: { cron: "*/5 * * * *", task: "compute_index_stats" },
} as const;

const auth = z.strictObject({
  mode: z.enum(["jwt", "none"]).default(AUTH_DEFAULTS.mode).describe("`none` is only honoured when the server binds to localhost"),
  jwt_secret: z.string().optional().describe("HS256 secret; use ${APFA_JWT_SECRET}"),
  public_key: z.string().optional().describe("RS256 public key (PEM)"),
  jwks_url: z.url().optional(),
  issuer: z.string().optional(),
  audience: z.string().optional(),
  algorithms: z.array(z.enum(["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "EdDSA"])).optional(),
  clock_tolerance_s: z.int().min(0).max(300).default(AUTH_DEFAULTS.clock_tolerance_s),
}).prefault({});

export const pipelineSchema = z.strictObject({
  $schema: z.string().optional(),
  version: z.literal(1).default(1).describe("Schema version of this file"),
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, "lowercase letters, digits, _ and - (max 63)").default("default")
    .describe("Pipeline name (runs, locks and overlap policy are per pipeline)"),
  database: z.strictObject({
    url: z.string().optional().describe("postgres:// URL; unset or empty = embedded Postgres"),
    embedded: z.strictObject({
      dir: z.string().default(".apfa/pg").describe("Data directory of the embedded Postgres (git-ignored)"),
      port: z.int().min(1024).max(65535).default(54329),
    }).prefault({}),
  }).prefault({}),
  store: stage("fs", "store"),
  queues: z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,40}$/, "queue names are lowercase letters, digits, _ and -"),
    z.int().min(1).max(256)).default(DEFAULT_QUEUES)
    .describe("Queue name → concurrency per worker process"),
  stages: z.strictObject({
    source: stage("jsonl", "source"),
    embedder: stage("use-lite", "embedder"),
    index: stage("flat", "index engine"),
    notifier: stage("postgres", "notifier"),
    generator: stage("template", "generator"),
  }).prefault({}),
  batch_size: z.int().min(1).max(100_000).default(1000).describe("Documents per embed_batch job"),
  run: z.strictObject({
    timeout: duration.default("1h").describe("A run not finished after this is marked failed"),
    max_attempts: z.int().min(1).max(100).default(5).describe("Attempts per job before it is failed"),
    missing_batch_threshold: z.number().min(0).max(1).default(0)
      .describe("Share of batches that may be missing when building the index (0 = none)"),
  }).prefault({}),
  schedules: z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,40}$/), schedule).default({})
    .describe("Named cron schedules; rebuild, cleanup and stats exist by default (set enabled: false to drop one)"),
  retention_days: z.number().min(0).max(3650).default(7),
  keep_versions: z.int().min(0).max(1000).default(2).describe("Previous index versions cleanup never deletes"),
  workers: z.strictObject({
    heartbeat_interval: duration.default("10s").describe("How often a worker records its heartbeat and looks for dead workers"),
    poll_interval: duration.default("500ms")
      .describe("How often an idle queue runner looks for jobs besides LISTEN/NOTIFY (a serial queue's job can miss its notification)"),
    heartbeat_timeout: duration.default("60s")
      .describe("A worker silent this long is presumed dead: its jobs are released to live workers (crash recovery)"),
  }).prefault({}),
  server: z.strictObject({
    host: z.string().default(DEFAULT_HOST),
    port: z.int().min(0).max(65535).default(8080),
    processes: z.union([z.int().min(0).max(256), z.literal("auto")]).default("auto")
      .describe("Server processes sharing the port (a supervisor restarts any that dies); 0 or `auto` = one per core (one process on a 1-core machine or under Deno)"),
    auth,
    body_limit_bytes: z.int().min(256).max(10_485_760).default(65_536),
    max_query_chars: z.int().min(1).max(100_000).default(2000),
    max_k: z.int().min(1).max(1000).default(50),
    cache: z.strictObject({
      redis_url: z.string().optional().describe("redis:// URL for the shared cache; unset = in-process only"),
      ttl_s: z.int().min(1).default(300),
      max_entries: z.int().min(1).default(10_000),
      warm_on_swap: z.int().min(0).max(100_000).default(256)
        .describe("On a swap, the most asked recent questions answered again on the new version, and cached, before it serves, so a swap does not empty the cache; 0 = off"),
      warm_budget_ms: z.int().min(0).max(600_000).default(2000)
        .describe("Longest a swap spends on warm_on_swap; questions not answered by then are left for traffic"),
    }).prefault({}),
    rate_limit: z.strictObject({
      rps: z.number().min(0).default(50).describe("Sustained requests per second per client IP on /search and /generate-advice (0 = off)"),
      burst: z.int().min(1).default(100).describe("Requests a client may make at once before the rate applies"),
      exempt_loopback: z.boolean().default(true)
        .describe("Clients on 127.0.0.0/8 and ::1 are not limited (local load tests, sidecars); a reverse proxy should limit instead"),
    }).prefault({}),
    retrieval: z.strictObject({
      mode: z.enum(["vector", "hybrid"]).default("vector")
        .describe("`hybrid` fuses vector results with the version's lexical (BM25) index, so exact names, ids and numbers find their documents; a request's `mode` overrides it"),
      candidates: z.int().min(1).max(1000).default(50).describe("Results taken from the vector and the lexical side before fusing (hybrid)"),
      lexical_max_docs: z.int().min(0).default(500_000)
        .describe("Index versions with more documents are built without the lexical (BM25) index, which one process builds and loads whole (~650 bytes a document); hybrid requests on them answer with vectors only. 0 = never build it"),
      rrf_k: z.number().min(1).max(1000).default(60).describe("The constant of reciprocal-rank fusion: each list adds 1/(rrf_k + rank)"),
      question_filters: z.boolean().default(true)
        .describe("/generate-advice reads the constraints a question states (credit score, amount, term, APR ceiling, purpose) and retrieves the products that fit them first"),
    }).prefault({}),
    overload: z.strictObject({
      max_active: z.int().min(1).default(64).describe("Search/advice requests worked on at once, per server process"),
      max_queued: z.int().min(0).default(1024)
        .describe("Search/advice requests waiting for a slot, per process; past it a fast 503 with Retry-After (apfa_overload_rejected_total)"),
      max_wait_ms: z.int().min(1).max(600_000).default(500)
        .describe("Longest a request waits for a slot; then it gets the same 503 (bounds latency whatever the throughput)"),
      max_searching: z.int().min(1).default(8)
        .describe("Index searches handed to the engine at once per process (the CPU-bound step of a request holding a slot; flat's search worker scans those waiting together, up to its search_batch of 8); the rest wait within what is left of max_wait_ms, then get the same 503"),
      retry_after_s: z.int().min(1).max(3600).default(1).describe("Retry-After seconds sent with an overload 503"),
    }).prefault({}),
    connections: z.strictObject({
      keep_alive_timeout_s: z.number().min(0).default(65)
        .describe("Idle keep-alive connections close after this; above a load balancer's idle timeout (60 s on most) so it never reuses a closing socket"),
      headers_timeout_s: z.number().min(1).default(66).describe("Time to receive a request's headers; raised to keep_alive_timeout_s + 1 if lower"),
      request_timeout_s: z.number().min(1).default(120).describe("Time to receive a whole request; raised to the headers timeout if lower"),
      max_connections: z.int().min(0).default(0).describe("Open connections per process before new ones are closed (0 = only the file-descriptor limit)"),
      backlog: z.int().min(1).default(4096).describe("Pending-connection queue of the listening socket (capped by net.core.somaxconn)"),
    }).prefault({}),
    query_samples: z.strictObject({
      rate: z.number().min(0).max(1).default(0.05)
        .describe("Fraction of search/advice query embeddings kept (vectors only, never the text) for the build's recall check; 0 = off"),
      keep: z.int().min(1).max(1_000_000).default(2000).describe("Newest sampled query vectors kept per embedder; older ones are deleted as new ones are written"),
      flush_s: z.number().min(0.05).max(3600).default(10).describe("How often a server process writes its sampled vectors to Postgres"),
      max_pending: z.int().min(1).max(100_000).default(500)
        .describe("Sampled vectors a process holds between writes; past it new ones replace random held ones (reservoir), so a database outage costs no memory"),
      build_sample: z.int().min(0).max(100_000).default(500)
        .describe("Newest sampled query vectors of the run's embedder a build's recall check measures with, besides corpus rows; 0 = corpus rows only"),
    }).prefault({}),
    swap_poll_s: z.number().min(1).default(30).describe("Safety-net check of `latest` every N seconds"),
    swap_timeout_s: z.number().min(1).default(300)
      .describe("With several processes: a swap not prepared (downloaded, verified, opened) by every process within N seconds is aborted in all of them"),
    cache_dir: z.string().default(".apfa/cache").describe("Local copy of the served index (fallback when the store is down)"),
  }).prefault({}),
});

export type PipelineInput = z.input<typeof pipelineSchema>;
export type PipelineConfig = z.output<typeof pipelineSchema> & {
  /** Absolute path of the file, or "<defaults>". */
  file: string;
  /** Directory relative paths resolve against. */
  baseDir: string;
  /** Schedules after merging the defaults. */
  schedules: Record<string, z.output<typeof schedule>>;
};
export type ScheduleConfig = z.output<typeof schedule>;
export type StageName = keyof PipelineConfig["stages"];
export const STAGE_KINDS = {
  source: "source",
  embedder: "embedder",
  index: "index",
  notifier: "notifier",
  generator: "generator",
} as const;
