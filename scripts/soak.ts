/**
 * Soak test (issue "Reliability", part 4): `apfa serve` as a child process under mixed traffic for
 * `--minutes` (default 10) while a new index version is published every `--swap-every` seconds and one full
 * rebuild runs through a real `apfa worker` around the middle. The server's RSS is sampled every 5 s; the
 * script prints a per-minute table and the memory verdict and writes `bench/results/soak.json` and an SVG of
 * memory over time. Exit 0 when there were no errors, every swap was applied, the rebuild succeeded and RSS
 * did not keep growing (the post-warm-up slope projects to less than one index's worth over the soak).
 *
 *   node --import tsx scripts/soak.ts [--minutes 10] [--rate 300] [--connections 16] [--cache redis|memory]
 *
 * Needs Postgres on 127.0.0.1:5432 (a fresh `apfa_soak_<random>` database, dropped at the end) and, for the
 * default Redis cache, Redis on 127.0.0.1:6379 (keys under a unique prefix, deleted at the end).
 * @module
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { envInfo, num, percentile, ROOT, spawnNode, stopChild } from "../bench/lib.ts";
import { readLatest } from "../runtime/versions.ts";
import { mintToken, type AuthConfig } from "../server/auth.ts";
import { startRebuild, type RebuildResult } from "./soak/rebuild.ts";
import { minuteTable, printTable, rssChart, summariseMemory, writeOutputs } from "./soak/report.ts";
import { procMiB, takeSample, type Sample } from "./soak/sampler.ts";
import { createSoakDatabase, openProject, publish, versionMaker } from "./soak/setup.ts";
import { errorCount, startTraffic } from "./soak/traffic.ts";

const USAGE = `node --import tsx scripts/soak.ts [options]
  --minutes N        traffic duration (default 10)
  --warmup N         minutes excluded from the slope (default min(2, minutes/5))
  --connections N    autocannon connections (default 16)
  --rate N           requests/s over all connections, 0 = unbounded (default 300)
  --swap-every S     seconds between published versions (default 30)
  --docs N --dims N  index size (default 10000 × 256)
  --fresh F          share of never-seen queries (default 0.5); --advice F share of /generate-advice (default 0.5)
  --cache redis|memory   response cache (default redis at --redis, redis://127.0.0.1:6379)
  --no-rebuild       skip the mid-soak rebuild run
  --out FILE --chart FILE   (default bench/results/soak.json, bench/results/soak-rss.svg)`;

const { values: a } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" }, warmup: { type: "string" }, connections: { type: "string", default: "16" },
    rate: { type: "string", default: "300" }, "swap-every": { type: "string", default: "30" }, docs: { type: "string", default: "10000" },
    dims: { type: "string", default: "256" }, fresh: { type: "string", default: "0.5" }, advice: { type: "string", default: "0.5" },
    cache: { type: "string", default: "redis" }, redis: { type: "string", default: "redis://127.0.0.1:6379" }, "no-rebuild": { type: "boolean" },
    out: { type: "string", default: path.join(ROOT, "bench/results/soak.json") }, chart: { type: "string", default: path.join(ROOT, "bench/results/soak-rss.svg") },
    help: { type: "boolean", short: "h" },
  },
});
const o = {
  minutes: Number(a.minutes), connections: Number(a.connections), rate: Number(a.rate), swapEvery: Number(a["swap-every"]),
  docs: Number(a.docs), dims: Number(a.dims), fresh: Number(a.fresh), advice: Number(a.advice), cache: a.cache as string, rebuild: !a["no-rebuild"],
};
const warmupMin = a.warmup !== undefined ? Number(a.warmup) : Math.min(2, o.minutes / 5);
const bad = Object.entries({ ...o, warmupMin }).filter(([, v]) => typeof v === "number" && !(Number.isFinite(v) && v >= 0)).map(([k]) => k);
if (a.help || bad.length || !["redis", "memory"].includes(o.cache) || o.minutes <= 0 || o.connections < 1 || o.swapEvery < 1) {
  if (!a.help) console.error(`soak: bad option(s) ${bad.join(", ") || "--cache/--minutes/--connections/--swap-every"}`);
  console.error(USAGE);
  process.exit(a.help ? 0 : 2);
}

const T0 = performance.now();
const say = (m: string) => console.error(`[soak] ${((performance.now() - T0) / 1000).toFixed(1).padStart(6)} s  ${m}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const logDir = path.join(ROOT, "bench/results/logs");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().once("error", reject).listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function redisReachable(url: string): Promise<boolean> {
  const r = new Redis(url, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on("error", () => {});
  try {
    await r.connect();
    return (await r.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

/** Deletes the soak's cache keys (`apfa:cache:<name>:*`); returns how many there were. */
async function dropRedisKeys(url: string, name: string): Promise<number> {
  const r = new Redis(url, { maxRetriesPerRequest: 1 });
  r.on("error", () => {});
  let n = 0;
  try {
    for await (const keys of r.scanStream({ match: `apfa:cache:${name}:*`, count: 1000 }) as AsyncIterable<string[]>) {
      if (keys.length) n += await r.del(...keys);
    }
  } finally {
    r.disconnect();
  }
  return n;
}

async function waitReady(base: string, child: ReturnType<typeof spawnNode>, log: string): Promise<void> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`[apfa] [soak] apfa serve exited (code ${child.exitCode}) during start-up; see ${log}`);
    const ok = await fetch(`${base}/ready`).then((r) => r.ok, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`[apfa] [soak] apfa serve not ready after 90 s; see ${log}`);
    await sleep(200);
  }
}

async function main(): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-soak-"));
  fs.mkdirSync(logDir, { recursive: true });
  const serverLog = path.join(logDir, "soak-server.log");
  const workerLog = path.join(logDir, "soak-worker.log");
  for (const f of [serverLog, workerLog]) fs.writeFileSync(f, "");
  const notes: string[] = [];
  const redisUrl = o.cache === "redis" && (await redisReachable(a.redis as string)) ? (a.redis as string) : undefined;
  if (o.cache === "redis" && !redisUrl) notes.push(`Redis at ${a.redis} unreachable: the server used its in-process cache`);
  const db = await createSoakDatabase();
  say(`database ${db.name}, project ${dir}, cache ${redisUrl ? "redis" : "memory"}`);
  const secret = crypto.randomBytes(24).toString("hex");
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let project: Awaited<ReturnType<typeof openProject>> | undefined;
  let server: ReturnType<typeof spawnNode> | undefined;
  let traffic: ReturnType<typeof startTraffic> | undefined;
  const onSigint = () => {
    say("SIGINT: stopping the traffic early; the report covers what ran");
    traffic?.stop();
  };
  process.once("SIGINT", onSigint);
  try {
    project = await openProject({ dir, dbUrl: db.url, dims: o.dims, docs: o.docs, port, jwtSecret: secret, redisUrl });
    const make = await versionMaker(project.config, o.docs, o.dims);
    let seq = 0;
    const published: Array<{ t: number; version: string; ms: number }> = [];
    published.push({ t: 0, version: await publish(project.pipeline, await make(seq++)), ms: 0 });
    // One process: the soak reads one pid's RSS and FD count, which a supervisor's would not show.
    server = spawnNode(["bin/apfa.mjs", "serve", "-c", project.yaml, "--port", String(port), "--processes", "1", "--no-sync-build"], { log: serverLog, env: { APFA_LOG_LEVEL: "info", APFA_LOG_FORMAT: "json" } });
    await waitReady(base, server, serverLog);
    const pid = server.pid!;
    say(`apfa serve ready (pid ${pid}, RSS ${num(procMiB(pid), 0)} MiB); traffic for ${o.minutes} min at ${o.rate || "unbounded"} req/s over ${o.connections} connections`);
    const token = await mintToken({ jwt_secret: secret } as AuthConfig, { sub: "soak", ttl_s: 86_400 });
    const durationS = Math.round(o.minutes * 60);
    traffic = startTraffic({ base, token, connections: o.connections, rate: o.rate, durationS, fresh: o.fresh, advice: o.advice });
    const t0 = performance.now();
    const now = () => (performance.now() - t0) / 1000;
    let running = true;
    const trafficDone = traffic.done.then((r) => ((running = false), r));
    /** Sleeps until `atS` seconds into the traffic, or until the traffic ends. */
    const until = (atS: number) => new Promise<void>((resolve) => {
      const t = setTimeout(resolve, Math.max(0, atS * 1000 - now() * 1000));
      void trafficDone.then(() => (clearTimeout(t), resolve()));
    });

    let rebuild: ReturnType<typeof startRebuild> | undefined;
    let rebuildResult: RebuildResult | undefined;
    const samples: Sample[] = [];
    const sampler = (async () => {
      for (let k = 0; running; k++) {
        samples.push(await takeSample(base, pid, now(), traffic!.counters, rebuild?.pid()));
        const s = samples.at(-1)!;
        if (k % 12 === 0) say(`t=${num(s.t, 0)} s  RSS ${num(s.rss_mb, 1)} MiB  heap ${num(s.heap_used_mb, 1)}  external ${num(s.external_mb, 1)}  responses ${s.responses}  errors ${s.errors}  swaps ${s.swaps}`);
        await until((k + 1) * 5);
      }
    })();
    const publisher = (async () => {
      for (let k = 1; running && k * o.swapEvery <= durationS - 10; k++) {
        await until(k * o.swapEvery);
        if (!running) break;
        const t = performance.now();
        const version = await publish(project!.pipeline, await make(seq++));
        published.push({ t: now(), version, ms: performance.now() - t });
      }
    })();
    const rebuildAt = durationS / 2;
    const rebuilder = (async () => {
      if (!o.rebuild) return;
      await until(rebuildAt);
      if (!running) return;
      say("starting the rebuild: apfa worker + createRun");
      rebuild = startRebuild(project!.yaml, project!.config, { dbUrl: db.url, log: workerLog, now, timeoutS: Math.max(120, durationS / 2 + 60), peakMiB: (p) => procMiB(p, "VmHWM") });
      rebuildResult = await rebuild.done;
      say(`rebuild ${rebuildResult.run_id} ${rebuildResult.status} in ${num(rebuildResult.duration_s, 1)} s (${rebuildResult.docs_embedded} docs)`);
    })();
    const ac = await trafficDone;
    await Promise.all([sampler, publisher]);
    await rebuilder.catch((err: Error) => notes.push(`rebuild: ${err.message}`));
    const final = await takeSample(base, pid, now(), traffic.counters);
    const served = ((await (await fetch(`${base}/index`)).json()) as { version?: string }).version;
    const latest = (await readLatest(project.pipeline.store))?.version;
    const hwm = procMiB(pid, "VmHWM");
    await stopChild(server);
    server = undefined;

    const c = traffic.counters;
    const mem = summariseMemory(samples, warmupMin * 60);
    const swapsAtStart = samples[0]?.swaps ?? 0;
    const expected = published.length - 1 + (rebuildResult?.status === "succeeded" ? 1 : 0);
    const applied = final.swaps - swapsAtStart;
    const postMin = (samples.at(-1)!.t - mem.warmup_s) / 60;
    const projected = mem.rss_slope_mb_per_min * postMin;
    const grows = projected > mem.index_mb;
    const serverLines = fs.readFileSync(serverLog, "utf8").split("\n").flatMap((l) => {
      try {
        return l.startsWith("{") ? [JSON.parse(l) as { level: string; msg: string; error?: string }] : [];
      } catch {
        return [];
      }
    });
    const problems = serverLines.filter((l) => l.level === "error" || l.level === "warn");
    const errors = errorCount(c);
    const ok = errors === 0 && applied >= expected && final.swaps_refused === 0 && served === latest &&
      (!o.rebuild || rebuildResult?.status === "succeeded") && !grows;
    const result = {
      suite: "soak", env: { ...envInfo(), load_end: os.loadavg().map((x) => Math.round(x * 100) / 100) }, options: { ...o, warmup_min: warmupMin, cache: redisUrl ? "redis" : "memory" },
      duration_s: ac.duration, ok,
      memory: { ...mem, rss_hwm_mb: hwm, post_warmup_min: postMin, projected_growth_mb: projected, grows },
      traffic: {
        requests: c.responses, rps: c.responses / ac.duration, ok: c.ok, errors, non2xx: c.non2xx, socket_errors: c.socketErrors, timeouts: c.timeouts,
        cached_answers: c.cached, by_route: c.byRoute, versions_seen: c.versions.size,
        p50_ms: percentile(c.latencies, 50), p99_ms: percentile(c.latencies, 99), max_ms: c.latencies.reduce((x, y) => Math.max(x, y), 0),
      },
      swaps: { published: published.length - 1, rebuild_published: rebuildResult?.index_version ? 1 : 0, applied, refused_or_failed: final.swaps_refused, final_version_served: served === latest, publish_ms_median: percentile(published.slice(1).map((p) => p.ms), 50) },
      rebuild: rebuildResult ? { ...rebuildResult, version_served_to_clients: rebuildResult.index_version ? c.versions.has(rebuildResult.index_version) : false } : null,
      server_log: { warn_or_error_lines: problems.length, distinct: [...new Set(problems.map((l) => `${l.level}: ${l.msg}${l.error ? ` (${l.error})` : ""}`))].slice(0, 10) },
      notes, samples,
    };

    printTable(minuteTable(samples));
    printTable({
      title: `Soak summary (${num(ac.duration / 60, 1)} min, ${o.docs / 1000}k × ${o.dims} flat, ${o.connections} connections, ${redisUrl ? "Redis" : "in-process"} cache)`,
      columns: ["figure", "value"],
      rows: [
        ["RSS after warm-up (median of minute " + `${num(warmupMin, 1)}-${num(warmupMin + 1, 1)}), MiB`, num(mem.rss_after_warmup_mb, 1)],
        ["RSS at the end (median of the last minute), MiB", num(mem.rss_end_mb, 1)],
        ["RSS max / high-water mark, MiB", `${num(mem.rss_max_mb, 1)} / ${num(hwm, 1)}`],
        ["RSS slope after warm-up, MiB/min (r²)", `${num(mem.rss_slope_mb_per_min, 2)} (${num(mem.rss_slope_r2, 2)})`],
        ["heap / external slope, MiB/min", `${num(mem.heap_slope_mb_per_min, 2)} / ${num(mem.external_slope_mb_per_min, 2)}`],
        ["projected growth over the post-warm-up period vs one index, MiB", `${num(projected, 1)} vs ${num(mem.index_mb, 1)}`],
        ["requests (req/s)", `${c.responses} (${num(c.responses / ac.duration, 0)})`],
        ["errors (non-2xx, socket, timeouts)", `${errors} (${Object.values(c.non2xx).reduce((x, y) => x + y, 0)}, ${c.socketErrors}, ${c.timeouts})`],
        ["answers from the response cache", c.cached],
        ["latency p50 / p99 / max, ms", `${num(percentile(c.latencies, 50), 1)} / ${num(percentile(c.latencies, 99), 1)} / ${num(result.traffic.max_ms, 0)}`],
        ["swaps applied / expected (refused or failed)", `${applied} / ${expected} (${final.swaps_refused})`],
        ["rebuild run", rebuildResult ? `${rebuildResult.status}, ${num(rebuildResult.duration_s, 1)} s, served: ${result.rebuild?.version_served_to_clients}` : o.rebuild ? "did not finish" : "skipped"],
        ["open fds after warm-up → end", `${mem.fds_start} → ${mem.fds_end}`],
        ["server warn/error log lines", problems.length],
        ["verdict", ok ? "ok" : "FAILED"],
      ],
    });
    for (const n of notes) console.log(`note: ${n}`);
    writeOutputs(a.out as string, a.chart as string, result, rssChart(samples, mem, `apfa serve memory during a ${Math.round(ac.duration / 6) / 10}-minute soak`));
    say(`wrote ${path.relative(ROOT, a.out as string)} and ${path.relative(ROOT, a.chart as string)}`);
    return ok ? 0 : 1;
  } finally {
    process.off("SIGINT", onSigint);
    traffic?.stop();
    if (server) await stopChild(server);
    await project?.close().catch(() => {});
    await db.drop().catch((err: Error) => say(`dropping ${db.name} failed: ${err.message}`));
    if (redisUrl && project) say(`deleted ${await dropRedisKeys(redisUrl, project.name).catch(() => 0)} Redis cache keys`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  return 1;
});
