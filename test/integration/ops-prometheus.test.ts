/**
 * A real Prometheus (the Debian `prometheus` binary) loads monitoring/prometheus.yml — only its targets point at
 * a live `apfa serve` and a live `apfa worker` metrics endpoint, and it scrapes every second — and after a
 * little traffic (two runs, a swap, searches, advice, index stats) it has a series for every metric each
 * dashboard panel queries, every panel query evaluates, and every alert rule evaluates without error.
 * Skipped, with a message, where no `prometheus` binary is installed.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { addJob } from "../../runtime/runs.ts";
import { startServer, type RunningServer } from "../../server/serve.ts";
import { silentLogger } from "../../runtime/log.ts";
import { dashboardExprs, promqlMetricNames } from "../unit/monitoring-promql.ts";
import { jobFinished, openOpsEnv, until, type OpsEnv } from "./ops-support.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const HAS_PROMETHEUS = spawnSync("prometheus", ["--version"], { encoding: "utf8" }).status === 0;
if (!HAS_PROMETHEUS) console.warn("ops-prometheus: no `prometheus` binary; real-Prometheus test SKIPPED (apt-get install prometheus)");

const DASHBOARDS = ["monitoring/grafana/apfa-performance.json", "monitoring/grafana/apfa-workers.json"];

let env: OpsEnv;
let server: RunningServer;
let prom: ChildProcess | undefined;
let promUrl = "";
let tmp = "";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function query(q: string): Promise<{ status: string; error?: string; data?: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } }> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
  return (await res.json()) as never;
}

async function post(url: string, body: unknown): Promise<number> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  await res.text();
  return res.status;
}

describe.skipIf(!HAS_PROMETHEUS)("a real Prometheus scraping apfa", () => {
  beforeAll(async () => {
    env = await openOpsEnv({ docs: 30 });
    const worker = await env.startWorker({ metricsPort: 0 });
    expect((await env.runToEnd()).status).toBe("succeeded");
    server = await startServer(env.config, silentLogger, { port: 0, syncBuild: false });
    const base = server.url.replace(/\/$/, "");

    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-prom-"));
    const cfg = parse(fs.readFileSync(path.join(ROOT, "monitoring/prometheus.yml"), "utf8")) as {
      global: Record<string, unknown>; rule_files: string[]; alerting?: unknown;
      scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }>; scrape_interval?: string }>;
    };
    cfg.global.scrape_interval = "1s";
    cfg.global.evaluation_interval = "1s";
    cfg.rule_files = cfg.rule_files.map((f) => path.join(ROOT, "monitoring", f));
    delete cfg.alerting;
    const targets: Record<string, string> = { "apfa-server": new URL(base).host, "apfa-worker": new URL(worker.metricsUrl!).host };
    for (const s of cfg.scrape_configs) s.static_configs = [{ targets: [targets[s.job_name]] }];
    fs.writeFileSync(path.join(tmp, "prometheus.yml"), stringify(cfg));
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prom = spawn("prometheus", [
      `--config.file=${path.join(tmp, "prometheus.yml")}`, `--storage.tsdb.path=${path.join(tmp, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn",
    ], { stdio: "ignore" });

    // Traffic that makes every labelled series exist: searches (a miss, then a hit), advice, a swap, stats.
    expect(await post(`${base}/search`, { query: "budget advice", k: 3 })).toBe(200);
    expect(await post(`${base}/search`, { query: "budget advice", k: 3 })).toBe(200);
    expect(await post(`${base}/generate-advice`, { query: "how do I budget?", k: 3 })).toBe(200);
    await env.writeCorpus(32, "second");
    const second = await env.runToEnd();
    await until("the server to swap to the second version", async () => {
      const r = await fetch(`${base}/index`);
      return ((await r.json()) as { version?: string }).version === second.index_version;
    }, 30_000);
    expect(await post(`${base}/search`, { query: "budget advice two", k: 3 })).toBe(200);
    const stats = await addJob(env.db.pool, env.config, "compute_index_stats", { servers: [base] });
    await jobFinished(env, stats);

    await until("Prometheus to scrape both targets", async () => {
      const r = await query('up{job=~"apfa-server|apfa-worker"}').catch(() => undefined);
      return r?.data?.result.length === 2 && r.data.result.every((x) => x.value[1] === "1");
    }, 60_000);
    // A few scrapes of both targets after the traffic, for rate() and increase(): their sample times, not a sleep.
    const trafficDone = Date.now() / 1000;
    await until("three scrapes of both targets after the traffic", async () => {
      const r = await query('min(timestamp(up{job=~"apfa-server|apfa-worker"}))').catch(() => undefined);
      return Number(r?.data?.result[0]?.value[1] ?? 0) > trafficDone + 3;
    }, 60_000);
  }, 180_000);

  afterAll(async () => {
    prom?.kill("SIGTERM");
    await server?.stop().catch(() => {});
    await env?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  for (const file of DASHBOARDS) {
    it(`has series for every metric ${path.basename(file)} queries, and every panel query evaluates`, async () => {
      const exprs = dashboardExprs(ROOT, file);
      const names = [...new Set(exprs.flatMap(promqlMetricNames))].sort();
      const missing: string[] = [];
      for (const n of names) {
        const r = await query(`count(${n})`);
        if (!r.data?.result.length) missing.push(n);
      }
      expect(missing, "dashboard metrics with no series in Prometheus").toEqual([]);
      const broken: string[] = [];
      for (const e of exprs) {
        const r = await query(e.replaceAll("$__rate_interval", "1m"));
        if (r.status !== "success") broken.push(`${e}: ${r.error}`);
      }
      expect(broken).toEqual([]);
    });
  }

  it("loads every alert rule and evaluates it without error", async () => {
    await until("the rules to be evaluated", async () => {
      const r = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> } };
      const rules = r.data.groups.flatMap((g) => g.rules);
      const alerts = (parse(fs.readFileSync(path.join(ROOT, "monitoring/alerts.yml"), "utf8")) as { groups: Array<{ rules: unknown[] }> }).groups.flatMap((g) => g.rules);
      if (rules.length !== alerts.length || rules.some((x) => x.health === "unknown")) return undefined;
      expect(rules.filter((x) => x.health !== "ok").map((x) => `${x.name}: ${x.lastError}`)).toEqual([]);
      return true;
    }, 30_000);
  });

  it("sees the run's work and the swap in the scraped values", async () => {
    const docs = await query("sum(apfa_embedding_documents_total)");
    expect(Number(docs.data!.result[0].value[1])).toBe(62);
    const swaps = await query('sum(apfa_swap_total{outcome="success"})');
    expect(Number(swaps.data!.result[0].value[1])).toBeGreaterThanOrEqual(1);
    const hits = await query("sum(apfa_cache_hits_total)");
    expect(Number(hits.data!.result[0].value[1])).toBeGreaterThanOrEqual(1);
    const online = await query("max(apfa_workers_online)");
    expect(online.data!.result[0].value[1]).toBe("1");
  });
});
