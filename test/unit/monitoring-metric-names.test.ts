/**
 * Every metric the alerts and dashboards query is one the code registers (server/metrics.ts and
 * runtime/worker-metrics.ts, read from their prom-client registries, not from a hand list), and docs/metrics.md
 * documents exactly the registered metrics. A renamed metric fails here before it silently blanks a panel.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { createWorkerMetrics } from "../../runtime/worker-metrics.ts";
import { createServerMetrics } from "../../server/metrics.ts";
import { dashboardExprs, promqlMetricNames } from "./monitoring-promql.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const read = (f: string) => fs.readFileSync(path.join(ROOT, f), "utf8");

/** Series Prometheus itself attaches to every target; no code registers them. */
const PROMETHEUS_OWN = new Set(["up"]);
/** Series names a registry exposes: histograms as _bucket/_sum/_count, summaries as name/_sum/_count. */
function exposed(registry: Registry): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of registry.getMetricsAsArray() as unknown as Array<{ name: string; type: string }>) {
    if (m.type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) out.set(m.name + s, m.type);
    else if (m.type === "summary") for (const s of ["", "_sum", "_count"]) out.set(m.name + s, m.type);
    else out.set(m.name, m.type);
  }
  return out;
}

const alertExprs = () =>
  (parse(read("monitoring/alerts.yml")) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> }).groups.flatMap((g) => g.rules);

const server = exposed(createServerMetrics().registry);
const worker = exposed(createWorkerMetrics().registry);
const registered = new Set([...server.keys(), ...worker.keys()]);

describe("promqlMetricNames", () => {
  it("finds metrics and ignores functions, labels, strings, ranges, offsets and numbers", () => {
    expect(promqlMetricNames(
      `histogram_quantile(0.95, sum by (le, route) (rate(apfa_x_bucket{route=~"a|b", le!="apfa_fake"}[$__rate_interval]))) > 1e3`,
    )).toEqual(["apfa_x_bucket"]);
    expect(promqlMetricNames(`sum(a_total) > sum(a_total offset 30m) or (b unless on () c) and time() - max(d) > 6 * 3600`))
      .toEqual(["a_total", "b", "c", "d"]);
    expect(promqlMetricNames(`max(apfa_workers_online) < 1 or absent(apfa_workers_online)`)).toEqual(["apfa_workers_online"]);
  });
});

describe("monitoring queries use only registered metrics", () => {
  it("the registries hold the metrics the brief asks for", () => {
    for (const n of ["apfa_embedding_batches_total", "apfa_embedding_documents_total", "apfa_task_execution_seconds_bucket", "apfa_queue_depth", "apfa_workers_online"]) {
      expect(worker.has(n), n).toBe(true);
    }
    for (const n of ["apfa_requests_total", "apfa_response_time_seconds_bucket", "apfa_cache_hits_total", "apfa_swap_total"]) expect(server.has(n), n).toBe(true);
  });

  const sources: Array<[string, () => string[]]> = [
    ["monitoring/alerts.yml", () => alertExprs().map((r) => r.expr)],
    ["monitoring/grafana/apfa-performance.json", () => dashboardExprs(ROOT, "monitoring/grafana/apfa-performance.json")],
    ["monitoring/grafana/apfa-workers.json", () => dashboardExprs(ROOT, "monitoring/grafana/apfa-workers.json")],
  ];
  for (const [file, exprs] of sources) {
    it(`${file}: every metric name is registered by server/metrics.ts or runtime/worker-metrics.ts`, () => {
      const list = exprs();
      expect(list.length).toBeGreaterThan(5);
      const unknown = list.flatMap((e) => promqlMetricNames(e).filter((n) => !registered.has(n) && !PROMETHEUS_OWN.has(n)).map((n) => `${n} in: ${e.trim()}`));
      expect(unknown, "unregistered metric names").toEqual([]);
    });
  }

  it("the dashboards between them chart every worker metric the brief names", () => {
    const used = new Set([...dashboardExprs(ROOT, "monitoring/grafana/apfa-performance.json"), ...dashboardExprs(ROOT, "monitoring/grafana/apfa-workers.json")].flatMap(promqlMetricNames));
    for (const n of ["apfa_embedding_batches_total", "apfa_embedding_documents_total", "apfa_task_execution_seconds_bucket", "apfa_queue_depth", "apfa_workers_online", "apfa_index_stats_migration_urgency"]) {
      expect(used.has(n), n).toBe(true);
    }
  });
});

describe("docs/metrics.md", () => {
  const doc = read("docs/metrics.md");
  const base = (n: string) => n.replace(/_(bucket|sum|count)$/, "");
  const own = new Set([...registered].filter((n) => !n.startsWith("apfa_process_")).map((n) => (server.get(n) ?? worker.get(n)) === "histogram" ? base(n) : n));

  it("documents every registered metric (default process metrics as the apfa_process_ family)", () => {
    const missing = [...own].filter((n) => !doc.includes(`\`${n}\``));
    expect(missing).toEqual([]);
    expect(doc).toContain("`apfa_process_");
  });

  it("documents no metric that is not registered", () => {
    const named = new Set([...doc.matchAll(/`(apfa_[a-z0-9_]+)`/g)].map((m) => m[1]).filter((n) => !n.startsWith("apfa_process_")));
    const extra = [...named].filter((n) => !own.has(n) && !registered.has(n));
    expect(extra).toEqual([]);
  });
});

describe("alerts link to their runbook entry", () => {
  it("every alert has a runbook anchor that exists in docs/operations.md", () => {
    const ops = read("docs/operations.md");
    const anchors = new Set([...ops.matchAll(/^#{2,4}\s+(.+)$/gm)].map((m) => m[1].trim().toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-")));
    const rules = (parse(read("monitoring/alerts.yml")) as { groups: Array<{ rules: Array<{ alert: string; annotations: { runbook?: string } }> }> }).groups.flatMap((g) => g.rules);
    for (const r of rules) {
      expect(r.annotations.runbook, r.alert).toBe(`docs/operations.md#${r.alert.toLowerCase()}`);
      expect(anchors.has(r.alert.toLowerCase()), `docs/operations.md has no "### ${r.alert}" section`).toBe(true);
    }
  });
});
