/**
 * A served pipeline for the server tests. `openServerFixture` makes a temp dir with a `pipeline.yaml` (fs store
 * under the dir, the hash test embedder so no model loads, flat engine, the notifier the test asks for, port 0,
 * HS256 auth with a test secret), a fresh migrated database, and a Pipeline to publish with. Then:
 *
 * - `publish()` builds vectors for N documents (or takes the caller's), builds the flat artifact and calls
 *   `writeVersion`, exactly as `build_index` does; `corruptNextPut` damages bytes on their way into the store
 *   (the manifest keeps the good checksum), for swap-refusal tests.
 * - `start()` runs `startServer` in this process, with its log lines captured; `spawn()` runs
 *   `node bin/apfa.mjs serve -c <yaml> --port 0 --processes 1` and waits for its "server ready" line (one
 *   process, whatever the core count, unless the test asks for more).
 * - `startRedis()` runs a private `redis-server` child the test may kill and restart.
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import type { PipelineConfig } from "../../runtime/config/schema.ts";
import type { Store } from "../../runtime/contracts.ts";
import { createLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { createPlugin, openPipeline, type Pipeline } from "../../runtime/pipeline.ts";
import { writeVersion, type Manifest } from "../../runtime/versions.ts";
import { mintToken } from "../../server/auth.ts";
import { startServer, type RunningServer } from "../../server/serve.ts";
import { hashVector } from "../fixtures/plugins/hash-embedder.ts";
import { asDatabase, deepMerge, HASH_EMBEDDER, testConfig, withTestDatabase, type TestDatabase } from "./pg.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** 40 characters: over the 32 the HS256 verifier requires. */
export const JWT_SECRET = "apfa-server-tests-secret-0123456789abcdef";
export const DIMS = 64;

type Obj = Record<string, unknown>;
export type LogRecord = Record<string, unknown> & { time: string; level: string; msg: string };

export interface ServerFixtureOptions {
  /** `postgres` (LISTEN/NOTIFY on the test database, the default) or `redis` at `redisUrl` on a unique channel. */
  notifier?: "postgres" | "redis";
  redisUrl?: string;
  /** Replaces the fs store (`{ plugin, options }`), e.g. an s3 store on test/helpers/s3.ts. */
  store?: Obj;
  /** Deep-merged over the generated config (e.g. `{ server: { swap_poll_s: 1 } }`, another store). */
  overrides?: Obj;
  /** Env for `${VAR}` in the config, for the in-process server and for spawned ones. */
  env?: Record<string, string>;
}

export interface PublishOptions {
  /** Documents (and vectors) in the version. @default 500 */
  count?: number;
  /** Goes into every document's text, so each call makes a new version. @default a random tag */
  tag?: string;
  /** Row-major count × dims, L2-normalised; default: the hash embedder's vectors of the documents. */
  vectors?: Float32Array;
  dims?: number;
  /** Overrides the manifest's model_id (default: the server's embedder, `hash-trigram-<dims>`). */
  modelId?: string;
  /** Changes the files before `writeVersion` hashes them (the manifest then matches the damaged bytes). */
  mutate?: (files: Record<string, Uint8Array>) => void;
}

export interface Published {
  version: string;
  manifest: Manifest;
  /** Date.now() before writeVersion started and after it returned (the `latest` pointer moved in between). */
  before: number;
  after: number;
}

export interface ServerHandle {
  url: string;
  /** Parsed JSON log lines so far. */
  logs: LogRecord[];
  waitForLog(pred: (r: LogRecord) => boolean, what: string, ms?: number): Promise<LogRecord>;
  stop(): Promise<void>;
}

export interface ChildServer extends ServerHandle {
  child: ChildProcess;
  /** Raw stderr, for failure messages. */
  stderr(): string;
}

export interface ServerFixture {
  dir: string;
  /** The pipeline.yaml path (what `apfa serve -c` gets). */
  file: string;
  config: PipelineConfig;
  db: TestDatabase;
  pipeline: Pipeline;
  /** The next `put` whose key ends with `suffix` stores `damage(bytes)` instead (once). */
  corruptNextPut(suffix: string, damage: (bytes: Uint8Array) => Uint8Array): void;
  publish(opts?: PublishOptions): Promise<Published>;
  token(opts?: { sub?: string; ttl_s?: number }): Promise<string>;
  /** `server` is merged over the config's `server` block (e.g. another `cache_dir` or `swap_poll_s`). */
  start(opts?: { syncBuild?: boolean; server?: Partial<PipelineConfig["server"]> }): Promise<ServerHandle & { server: RunningServer }>;
  /** `server` is merged over the config's `server` block in a copy of pipeline.yaml the child reads. */
  spawn(opts?: SpawnOptions): Promise<ChildServer>;
  close(): Promise<void>;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  /** More arguments after `serve -c <yaml> --port 0`. */
  args?: string[];
  /** Replaces `node bin/apfa.mjs` (e.g. Deno on runtime/main.ts). */
  command?: string[];
  /** Merged over the config's `server` block in a copy of pipeline.yaml the child reads. */
  server?: Obj;
  /**
   * `--processes`: one unless the test is about several, so the suite's processes and /metrics series do not
   * depend on the machine's cores. `"config"` passes no flag (pipeline.yaml or the built-in default decides);
   * none is added either when `args` or `server` set the count themselves. @default 1
   */
  processes?: number | "auto" | "config";
}

/** Polls `pred` every 50 ms; throws naming `what` after `ms`. */
export async function until<T>(what: string, pred: () => T | Promise<T>, ms = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().once("error", reject).listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** `count` documents whose text names the tag, so two tags give two versions. */
export function makeDocs(count: number, tag: string): Array<{ id: string; text: string; metadata: Obj }> {
  const topics = ["credit card debt", "mortgage refinance", "student loan", "car loan", "personal loan", "savings account"];
  return Array.from({ length: count }, (_, i) => ({
    id: `doc-${i}`,
    text: `${topics[i % topics.length]} offer ${i} for customers (${tag})`,
    metadata: { n: i, tag },
  }));
}

function yamlFor(obj: Obj): string {
  return stringify(obj);
}

export async function openServerFixture(opts: ServerFixtureOptions = {}): Promise<ServerFixture> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-srv-"));
  const db = await withTestDatabase({ prefix: "apfa_srv" });
  const env = opts.env ?? {};
  const notifier = opts.notifier === "redis"
    ? { plugin: "redis", options: { url: opts.redisUrl ?? "redis://127.0.0.1:6379", channel: `apfa:test:srv:${path.basename(dir)}`, timeout_ms: 500 } }
    : { plugin: "postgres", options: { url: db.url, channel: `apfa_srv_${crypto.randomBytes(4).toString("hex")}`, timeout_ms: 2000 } };
  const base: Obj = {
    version: 1,
    name: "srv",
    database: { url: db.url },
    store: opts.store ?? { plugin: "fs", options: { dir: path.join(dir, "store") } },
    stages: {
      source: { plugin: "jsonl", options: { path: path.join(dir, "corpus.jsonl") } },
      embedder: { plugin: HASH_EMBEDDER, options: { dims: DIMS } },
      index: { plugin: "flat" },
      notifier,
    },
    server: { host: "127.0.0.1", port: 0, auth: { jwt_secret: JWT_SECRET }, cache_dir: path.join(dir, "cache"), swap_poll_s: 30 },
  };
  const merged = deepMerge(base, opts.overrides ?? {});
  const file = path.join(dir, "pipeline.yaml");
  try {
    await fsp.writeFile(file, yamlFor(merged));
    const config = await testConfig(merged, { file, env });
    await migrate(db.pool, createLogger({}, { level: "error" }));
    const log = createLogger({ who: "test-publisher" }, { level: "error" });
    let damage: { suffix: string; fn: (b: Uint8Array) => Uint8Array } | undefined;
    const made = await createPlugin<Store>("store", config.store, { baseDir: config.baseDir, log, env });
    const store: Store = {
      ...made,
      put(key, data) {
        if (damage && key.endsWith(damage.suffix) && data instanceof Uint8Array) {
          const fn = damage.fn;
          damage = undefined;
          return made.put(key, fn(data));
        }
        return made.put(key, data);
      },
    };
    const pipeline = await openPipeline(config, log, { db: asDatabase(db), store });
    const spawned = new Set<ChildServer>();
    const started = new Set<RunningServer>();

    const fixture: ServerFixture = {
      dir,
      file,
      config,
      db,
      pipeline,
      corruptNextPut(suffix, fn) {
        damage = { suffix, fn };
      },

      async publish(o = {}) {
        const count = o.count ?? 500;
        const dims = o.dims ?? DIMS;
        const tag = o.tag ?? crypto.randomBytes(6).toString("hex");
        const docs = makeDocs(count, tag);
        let vectors = o.vectors;
        if (!vectors) {
          const v = new Float32Array(count * dims);
          docs.forEach((d, i) => hashVector(d.text, dims, v.subarray(i * dims, (i + 1) * dims)));
          vectors = v;
        }
        const engine = await pipeline.engine();
        const artifact = await engine.build(vectors, dims);
        const files: Record<string, Uint8Array> = { ...artifact.files, "docs.jsonl": new TextEncoder().encode(docs.map((d) => JSON.stringify(d)).join("\n") + "\n") };
        o.mutate?.(files);
        const version = crypto.createHash("sha256").update(files[artifact.main]).update(files["docs.jsonl"]).digest("hex");
        const manifest: Manifest = {
          version, pipeline: config.name, engine: config.stages.index.plugin, metric: engine.metric, dims, count,
          model_id: o.modelId ?? `hash-trigram-${DIMS}`, run_id: null, created_at: new Date().toISOString(), main: artifact.main, files: {},
        };
        const before = Date.now();
        await writeVersion(pipeline, manifest, files);
        return { version, manifest, before, after: Date.now() };
      },

      token: (t = {}) => mintToken({ jwt_secret: JWT_SECRET }, { sub: t.sub ?? "tester", ttl_s: t.ttl_s ?? 3600 }),

      async start(s = {}) {
        const logs: LogRecord[] = [];
        const slog = createLogger({}, { level: "info", write: (l) => logs.push(JSON.parse(l) as LogRecord) });
        const prev = { ...process.env };
        Object.assign(process.env, env);
        let server: RunningServer;
        try {
          server = await startServer({ ...config, server: { ...config.server, ...s.server } }, slog, { port: 0, syncBuild: s.syncBuild });
        } finally {
          for (const k of Object.keys(env)) if (prev[k] === undefined) delete process.env[k];
        }
        started.add(server);
        return {
          server,
          url: server.url.replace(/\/$/, ""),
          logs,
          waitForLog: (pred, what, ms) => until(what, () => logs.find(pred), ms),
          async stop() {
            started.delete(server);
            await server.stop();
          },
        };
      },

      async spawn(s = {}) {
        let yaml = file;
        if (s.server) {
          yaml = path.join(dir, `pipeline-${crypto.randomBytes(4).toString("hex")}.yaml`);
          await fsp.writeFile(yaml, yamlFor(deepMerge(merged, { server: s.server })));
        }
        const own = s.args?.includes("--processes") || s.server?.processes !== undefined || s.processes === "config";
        const processes = own ? [] : ["--processes", String(s.processes ?? 1)];
        const child = spawn(s.command?.[0] ?? process.execPath, [...(s.command?.slice(1) ?? ["bin/apfa.mjs"]), "serve", "-c", yaml, "--port", "0", ...processes, ...(s.args ?? [])], {
          cwd: ROOT,
          env: { ...process.env, APFA_LOG_LEVEL: "info", APFA_LOG_FORMAT: "json", NO_COLOR: "1", ...env, ...s.env },
          stdio: ["ignore", "pipe", "pipe"],
          detached: true, // own process group: stop() reaches a wrapper's children too
        });
        const logs: LogRecord[] = [];
        let raw = "";
        createInterface({ input: child.stderr! }).on("line", (line) => {
          raw += line + "\n";
          if (line.startsWith("{")) {
            try {
              logs.push(JSON.parse(line) as LogRecord);
            } catch { /* not a log line */ }
          }
        });
        child.stdout!.on("data", (b: Buffer) => (raw += b.toString()));
        let exit: number | string | null | undefined;
        const exited = new Promise<void>((resolve) => child.once("exit", (code, sig) => ((exit = code ?? sig), resolve())));
        const handle: ChildServer = {
          child,
          url: "",
          logs,
          stderr: () => raw,
          waitForLog: (pred, what, ms) => until(what, () => {
            if (exit !== undefined) throw new Error(`server exited (${exit}) while waiting for ${what}:\n${raw.slice(-4000)}`);
            return logs.find(pred);
          }, ms),
          async stop() {
            spawned.delete(handle);
            if (exit !== undefined) return;
            try {
              process.kill(-child.pid!, "SIGTERM");
            } catch { /* gone */ }
            const t = setTimeout(() => {
              try {
                process.kill(-child.pid!, "SIGKILL");
              } catch { /* gone */ }
            }, 10_000);
            await exited;
            clearTimeout(t);
          },
        };
        spawned.add(handle);
        try {
          const ready = await handle.waitForLog((r) => r.msg === "server ready", "the server's \"server ready\" line", 60_000);
          handle.url = String(ready.url).replace(/\/$/, "");
        } catch (err) {
          await handle.stop();
          throw err;
        }
        return handle;
      },

      async close() {
        await Promise.all([...spawned].map((h) => h.stop()));
        await Promise.all([...started].map((s) => s.stop().catch(() => {})));
        await pipeline.close().catch(() => {});
        await db.drop();
        await fsp.rm(dir, { recursive: true, force: true });
      },
    };
    return fixture;
  } catch (err) {
    await db.drop().catch(() => {});
    await fsp.rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** POSTs JSON (or raw `body`) with a bearer token; returns status, headers and the parsed (or raw) body. */
export async function post(url: string, route: string, body: unknown, opts: { token?: string; headers?: Record<string, string>; raw?: boolean; signal?: AbortSignal } = {}) {
  const res = await fetch(url + route, {
    method: "POST",
    signal: opts.signal,
    headers: { "content-type": "application/json", ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...opts.headers },
    body: opts.raw ? (body as string) : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

export async function getJson(url: string, route: string): Promise<{ status: number; json: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await fetch(url + route);
  return { status: res.status, json: await res.json() };
}

/** The value of one Prometheus sample (`name{labels}`), 0 when absent. */
export async function metric(url: string, sample: RegExp): Promise<number> {
  const text = await (await fetch(url + "/metrics")).text();
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const sp = line.lastIndexOf(" ");
    if (sample.test(line.slice(0, sp))) return Number(line.slice(sp + 1));
  }
  return 0;
}

export interface TestRedis {
  port: number;
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** A private `redis-server` (no persistence) on a free port; `stop()` kills it, `start()` brings it back there. */
export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async () => {
    const c = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "pipe"] });
    c.stdout!.resume();
    c.stderr!.resume();
    child = c;
    await until(`redis-server on ${port}`, () => new Promise<boolean>((resolve) => {
      if (c.exitCode !== null) throw new Error(`redis-server exited with ${c.exitCode}`);
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.write("PING\r\n");
        s.once("data", (b) => (s.destroy(), resolve(b.toString().startsWith("+PONG"))));
      });
      s.once("error", () => resolve(false));
    }), 10_000);
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    async stop() {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise((r) => c.once("exit", r));
      c.kill("SIGKILL");
      await gone;
    },
  };
}
