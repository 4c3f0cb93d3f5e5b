/**
 * A loaded pipeline: config, logger, database, store and lazily created stage plugins. Tasks, the CLI and the
 * server all work through this object, so each stage is created once per process (an embedder model loads
 * once per worker, not once per job).
 * @module
 */
import type { Embedder, Generator, IndexEngine, Logger, Notifier, PluginContext, PluginKind, Source, Store } from "./contracts.ts";
import type { PipelineConfig } from "./config/schema.ts";
import { openDatabase, type Database } from "./db.ts";
import { stageError } from "./errors.ts";
import { loadPlugin } from "./plugins.ts";
import { retryingStore } from "./store-retry.ts";

export interface Pipeline {
  config: PipelineConfig;
  log: Logger;
  db: Database;
  store: Store;
  /** A fresh source per call (sources hold cursors/files). */
  source(): Promise<Source>;
  embedder(): Promise<Embedder>;
  engine(): Promise<IndexEngine>;
  notifier(): Promise<Notifier>;
  generator(): Promise<Generator>;
  close(): Promise<void>;
}

type Ref = { plugin: string; options: Record<string, unknown> };

/** Creates one plugin instance from its config reference (options already validated by loadConfig). */
export async function createPlugin<T>(kind: PluginKind, ref: Ref, ctx: PluginContext): Promise<T> {
  try {
    const def = await loadPlugin(kind, ref.plugin, ctx.baseDir);
    const opts = def.options.parse(ref.options ?? {});
    return (await def.create(opts, ctx)) as T;
  } catch (err) {
    throw stageError(kind, ref.plugin, err);
  }
}

export async function openPipeline(config: PipelineConfig, log: Logger, opts: { db?: Database; store?: Store } = {}): Promise<Pipeline> {
  const db = opts.db ?? (await openDatabase(config, log));
  // Plugins that talk to Postgres (notifier, source) default to the same database, embedded or not.
  const env = { ...process.env, DATABASE_URL: process.env.DATABASE_URL || db.url } as Record<string, string | undefined>;
  const base: PluginContext = { baseDir: config.baseDir, log, env };
  const storeLog = log.child({ stage: "store" });
  const store = retryingStore(opts.store ?? (await createPlugin<Store>("store", config.store, { ...base, log: storeLog })), storeLog);
  const ctx = (stage: string): PluginContext => ({ ...base, store, log: log.child({ stage }) });
  const made: Array<() => Promise<void>> = [];
  const once = <T extends object>(make: () => Promise<T>) => {
    let p: Promise<T> | undefined;
    return () => {
      if (!p) {
        const mine = make();
        p = mine;
        mine.catch(() => (p = undefined));
        made.push(async () => {
          const inst = (await mine.catch(() => undefined)) as { close?(): Promise<void> } | undefined;
          await inst?.close?.();
        });
      }
      return p;
    };
  };
  const embedder = once(() => createPlugin<Embedder>("embedder", config.stages.embedder, ctx("embedder")));
  const engine = once(() => createPlugin<IndexEngine>("index", config.stages.index, ctx("index")));
  const notifier = once(() => createPlugin<Notifier>("notifier", config.stages.notifier, ctx("notifier")));
  const generator = once(() => createPlugin<Generator>("generator", config.stages.generator, ctx("generator")));
  return {
    config,
    log,
    db,
    store,
    source: () => createPlugin<Source>("source", config.stages.source, ctx("source")),
    embedder,
    engine,
    notifier,
    generator,
    async close() {
      for (const close of made.splice(0)) await close().catch((err) => log.warn("closing a stage failed", { error: String(err) }));
      await store.close?.();
      if (!opts.db) await db.close();
    },
  };
}
