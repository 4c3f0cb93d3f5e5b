/**
 * A real app (h3 routes, index holder, flat engine, fs store, template generator) serving documents embedded
 * with the given embedder, built through the same `buildVersion` as a run (so the version carries its lexical
 * index). No database: the version is written straight to a store in a temp directory. Used by the retrieval
 * tests and `apfa bench quality`.
 * @module
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import flat from "../../plugins/index/flat.ts";
import template from "../../plugins/generator/template.ts";
import fsStore from "../../plugins/store/fs.ts";
import { loadConfig } from "../../runtime/config/load.ts";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import type { Embedder, IndexEngine } from "../../runtime/contracts.ts";
import { layout } from "../../runtime/keys.ts";
import { silentLogger } from "../../runtime/log.ts";
import { buildVersion } from "../../runtime/stages/build.ts";
import { createApp, type AppDeps } from "../../server/app.ts";
import { createCache } from "../../server/cache.ts";
import { createIndexHolder } from "../../server/index-holder.ts";
import { createServerMetrics } from "../../server/metrics.ts";

export interface ServedDoc {
  id: string;
  text: string;
  metadata?: Record<string, unknown>;
}

export interface ServedApp {
  /** POSTs JSON to a route and returns the parsed body with the status. */
  post<T = any>(route: string, body: unknown): Promise<{ status: number; body: T }>;
  get<T = any>(route: string): Promise<{ status: number; body: T }>;
  version: string;
  /** The server's local cache of version files (`<cacheDir>/<version>/docs.jsonl`, …). */
  cacheDir: string;
  /** Builds another version from `docs`, publishes it as the store's latest and swaps the server to it. */
  publish(docs: ServedDoc[]): Promise<string>;
  /** Builds another version from `docs` and publishes it, without swapping; `swapTo` asks for the swap. */
  stage(docs: ServedDoc[]): Promise<string>;
  swapTo(version: string): Promise<string>;
  metrics: ReturnType<typeof createServerMetrics>;
  close(): Promise<void>;
}

/** Builds a version from `docs` and serves it; `retrieval` overrides `server.retrieval`. */
export async function servedApp(docs: ServedDoc[], embedder: Embedder, opts: { vectors?: Float32Array; retrieval?: Partial<PipelineConfig["server"]["retrieval"]>; engine?: IndexEngine; querySamples?: AppDeps["querySamples"]; overload?: Partial<PipelineConfig["server"]["overload"]>; cache?: Partial<PipelineConfig["server"]["cache"]>; warmShare?: AppDeps["warmShare"] } = {}): Promise<ServedApp> {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-served-"));
  const ctx = { baseDir: tmp, log: silentLogger, env: {} };
  const { config } = await loadConfig(undefined, { checkPlugins: false, env: {} });
  const base = config as PipelineConfig;
  const cfg: PipelineConfig = { ...base, server: { ...base.server, auth: { ...base.server.auth, mode: "none" }, retrieval: { ...base.server.retrieval, ...opts.retrieval }, overload: { ...base.server.overload, ...opts.overload }, cache: { ...base.server.cache, ...opts.cache } } };
  const store = await fsStore.create({ dir: "store" }, ctx);
  const engine = opts.engine ?? (flat.create(flat.options.parse({}), ctx) as IndexEngine);
  const put = async (docs: ServedDoc[], vectors?: Float32Array) => {
    vectors ??= await embedder.embed(docs.map((d) => d.text));
    const lines = new TextEncoder().encode(docs.map((d) => JSON.stringify({ id: d.id, text: d.text, metadata: d.metadata ?? {} })).join("\n"));
    const built = await buildVersion({
      pipeline: "default", runId: null, engine, engineName: "flat", engineKey: "test", embedderKey: "test", reuse: [],
      parts: [{ n: 0, docs: lines, vectors, rows: docs.length, dims: embedder.dims, modelId: embedder.modelId, maxChars: embedder.maxChars }],
    });
    const { manifest, files } = built;
    for (const [name, bytes] of Object.entries(files)) await store.put(layout.indexFile(manifest.version, name), bytes);
    await store.put(layout.indexFile(manifest.version, "manifest.json"), new TextEncoder().encode(JSON.stringify(manifest)));
    await store.put(layout.latest, new TextEncoder().encode(JSON.stringify({ version: manifest.version, published_at: new Date().toISOString() })));
    return manifest;
  };
  const manifest = await put(docs, opts.vectors);
  const metrics = createServerMetrics();
  const holder = createIndexHolder({ store, cacheDir: path.join(tmp, "cache"), embedder, engine: async () => engine, log: silentLogger, metrics });
  if ((await holder.start()) !== "store") throw new Error("the test version did not load");
  const generator = await template.create(template.options.parse({}), ctx);
  const app = createApp({ config: cfg, holder, embedder, generator, cache: createCache<string>({}), verifier: null, metrics, log: silentLogger, querySamples: opts.querySamples, warmShare: opts.warmShare });
  return {
    version: manifest.version,
    cacheDir: path.join(tmp, "cache"),
    metrics,
    async stage(docs) {
      return (await put(docs)).version;
    },
    swapTo: (version) => holder.swapTo(version, "test"),
    async publish(docs) {
      const { version } = await put(docs);
      if ((await holder.swapTo(version, "test")) !== "swapped") throw new Error(`the server did not swap to ${version}`);
      return version;
    },
    async post(route, body) {
      const res = await app.fetch(new Request(`http://127.0.0.1${route}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }));
      return { status: res.status, body: await res.json() };
    },
    async get(route) {
      const res = await app.fetch(new Request(`http://127.0.0.1${route}`));
      return { status: res.status, body: await res.json() };
    },
    async close() {
      await holder.close();
      await fsp.rm(tmp, { recursive: true, force: true });
    },
  };
}
