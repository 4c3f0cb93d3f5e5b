/**
 * monitoring/ is valid for the tools that load it: `promtool check config` and `check rules`, the alert unit
 * tests in alerts.test.yml (`promtool test rules`), Alertmanager routing that names only defined receivers,
 * and Grafana dashboards/provisioning that agree on the datasource. promtool tests are skipped, with a
 * message, only where promtool is not installed (`apt-get install prometheus`).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MON = path.join(ROOT, "monitoring");
const has = (bin: string) => spawnSync(bin, ["--version"], { encoding: "utf8" }).status === 0;
const PROMTOOL = has("promtool");
if (!PROMTOOL) console.warn("monitoring-config: promtool not found; promtool checks SKIPPED (install with `apt-get install prometheus`)");

const promtool = (...args: string[]) => spawnSync("promtool", args, { cwd: MON, encoding: "utf8" });
const yaml = <T>(f: string) => parse(fs.readFileSync(path.join(MON, f), "utf8")) as T;

describe.skipIf(!PROMTOOL)("promtool", () => {
  it("check rules monitoring/alerts.yml", () => {
    const r = promtool("check", "rules", "alerts.yml");
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it("check config monitoring/prometheus.yml (and the rule files it loads)", () => {
    const r = promtool("check", "config", "prometheus.yml");
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it("test rules monitoring/alerts.test.yml: every alert fires on its bad series", () => {
    const r = promtool("test", "rules", "alerts.test.yml");
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const tested = new Set([...fs.readFileSync(path.join(MON, "alerts.test.yml"), "utf8").matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    const alerts = yaml<{ groups: Array<{ rules: Array<{ alert: string }> }> }>("alerts.yml").groups.flatMap((g) => g.rules.map((x) => x.alert));
    expect(alerts.filter((a) => !tested.has(a)), "alerts without a promtool unit test").toEqual([]);
  });

  it("rejects a broken rule file (the check is real)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-promtool-"));
    try {
      const bad = fs.readFileSync(path.join(MON, "alerts.yml"), "utf8").replace("max(apfa_workers_online) < 1", "max(apfa_workers_online < 1");
      fs.writeFileSync(path.join(dir, "alerts.yml"), bad);
      expect(spawnSync("promtool", ["check", "rules", path.join(dir, "alerts.yml")], { encoding: "utf8" }).status).not.toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("prometheus.yml", () => {
  it("scrapes the server and worker jobs the alerts select on, and loads alerts.yml", () => {
    const c = yaml<{ rule_files: string[]; scrape_configs: Array<{ job_name: string; metrics_path?: string }> }>("prometheus.yml");
    expect(c.rule_files).toContain("alerts.yml");
    expect(c.scrape_configs.map((s) => s.job_name).sort()).toEqual(["apfa-server", "apfa-worker"]);
    for (const s of c.scrape_configs) expect(s.metrics_path ?? "/metrics").toBe("/metrics");
  });
});

describe("alertmanager.yml", () => {
  it("routes only to receivers it defines, and inhibits only alerts that exist", () => {
    type Route = { receiver?: string; routes?: Route[] };
    const c = yaml<{ route: Route; receivers: Array<{ name: string }>; inhibit_rules: Array<{ source_matchers: string[]; target_matchers: string[] }> }>("alertmanager.yml");
    const names = new Set(c.receivers.map((r) => r.name));
    const used: string[] = [];
    const walk = (r: Route) => {
      if (r.receiver) used.push(r.receiver);
      r.routes?.forEach(walk);
    };
    walk(c.route);
    expect(used.length).toBeGreaterThan(1);
    expect(used.filter((u) => !names.has(u))).toEqual([]);
    const alerts = new Set(yaml<{ groups: Array<{ rules: Array<{ alert: string }> }> }>("alerts.yml").groups.flatMap((g) => g.rules.map((x) => x.alert)));
    const mentioned = c.inhibit_rules.flatMap((r) => [...r.source_matchers, ...r.target_matchers]).flatMap((m) => [...m.matchAll(/Apfa\w+/g)].map((x) => x[0]));
    expect(mentioned.length).toBeGreaterThan(0);
    expect(mentioned.filter((a) => !alerts.has(a))).toEqual([]);
    if (has("amtool")) {
      const r = spawnSync("amtool", ["check-config", path.join(MON, "alertmanager.yml")], { encoding: "utf8" });
      expect(r.status, r.stdout + r.stderr).toBe(0);
    }
  });
});

describe("grafana", () => {
  const ds = yaml<{ datasources: Array<{ uid: string; type: string }> }>("grafana/provisioning/datasources/apfa-prometheus.yml").datasources[0];
  for (const file of ["apfa-performance.json", "apfa-workers.json"]) {
    it(`${file}: unique panel ids, every query on the provisioned Prometheus datasource`, () => {
      const d = JSON.parse(fs.readFileSync(path.join(MON, "grafana", file), "utf8")) as {
        uid: string; title: string; panels: Array<{ id: number; type: string; datasource?: { uid: string }; targets?: Array<{ refId: string; expr: string; datasource?: { uid: string } }> }>;
      };
      expect(d.uid).toBe(file.replace(/\.json$/, ""));
      const ids = d.panels.map((p) => p.id);
      expect(new Set(ids).size).toBe(ids.length);
      const queries = d.panels.filter((p) => p.type !== "row");
      expect(queries.length).toBeGreaterThan(8);
      for (const p of queries) {
        expect(p.datasource?.uid, `panel ${p.id}`).toBe(ds.uid);
        expect(p.targets?.length, `panel ${p.id} has no query`).toBeGreaterThan(0);
        for (const t of p.targets!) {
          expect(t.expr.trim()).not.toBe("");
          expect(t.datasource?.uid).toBe(ds.uid);
        }
      }
    });
  }
  it("the dashboard provider is a file provider", () => {
    const p = yaml<{ providers: Array<{ type: string; options: { path: string } }> }>("grafana/provisioning/dashboards/apfa.yml").providers[0];
    expect(p.type).toBe("file");
    expect(p.options.path).toMatch(/^\//);
    expect(ds.type).toBe("prometheus");
  });
});
