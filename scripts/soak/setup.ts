/**
 * The soak's fixtures: a fresh `apfa_soak_<random>` database, a project directory with a pipeline.yaml (fs
 * store, the hash test embedder, the flat engine, the postgres notifier, a Redis or in-process response cache)
 * and the source corpus the mid-soak rebuild embeds, plus a publisher that writes index versions as
 * build_index does (writeVersion: files, manifest, `latest`, NOTIFY).
 * @module
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { NO_SCHEDULES, ROOT, writePipeline } from "../../bench/lib.ts";
import { generateCorpus, type CorpusDoc } from "../../examples/corpus.ts";
import flat from "../../plugins/index/flat.ts";
import { loadOrFail } from "../../runtime/commands/common.ts";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { openPipeline, type Pipeline } from "../../runtime/pipeline.ts";
import { writeVersion, type Manifest } from "../../runtime/versions.ts";
import { hashVector } from "../../test/fixtures/plugins/hash-embedder.ts";

const ADMIN_URL = process.env.APFA_SOAK_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const HASH_EMBEDDER = fileURLToPath(new URL("../../test/fixtures/plugins/hash-embedder.ts", import.meta.url));

export interface SoakDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

async function admin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Creates `apfa_soak_<random>`; `drop` terminates its sessions and removes it. */
export async function createSoakDatabase(): Promise<SoakDatabase> {
  const name = `apfa_soak_${crypto.randomBytes(5).toString("hex")}`;
  await admin(`create database "${name}"`).catch((err: Error) => {
    throw new Error(`[apfa] [soak] cannot create a database on ${ADMIN_URL}: ${err.message}; start Postgres on 127.0.0.1:5432 or set APFA_SOAK_ADMIN_URL`, { cause: err });
  });
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return { name, url: u.toString(), drop: () => admin(`drop database if exists "${name}" with (force)`) };
}

export interface ProjectOptions {
  dir: string;
  dbUrl: string;
  dims: number;
  docs: number;
  port: number;
  jwtSecret: string;
  /** Unset = the in-process LRU. */
  redisUrl?: string;
}

export interface Project {
  /** Also the cache's Redis key prefix: `apfa:cache:<name>:`. */
  name: string;
  yaml: string;
  config: PipelineConfig;
  pipeline: Pipeline;
  close(): Promise<void>;
}

/** Writes corpus.jsonl and pipeline.yaml into `dir`, migrates the database and opens a publishing pipeline. */
export async function openProject(o: ProjectOptions): Promise<Project> {
  const name = `soak-${crypto.randomBytes(4).toString("hex")}`;
  // The rebuild's source: a corpus none of the published versions uses, so its version is distinct too.
  const corpus = generateCorpus({ count: o.docs, seed: 7 });
  fs.writeFileSync(path.join(o.dir, "corpus.jsonl"), corpus.map((d) => JSON.stringify(d)).join("\n") + "\n");
  const yaml = writePipeline(o.dir, {
    name,
    database: { url: o.dbUrl },
    store: { plugin: "fs", options: { dir: path.join(o.dir, "store") } },
    stages: {
      source: { plugin: "jsonl", options: { path: path.join(o.dir, "corpus.jsonl") } },
      embedder: { plugin: HASH_EMBEDDER, options: { dims: o.dims } },
      index: { plugin: "flat" },
      notifier: { plugin: "postgres", options: { url: o.dbUrl, channel: name.replace(/-/g, "_") } },
      generator: { plugin: "template" },
    },
    schedules: NO_SCHEDULES,
    server: {
      host: "127.0.0.1",
      port: o.port,
      auth: { jwt_secret: o.jwtSecret },
      cache: o.redisUrl ? { redis_url: o.redisUrl } : {},
      cache_dir: path.join(o.dir, "cache"),
    },
  });
  const config = await loadOrFail(yaml);
  const pool = new pg.Pool({ connectionString: o.dbUrl, max: 2 });
  // graphile-worker's migrations warn unless the pool and its clients have error handlers.
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  try {
    await migrate(pool, silentLogger);
  } finally {
    await pool.end();
  }
  const pipeline = await openPipeline(config, silentLogger);
  return { name, yaml, config, pipeline, close: () => pipeline.close() };
}

/**
 * Makes version `seq` of a `count`-document corpus: every tenth document (a different tenth each time) is
 * revised and re-embedded, as an incremental source change would be, so every version is distinct while
 * only ~10% of the embedding work is redone in this (load-generating) process.
 */
export async function versionMaker(config: PipelineConfig, count: number, dims: number): Promise<(seq: number) => Promise<{ manifest: Manifest; files: Record<string, Uint8Array> }>> {
  const docs = generateCorpus({ count, seed: 11 });
  const vectors = new Float32Array(count * dims);
  const row = (i: number) => vectors.subarray(i * dims, (i + 1) * dims);
  docs.forEach((d, i) => hashVector(d.text, dims, row(i)));
  const lines = docs.map((d) => JSON.stringify(d));
  const engine = await flat.create(flat.options.parse({}), { baseDir: ROOT, log: silentLogger, env: {} });
  return async (seq) => {
    for (let i = seq % 10; i < count; i += 10) {
      const d: CorpusDoc = { ...docs[i], text: `${docs[i].text} (revision ${seq})`, metadata: { ...docs[i].metadata, revision: seq } };
      row(i).fill(0);
      hashVector(d.text, dims, row(i));
      lines[i] = JSON.stringify(d);
    }
    const art = await engine.build(vectors, dims);
    const docBytes = new TextEncoder().encode(lines.join("\n") + "\n");
    const version = crypto.createHash("sha256").update(art.files[art.main]).update(docBytes).digest("hex");
    const manifest: Manifest = {
      version, pipeline: config.name, engine: "flat", metric: engine.metric, dims, count, model_id: `hash-trigram-${dims}`,
      run_id: null, created_at: new Date().toISOString(), main: art.main, files: {},
    };
    return { manifest, files: { ...art.files, "docs.jsonl": docBytes } };
  };
}

/** Writes a version to the store, points `latest` at it and sends the swap event; returns the version. */
export async function publish(p: Pipeline, v: { manifest: Manifest; files: Record<string, Uint8Array> }): Promise<string> {
  await writeVersion(p, v.manifest, v.files);
  return v.manifest.version;
}
