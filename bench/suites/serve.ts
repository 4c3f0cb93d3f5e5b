/**
 * Serve suite: `apfa serve` (a real child process: h3, JWT auth, response cache, index leases, metrics) under
 * 1-100 autocannon connections on /search and /generate-advice, against a raw node:http search server doing the
 * same per-request work (bench/child/raw-server.ts); the same with hot swaps published during the run; and
 * start-up time from process start to the first 200 on /search with a 100k index. Queries go through the cheap
 * deterministic `bench-hash` embedder, and every request has a unique query, so nothing is a cache hit and the
 * numbers measure the server, not a model.
 * @module
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";
import pg from "pg";
import { generateCorpus } from "../../examples/corpus.ts";
import flat from "../../plugins/index/flat.ts";
import { loadOrFail } from "../../runtime/commands/common.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { openPipeline, type Pipeline } from "../../runtime/pipeline.ts";
import { writeVersion, type Manifest } from "../../runtime/versions.ts";
import { mintToken, type AuthConfig } from "../../server/auth.ts";
import { hashEmbed } from "../fixtures/hash-embedder.ts";
import { benchFile, createBenchDatabase, median, NO_SCHEDULES, num, ROOT, saveChart, spawnNode, spawnTs, stopChild, tempDir, writePipeline, type BenchContext, type SuiteOutput } from "../lib.ts";
import { lineChart } from "../svg.ts";
import { docsJsonl, expand } from "../vectors.ts";
import { cliStartup } from "./cli-startup.ts";
import { loadTest, loadTables, type LoadRow } from "./serve-load.ts";

const DIMS = 384;

export interface Version {
  manifest: Manifest;
  files: Record<string, Uint8Array>;
}

/**
 * Flat index versions of `n` hash-embedded corpus rows (the corpus repeated with small perturbations);
 * `make(tweak)` changes one value, so every tweak is a distinct version, as every real build would be.
 */
export async function versionFactory(n: number): Promise<(tweak: number) => Promise<Version>> {
  const docs = generateCorpus({ count: 1000 });
  const base = new Float32Array(docs.length * DIMS);
  docs.forEach((d, i) => hashEmbed(d.text, DIMS, base.subarray(i * DIMS, (i + 1) * DIMS)));
  const parts = expand({ dims: DIMS, docs, base, queries: new Float32Array(0), queryCount: 0 }, n, 10_000, 0.05);
  const vectors = new Float32Array(n * DIMS);
  parts.forEach((p, i) => vectors.set(p, i * 10_000 * DIMS));
  const docBytes = docsJsonl(docs, n);
  const engine = await flat.create(flat.options.parse({}), { baseDir: ROOT, log: silentLogger, env: {} });
  return async (tweak) => {
    const v = vectors.slice();
    v[0] += tweak * 1e-6;
    const art = await engine.build(v, DIMS);
    const version = crypto.createHash("sha256").update(art.files[art.main]).update(docBytes).digest("hex");
    return {
      manifest: { version, pipeline: "bench", engine: "flat", metric: "ip", dims: DIMS, count: n, model_id: `bench-hash-trigram-${DIMS}`, run_id: null, created_at: new Date().toISOString(), main: art.main, files: {} },
      files: { ...art.files, "docs.jsonl": docBytes },
    };
  };
}

/** Writes the version to the store, points `latest` at it and sends the swap event (as build_index does). */
export const publish = (p: Pipeline, v: Version) => writeVersion(p, { ...v.manifest, files: {} }, v.files);

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** Polls until `url` answers 2xx; returns ms since `t0`. */
export async function firstOk(url: string, init: RequestInit, t0: number, timeoutMs = 120_000): Promise<number> {
  for (;;) {
    try {
      const res = await fetch(url, init);
      await res.arrayBuffer();
      if (res.ok) return performance.now() - t0;
    } catch {
      // not listening yet
    }
    if (performance.now() - t0 > timeoutMs) throw new Error(`[apfa] [bench:serve] ${url} not answering 200 after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Waits until every one of the server's `processes` answers 200 on `/ready` (each reports its slot), asking on
 * a fresh connection each time since cluster hands out connections round-robin. A run must not start before:
 * a process still starting gets none of the run's long-lived connections. Returns ms since `t0`.
 */
export async function allProcessesReady(base: string, processes: number, t0: number, timeoutMs = 120_000): Promise<number> {
  const seen = new Set<number>();
  for (;;) {
    const r = await new Promise<{ status: number; body: string } | undefined>((resolve) => {
      http.get(`${base}/ready`, { agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (c: string) => (body += c)).on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      }).on("error", () => resolve(undefined));
    });
    if (r?.status === 200) seen.add((JSON.parse(r.body) as { process?: number }).process ?? 0);
    if (seen.size >= processes) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`[apfa] [bench:serve] ${base}: ${seen.size} of ${processes} processes ready after ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 5));
  }
}

/** What the serve and load suites' server starters share. */
export interface Ctx {
  ctx: BenchContext;
  dir: string;
  url: string;
  secret: string;
  log: string;
}

/** The served versions' local copies of server `name` (its `server.cache_dir`). */
const cacheDirOf = (c: Ctx, name: string) => path.join(c.dir, `cache-${name}`);

/** Writes the serve suites' pipeline.yaml for one server (`name` keeps its cache directory apart). */
export function serverYaml(c: Ctx, name: string, port: number): string {
  return writePipeline(c.dir, {
    name: "bench",
    database: { url: c.url },
    store: { plugin: "fs", options: { dir: path.join(c.dir, "store") } },
    stages: {
      source: { plugin: "jsonl", options: { path: path.join(c.dir, "empty.jsonl") } },
      embedder: { plugin: benchFile("fixtures/hash-embedder.ts"), options: { dims: DIMS } },
      index: { plugin: "flat" },
      notifier: { plugin: "postgres", options: { url: c.url } },
      generator: { plugin: "template" },
    },
    schedules: NO_SCHEDULES,
    server: { host: "127.0.0.1", port, auth: { jwt_secret: c.secret }, cache_dir: cacheDirOf(c, name) },
  }, `serve-${name}.yaml`);
}

/**
 * Starts `apfa serve --processes N` on a free port; `fdLimit` raises its descriptor limit for thousands of
 * connections. The process count is always passed, so the figures do not move when `server.processes`'s
 * default does.
 */
export async function startApfa(c: Ctx, name: string, opts: { processes: number; fdLimit?: number }): Promise<{ base: string; stop: () => Promise<void>; t0: number; child: ReturnType<typeof spawnNode>; cacheDir: string }> {
  const { processes, fdLimit } = opts;
  const port = await freePort();
  const yaml = serverYaml(c, name, port);
  const t0 = performance.now();
  const child = spawnNode(["bin/apfa.mjs", "serve", "-c", yaml, "--port", String(port), "--processes", String(processes), "--no-sync-build"], { profileDir: c.ctx.profileDir, log: c.log, env: { APFA_LOG_LEVEL: "info" }, fdLimit });
  return { base: `http://127.0.0.1:${port}`, stop: () => stopChild(child), t0, child, cacheDir: cacheDirOf(c, name) };
}

/** Starts the raw node:http baseline over the version files in `dir`, with `processes` processes sharing the port. */
export async function startRaw(c: Ctx, dir: string, opts: { processes: number; fdLimit?: number }): Promise<{ base: string; stop: () => Promise<void>; t0: number; child: ReturnType<typeof spawnNode> }> {
  const { processes, fdLimit } = opts;
  const port = await freePort();
  const t0 = performance.now();
  const child = spawnTs(benchFile("child/raw-server.ts"), [dir, String(port), String(processes)], { profileDir: c.ctx.profileDir, log: c.log, fdLimit });
  return { base: `http://127.0.0.1:${port}`, stop: () => stopChild(child), t0, child };
}

/** Writes a version's files into `dir` (for the raw server, which reads them directly); returns `dir`. */
export function writeFiles(dir: string, v: Version): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const [f, b] of Object.entries(v.files)) fs.writeFileSync(path.join(dir, f), b);
  return dir;
}

/**
 * A bench database with apfa's tables, a temporary folder, the publisher pipeline the servers swap from and a
 * day-long token; `fn` runs with them and everything is torn down after it, however it ends.
 */
export async function withServeBench<T>(ctx: BenchContext, name: string, fn: (b: { c: Ctx; dir: string; p: Pipeline; token: string }) => Promise<T>): Promise<T> {
  const db = await createBenchDatabase();
  const dir = tempDir(name);
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  pool.on("error", () => {}); // sessions end when the database is dropped
  pool.on("connect", (client) => client.on("error", () => {}));
  const c: Ctx = { ctx, dir, url: db.url, secret: crypto.randomBytes(24).toString("hex"), log: ctx.logFile };
  let p: Pipeline | undefined;
  try {
    await migrate(pool, silentLogger);
    fs.writeFileSync(path.join(dir, "empty.jsonl"), "");
    p = await openPipeline(await loadOrFail(serverYaml(c, "publisher", 0)), silentLogger);
    const token = await mintToken({ jwt_secret: c.secret } as AuthConfig, { sub: "bench", ttl_s: 86_400 });
    return await fn({ c, dir, p, token });
  } finally {
    await p?.close().catch(() => {});
    await pool.end().catch(() => {});
    await db.drop().catch((err) => ctx.log(`dropping ${db.name} failed: ${(err as Error).message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function serveSuite(ctx: BenchContext): Promise<SuiteOutput> {
  return withServeBench(ctx, "serve", async ({ c, dir, p, token }) => {
    const q = ctx.quick;
    const makeSmall = await versionFactory(10_000);
    const first = await makeSmall(0);
    let tweak = 1;
    await publish(p, first);
    const apfa = await startApfa(c, "load", { processes: 1 });
    const raw = await startRaw(c, writeFiles(path.join(dir, "raw-10k"), first), { processes: 1 });
    const rows: LoadRow[] = [];
    try {
      const auth = { authorization: `Bearer ${token}`, "content-type": "application/json" };
      await firstOk(`${apfa.base}/ready`, {}, apfa.t0);
      await firstOk(`${raw.base}/search`, { method: "POST", body: JSON.stringify({ query: "warm up", k: 5 }) }, raw.t0);
      const duration = q ? 2 : 10;
      const swaps = q ? 3 : 10;
      for (const conns of q ? [1, 10] : [1, 10, 50, 100]) {
        ctx.log(`raw /search, ${conns} connections`);
        rows.push({ server: "raw", route: "/search", conns, swaps: 0, ...(await loadTest(raw.base, "/search", conns, duration, {})) });
        for (const route of ["/search", "/generate-advice"]) {
          ctx.log(`${route}, ${conns} connections`);
          rows.push({ server: "apfa", route, conns, swaps: 0, ...(await loadTest(apfa.base, route, conns, duration, auth)) });
          // New versions each time (as real builds are), prepared before the run so only publishing overlaps it.
          const versions = await Promise.all(Array.from({ length: swaps }, () => makeSmall(tweak++)));
          const swapper = async () => {
            for (const v of versions) {
              await new Promise((r) => setTimeout(r, (duration * 1000) / (swaps + 1)));
              await publish(p!, v);
            }
          };
          ctx.log(`${route}, ${conns} connections, ${swaps} swaps`);
          const before = await swapCount(apfa.base);
          const [res] = await Promise.all([loadTest(apfa.base, route, conns, duration, auth), swapper()]);
          const applied = (await waitVersion(apfa.base, versions.at(-1)!.manifest.version, before + swaps)) - before;
          rows.push({ server: "apfa", route, conns, swaps: applied, ...res });
        }
      }
    } finally {
      await apfa.stop();
      await raw.stop();
    }
    const out = loadTables(rows, q ? 3 : 10);

    // Start-up: process start → first 200 on /search, with a 100k index (10k in quick mode).
    const n = q ? 10_000 : 100_000;
    const big = await (await versionFactory(n))(0);
    await publish(p, big);
    const rawDir = writeFiles(path.join(dir, "raw-big"), big);
    const body = { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify({ query: "refinance my car loan", k: 5 }) };
    const times = { cold: [] as number[], warm: [] as number[], raw: [] as number[] };
    for (let i = 0; i < (q ? 1 : 3); i++) {
      ctx.log(`start-up ${i + 1}`);
      for (const kind of ["cold", "warm"] as const) {
        const s = await startApfa(c, `start-${i}`, { processes: 1 });
        try {
          times[kind].push(await firstOk(`${s.base}/search`, body, s.t0));
        } finally {
          await s.stop();
        }
      }
      const r = await startRaw(c, rawDir, { processes: 1 });
      try {
        times.raw.push(await firstOk(`${r.base}/search`, { method: "POST", body: body.body }, r.t0));
      } finally {
        await r.stop();
      }
    }
    const [cold, warm, rs] = [median(times.cold), median(times.warm), median(times.raw)];
    const label = `${n / 1000}k`;
    out.tables.push({
      title: `Start-up: process start → first 200 on /search, ${label} × ${DIMS} flat index (median of ${times.raw.length})`,
      columns: ["server", "ms", "÷ raw", "goal"],
      rows: [
        [`raw node:http server (${benchFile("child/raw-server.ts").endsWith(".js") ? "compiled" : "tsx"}, readFileSync)`, num(rs, 0), "1.00×", ""],
        ["apfa serve, empty cache (links or copies the version from the store and verifies it)", num(cold, 0), `${(cold / rs).toFixed(2)}×`, "< 1000 ms, ≤ 1.3×"],
        ["apfa serve, restart (version already in the local cache)", num(warm, 0), `${(warm / rs).toFixed(2)}×`, "< 1000 ms, ≤ 1.3×"],
      ],
      note: "both include Node start-up (and, when the bench runs from the sources, tsx compiling TypeScript); apfa also connects to Postgres, subscribes to swap events and verifies the JWT of the first request",
    });
    out.ratios.push(
      { id: "serve/startup_cold_s", label: `start-up to first 200 with ${label}, empty cache (seconds)`, value: cold / 1000, better: "lower", goal: 1 },
      { id: "serve/startup_warm_s", label: `start-up to first 200 with ${label}, restart (seconds)`, value: warm / 1000, better: "lower", goal: 1 },
      { id: "serve/startup_vs_raw", label: `start-up (empty cache) ÷ raw server`, value: cold / rs, better: "lower", goal: 1.3 },
      { id: "serve/startup_warm_vs_raw", label: `start-up (restart) ÷ raw server`, value: warm / rs, better: "lower", goal: 1.3 },
    );
    ctx.log("CLI start-up");
    const cli = cliStartup(serverYaml(c, "token", 0), q ? 3 : 9);
    out.tables.push(cli.table);
    out.ratios.push(...cli.ratios);
    out.charts.push(...["/search", "/generate-advice"].map((route) => saveChart(ctx, `serve${route.replace("/", "-")}`, `${route} requests/s by connections`, lineChart({
      title: `${route}: requests/s`, xLabel: "connections (log scale)", yLabel: "requests/s", logX: true,
      series: [
        { name: "raw /search", points: rows.filter((r) => r.server === "raw").map((r) => [r.conns, r.rps]) },
        { name: `apfa ${route}`, points: rows.filter((r) => r.server === "apfa" && r.route === route && !r.swaps).map((r) => [r.conns, r.rps]) },
        { name: `apfa ${route} + swaps`, points: rows.filter((r) => r.server === "apfa" && r.route === route && r.swaps).map((r) => [r.conns, r.rps]) },
      ],
    }))));
    return out;
  });
}

/**
 * Swaps the server has settled, as process 0 counts them (each process counts every swap round it takes part
 * in): `success`, and `superseded`, the rounds of `--processes N` dropped because a newer version came before
 * they finished (a single process swaps to every version it sees).
 */
export async function swapCounts(base: string): Promise<{ success: number; superseded: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const n = { success: 0, superseded: 0 };
  for (const m of text.matchAll(/^apfa_swap_total\{([^}]*)\} (\d+)$/gm)) {
    const labels = m[1];
    if (/process="(?!0")/.test(labels)) continue;
    if (labels.includes('outcome="success"')) n.success += Number(m[2]);
    else if (labels.includes('outcome="aborted"') && labels.includes('reason="superseded"')) n.superseded += Number(m[2]);
  }
  return n;
}

/** Successful swaps the server has counted (`apfa_swap_total{outcome="success"}`, process 0's under `--processes N`). */
export const swapCount = async (base: string): Promise<number> => (await swapCounts(base)).success;

/**
 * Waits until the server serves `version` and has settled (applied or superseded, {@link swapCounts}) `swaps`
 * swaps in all, or 30 s; returns the settled count.
 */
export async function waitVersion(base: string, version: string, swaps: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const v = ((await (await fetch(`${base}/index`)).json()) as { version?: string }).version;
    const c = await swapCounts(base);
    const n = c.success + c.superseded;
    if ((v === version && n >= swaps) || Date.now() - t0 > 30_000) return n;
    await new Promise((r) => setTimeout(r, 100));
  }
}
