/**
 * The server behind `apfa serve` (runtime/commands/serve.ts). It loads `latest` at start-up (else the local
 * cache, else a synchronous build from the source), subscribes to swap events, re-checks `latest` on reconnect
 * and every `swap_poll_s` seconds, and serves the API until stopped.
 * @module
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { serve as h3serve, type H3 } from "h3";
import type { PipelineConfig } from "../runtime/config/schema.ts";
import type { IndexEngine, Logger } from "../runtime/contracts.ts";
import { errorMessage } from "../runtime/errors.ts";
import { createPlugin, openPipeline, type Pipeline } from "../runtime/pipeline.ts";
import { createQuerySampler } from "../runtime/query-samples.ts";
import { buildVersion, type NewPart } from "../runtime/stages/build.ts";
import { embedBatch, encodeBatch } from "../runtime/stages/embed.ts";
import { enumerate } from "../runtime/stages/enumerate.ts";
import { embedderKey, engineKey } from "../runtime/stages/identity.ts";
import type { Manifest } from "../runtime/versions.ts";
import { createApp } from "./app.ts";
import { opsRoutes } from "./api.ts";
import { makeVerifier, type Verifier } from "./auth.ts";
import { resolveAuth } from "./auth-config.ts";
import { createCache, type CachePeers } from "./cache.ts";
import { createIndexHolder, type IndexHolder, type LoadSource } from "./index-holder.ts";
import { createServerMetrics, type ServerMetrics } from "./metrics.ts";

/** Re-exported for callers that had it from here. */
export { resolveAuth };

/**
 * The seed's fallback: the same stages a run uses (enumerate, embed each batch, build), in-process, with the
 * result written to the local cache instead of the store.
 */
async function buildFromSource(p: Pipeline, engine: IndexEngine, cacheDir: string): Promise<{ manifest: Manifest; dir: string }> {
  const embedder = await p.embedder();
  const parts: NewPart[] = [];
  const source = await p.source();
  try {
    await enumerate(source, {
      batchSize: p.config.batch_size,
      onBatch: async (docs, n) => {
        const b = await embedBatch(embedder, docs);
        parts.push({ n, docs: encodeBatch(b).docs, vectors: b.vectors, rows: b.docs.length, dims: b.dims, modelId: b.modelId, maxChars: b.maxChars });
      },
    });
  } finally {
    await source.close?.();
  }
  const { manifest, files } = await buildVersion({
    pipeline: p.config.name, runId: null, engine, engineName: p.config.stages.index.plugin,
    engineKey: await engineKey(p.config), embedderKey: await embedderKey(p.config), parts, reuse: [],
    warn: (m, f) => p.log.warn(m, f),
  });
  const dir = path.join(cacheDir, manifest.version);
  await fsp.mkdir(dir, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) await fsp.writeFile(path.join(dir, name), bytes);
  await fsp.writeFile(path.join(dir, "manifest.json"), JSON.stringify(manifest));
  return { manifest, dir };
}

export interface RunningServer {
  url: string;
  /** The index being served now (version, document count, load time). */
  status(): ReturnType<IndexHolder["status"]>;
  stop(): Promise<void>;
}

/** The API as an h3 app and a fetch handler, with the index loaded and hot swaps wired; not listening. */
export interface ApfaHandler {
  /** Mount it in your h3 app (`app.mount("/rag", apfa.app)`) or serve it with `toNodeHandler(apfa.app)` from `h3/node`. */
  app: H3;
  /** Web-standard handler: `Request` in, `Response` out. */
  fetch(request: Request): Promise<Response>;
  /** How the index was found at start-up (the published `latest`, the local cache, a sync build), or null: none yet. */
  indexSource: string | null;
  /** `jwt` when requests need a token, `none` when server.auth.mode is none. */
  auth: "jwt" | "none";
  /** The index being served now (version, document count, load time). */
  status(): ReturnType<IndexHolder["status"]>;
  /** Stops swaps and polling, closes the cache, the index and the database pool. */
  close(): Promise<void>;
}

export interface HandlerOptions {
  /** With no published index and no local cache, build one from the source in-process. @default true */
  syncBuild?: boolean;
  /**
   * Set in a process of `apfa serve --processes N` (server/cluster.ts): its slot, which `/ready` reports and
   * `/metrics` labels, and how to render every process's metrics instead of this one's.
   */
  cluster?: {
    index: number;
    metrics(registry: ServerMetrics["registry"]): () => Promise<string>;
    /** Takes part in the supervisor's swap rounds; returns what to call instead of swapping on an event or poll. */
    swaps(holder: IndexHolder): (version: string, reason: string) => Promise<unknown>;
    /** The version the other processes serve: loaded first, instead of `latest`. */
    pinned?: string;
    /** The other processes' in-process caches: answers computed here are sent to them and theirs come here. */
    cachePeers?: CachePeers;
    /** This process's slot and how many serve: it warms its share of a new version's most asked questions. */
    share?: { index: number; of: number };
  };
}

/**
 * Everything `apfa serve` runs but the listening socket, so the API can be mounted in an existing h3 or Node
 * server (see `apfa/server`). Call `close()` when your server stops.
 */
export async function createApfaHandler(config: PipelineConfig, log: Logger, opts: HandlerOptions = {}): Promise<ApfaHandler> {
  const p = await openPipeline(config, log);
  const metrics = createServerMetrics();
  if (opts.cluster) metrics.render = opts.cluster.metrics(metrics.registry);
  const authCfg = resolveAuth(config, log);
  const verifier: Verifier | null = authCfg ? makeVerifier(authCfg) : null;
  if (!verifier) log.warn("authentication is OFF (server.auth.mode: none, loopback only)");
  // Independent of each other: loaded together, not one after another.
  const [embedder, generator] = await Promise.all([p.embedder(), p.generator(), verifier?.ready()]);
  const cacheDir = path.resolve(config.baseDir, config.server.cache_dir);
  const engines = new Map<string, Promise<IndexEngine>>();
  const engineFor = (name: string) => {
    let e = engines.get(name);
    if (!e) {
      e = createPlugin<IndexEngine>("index", name === config.stages.index.plugin ? config.stages.index : { plugin: name, options: {} }, { baseDir: config.baseDir, log, env: process.env as Record<string, string> });
      engines.set(name, e);
    }
    return e;
  };
  // Under --processes N a version found by the subscription or the poll goes to the supervisor's swap round.
  let swap: ((version: string, reason: string) => Promise<unknown>) | undefined;
  const holder: IndexHolder = createIndexHolder({
    request: opts.cluster ? (v, r) => swap!(v, r) : undefined,
    store: p.store,
    cacheDir,
    embedder,
    engine: engineFor,
    log: log.child({ component: "index" }),
    metrics,
    buildFromSource: opts.syncBuild === false ? undefined : async () => buildFromSource(p, await engineFor(config.stages.index.plugin), cacheDir),
  });
  const cache = createCache<string>({
    ...config.server.cache,
    // "a2": entries are answers as sent; entries an older apfa wrote (answer objects) are not read as such.
    key_prefix: `apfa:cache:${config.name}:a2:`,
    onHit: (b) => metrics.cacheHits.inc({ backend: b }),
    onMiss: (b) => metrics.cacheMisses.inc({ backend: b }),
    peers: opts.cluster?.cachePeers,
    onPeerFill: () => metrics.cachePeerFills.inc(),
    log,
  });
  swap = opts.cluster ? opts.cluster.swaps(holder) : holder.swapTo;
  // The subscription connects while the first index loads; an event that comes meanwhile waits for the load.
  const starting = holder.start(opts.cluster?.pinned);
  const started = starting.then(() => undefined, () => undefined);
  const subscribing = p.notifier().then((notifier) => notifier.subscribe(
    (ev) => void started.then(() => swap!(ev.version, "event")),
    { onReconnect: () => void started.then(() => holder.checkLatest("reconnect")) },
  )).catch((err: unknown) => {
    log.warn("swap events unavailable; relying on the periodic check", { error: errorMessage(err) });
    return undefined;
  });
  let source: LoadSource | undefined;
  try {
    source = await starting;
  } catch (err) {
    await (await subscribing)?.().catch(() => {});
    throw err;
  }
  const unsubscribe = await subscribing;
  const poll = setInterval(() => void holder.checkLatest("poll"), config.server.swap_poll_s * 1000);
  poll.unref?.();

  // The operations API and dashboard (/api, /dashboard) share the pipeline's pool and the verifier.
  const extend = opsRoutes({ pipeline: p, verifier, log });
  const instance = { pid: process.pid, process: opts.cluster?.index ?? 0 };
  const qs = config.server.query_samples;
  const querySamples = qs.rate > 0
    ? createQuerySampler({ ...qs, db: p.db.pool, modelKey: await embedderKey(config), dims: embedder.dims, log, onFlush: (outcome, n) => metrics.querySamples.inc({ outcome }, n) })
    : undefined;
  const app = createApp({ config, holder, embedder, generator, cache, verifier, metrics, log, extend, instance, querySamples, warmShare: opts.cluster?.share });
  return {
    app,
    fetch: (request) => Promise.resolve(app.fetch(request)),
    indexSource: source ?? null,
    auth: verifier ? "jwt" : "none",
    status: () => holder.status(),
    async close() {
      clearInterval(poll);
      await unsubscribe?.().catch(() => {});
      await querySamples?.close();
      await holder.close();
      await cache.close();
      await p.close();
    },
  };
}

export async function startServer(config: PipelineConfig, log: Logger, opts: HandlerOptions & { port?: number } = {}): Promise<RunningServer> {
  const t0 = performance.now();
  const h = await createApfaHandler(config, log, opts);
  const conn = config.server.connections;
  // Node requires keep-alive < headers timeout <= request timeout; a lower setting is raised to fit.
  const headersS = Math.max(conn.headers_timeout_s, conn.keep_alive_timeout_s + 1);
  const server = h3serve(h.app, {
    port: opts.port ?? config.server.port, hostname: config.server.host, silent: true, gracefulShutdown: false,
    // srvx listens `exclusive` unless reusePort is set, and an exclusive listener is not shared through
    // node:cluster: processes of `--processes N` need it off (Node 20 ignores reusePort itself).
    ...(opts.cluster ? { reusePort: true } : {}),
    // Node's defaults (5 s keep-alive, backlog 511) drop and refuse connections long before 10k clients.
    node: { keepAliveTimeout: conn.keep_alive_timeout_s * 1000, headersTimeout: headersS * 1000, requestTimeout: Math.max(conn.request_timeout_s, headersS) * 1000, backlog: conn.backlog },
  });
  if (conn.max_connections > 0 && server.node?.server && "maxConnections" in server.node.server) server.node.server.maxConnections = conn.max_connections;
  await server.ready();
  const url = server.url ?? `http://${config.server.host}:${config.server.port}/`;
  const st = h.status();
  // Under --processes the supervisor says "server ready" once every process is up.
  log.info(opts.cluster ? "server process listening" : "server ready", { url, ...(opts.cluster ? { process: opts.cluster.index } : { processes: 1 }), index_version: st.version, count: st.count, index_load_ms: st.load_ms, index_source: h.indexSource ?? "none", startup_ms: Math.round(performance.now() - t0), auth: h.auth });
  return {
    url,
    status: () => h.status(),
    async stop() {
      await server.close(true).catch(() => {});
      await h.close();
    },
  };
}
