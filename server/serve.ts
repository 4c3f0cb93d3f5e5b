/**
 * `apfa serve` and `apfa token`. The server loads `latest` at start-up (else the local cache, else a
 * synchronous build from the source), subscribes to swap events, re-checks `latest` on reconnect and every
 * `swap_poll_s` seconds, and serves the API until SIGTERM/SIGINT.
 * @module
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { serve as h3serve } from "h3";
import type { Command } from "../runtime/cli.ts";
import { cliLogger, loadOrFail, onceSignal } from "../runtime/commands/common.ts";
import type { PipelineConfig } from "../runtime/config/schema.ts";
import type { IndexEngine, Logger } from "../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../runtime/errors.ts";
import { createPlugin, openPipeline, type Pipeline } from "../runtime/pipeline.ts";
import { buildVersion, type NewPart } from "../runtime/stages/build.ts";
import { embedBatch, encodeBatch } from "../runtime/stages/embed.ts";
import { enumerate } from "../runtime/stages/enumerate.ts";
import { embedderKey, engineKey } from "../runtime/stages/identity.ts";
import type { Manifest } from "../runtime/versions.ts";
import { createApp, type CachedAnswer } from "./app.ts";
import { opsRoutes } from "./api.ts";
import { makeVerifier, mintToken, type AuthConfig, type Verifier } from "./auth.ts";
import { createCache } from "./cache.ts";
import { createIndexHolder } from "./index-holder.ts";
import { createServerMetrics } from "./metrics.ts";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);

/** The auth config in force: the configured key, or in dev mode a per-install secret under .apfa/. */
export function resolveAuth(config: PipelineConfig, log?: Logger): AuthConfig | null {
  const a = config.server.auth;
  if (a.mode === "none") {
    if (!LOOPBACK.has(config.server.host)) {
      throw new ApfaError("config", `server.auth.mode "none" is only allowed when server.host is a loopback address (got ${config.server.host}); set server.auth.jwt_secret`);
    }
    return null;
  }
  if (a.jwt_secret || a.public_key || a.jwks_url) return a as AuthConfig;
  const file = path.resolve(config.baseDir, ".apfa/dev-jwt.secret");
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, crypto.randomBytes(32).toString("base64url"), { mode: 0o600 });
  }
  log?.warn("no server.auth key configured: using the development secret in .apfa/dev-jwt.secret; mint tokens with `apfa token`", { file });
  return { ...a, jwt_secret: fs.readFileSync(file, "utf8").trim() } as AuthConfig;
}

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
  stop(): Promise<void>;
}

export async function startServer(config: PipelineConfig, log: Logger, opts: { port?: number; syncBuild?: boolean } = {}): Promise<RunningServer> {
  const t0 = performance.now();
  const p = await openPipeline(config, log);
  const metrics = createServerMetrics();
  const authCfg = resolveAuth(config, log);
  let verifier: Verifier | null = null;
  if (authCfg) {
    verifier = makeVerifier(authCfg);
    await verifier.ready();
  } else {
    log.warn("authentication is OFF (server.auth.mode: none, loopback only)");
  }
  const embedder = await p.embedder();
  const generator = await p.generator();
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
  const holder = createIndexHolder({
    store: p.store,
    cacheDir,
    embedder,
    engine: engineFor,
    log: log.child({ component: "index" }),
    metrics,
    buildFromSource: opts.syncBuild === false ? undefined : async () => buildFromSource(p, await engineFor(config.stages.index.plugin), cacheDir),
  });
  const cache = createCache<CachedAnswer>({
    ...config.server.cache,
    key_prefix: `apfa:cache:${config.name}:`,
    onHit: (b) => metrics.cacheHits.inc({ backend: b }),
    onMiss: (b) => metrics.cacheMisses.inc({ backend: b }),
    log,
  });
  const source = await holder.start();
  let unsubscribe: (() => Promise<void>) | undefined;
  try {
    const notifier = await p.notifier();
    unsubscribe = await notifier.subscribe(
      (ev) => void holder.swapTo(ev.version, "event"),
      { onReconnect: () => void holder.checkLatest("reconnect") },
    );
  } catch (err) {
    log.warn("swap events unavailable; relying on the periodic check", { error: errorMessage(err) });
  }
  const poll = setInterval(() => void holder.checkLatest("poll"), config.server.swap_poll_s * 1000);
  poll.unref?.();

  // The operations API and dashboard (/api, /dashboard) share the pipeline's pool and the verifier.
  const extend = opsRoutes({ pipeline: p, verifier, log });
  const app = createApp({ config, holder, embedder, generator, cache, verifier, metrics, log, extend });
  const conn = config.server.connections;
  // Node requires keep-alive < headers timeout <= request timeout; a lower setting is raised to fit.
  const headersS = Math.max(conn.headers_timeout_s, conn.keep_alive_timeout_s + 1);
  const server = h3serve(app, {
    port: opts.port ?? config.server.port, hostname: config.server.host, silent: true, gracefulShutdown: false,
    // Node's defaults (5 s keep-alive, backlog 511) drop and refuse connections long before 10k clients.
    node: { keepAliveTimeout: conn.keep_alive_timeout_s * 1000, headersTimeout: headersS * 1000, requestTimeout: Math.max(conn.request_timeout_s, headersS) * 1000, backlog: conn.backlog },
  });
  if (conn.max_connections > 0 && server.node?.server && "maxConnections" in server.node.server) server.node.server.maxConnections = conn.max_connections;
  await server.ready();
  const url = server.url ?? `http://${config.server.host}:${config.server.port}/`;
  const st = holder.status();
  log.info("server ready", { url, index_version: st.version, count: st.count, index_load_ms: st.load_ms, index_source: source ?? "none", startup_ms: Math.round(performance.now() - t0), auth: verifier ? "jwt" : "none" });
  return {
    url,
    async stop() {
      clearInterval(poll);
      await server.close(true).catch(() => {});
      await unsubscribe?.().catch(() => {});
      await holder.close();
      await cache.close();
      await p.close();
    },
  };
}

export const serveCmd: Command = {
  summary: "Serve the advice API: loads the latest index, hot-swaps on events, answers /generate-advice, /search, /health, /ready, /metrics, /index.",
  usage: "apfa serve [-c pipeline.yaml] [--port N] [--no-sync-build]",
  options: { port: { type: "string", short: "p" }, "no-sync-build": { type: "boolean" } },
  async run({ values }) {
    const config = await loadOrFail(values.config as string);
    const log = cliLogger({ cmd: "serve" });
    const port = values.port !== undefined ? Number(values.port) : undefined;
    if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) {
      console.error(`apfa serve: --port must be 0-65535 (got ${values.port})`);
      return 2;
    }
    const s = await startServer(config, log, { port, syncBuild: !values["no-sync-build"] });
    const sig = await onceSignal();
    log.info("server stopping", { signal: sig });
    await s.stop();
    return 0;
  },
};

export const tokenCmd: Command = {
  summary: "Mint a development JWT for the configured HS256 secret (or the per-install dev secret).",
  usage: "apfa token [--sub user] [--ttl 3600]",
  options: { sub: { type: "string", default: "dev" }, ttl: { type: "string", default: "3600" } },
  async run({ values }) {
    const config = await loadOrFail(values.config as string);
    const auth = resolveAuth(config);
    if (!auth) {
      console.error("apfa token: server.auth.mode is none; no token is needed");
      return 1;
    }
    console.log(await mintToken(auth, { sub: String(values.sub), ttl_s: Number(values.ttl) }));
    return 0;
  },
};
