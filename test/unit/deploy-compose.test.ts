/**
 * docker-compose.yml, Dockerfile and deploy/pipeline.compose.yaml agree with each other and with the repository —
 * everything that can be checked without a Docker engine: depends_on names real services; every env var the
 * compose file gives an apfa container is one apfa reads, and every ${VAR} the pipeline file needs is given;
 * `apfa lint` (loadConfig) passes with exactly that environment; Prometheus targets are compose services on the
 * ports they listen on; Grafana's provisioning and dashboards are mounted where they point; every bind-mounted
 * host path exists. `docker compose config -q` runs when the docker CLI and its compose plugin are installed
 * (it needs no engine) and is skipped, with a message, otherwise.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { loadConfig } from "../../runtime/config/load.ts";
import s3 from "../../plugins/store/s3.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const read = (f: string) => fs.readFileSync(path.join(ROOT, f), "utf8");
const PIPELINE = "deploy/pipeline.compose.yaml";

type Healthcheck = { test?: string[]; disable?: boolean };
type Service = {
  image?: string;
  build?: unknown;
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  volumes?: string[];
  ports?: string[];
  healthcheck?: Healthcheck;
};
type Compose = { services: Record<string, Service>; volumes?: Record<string, unknown> };

/** `.env`-style file → map (what `docker compose --env-file` reads). */
function dotenv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (m) out[m[1]] = m[2].trim();
  }
  return out;
}

/** Compose variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$ → $. Throws on a missing :? var. */
function interpolate(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}/g, (m, name?: string, op?: string, arg?: string) => {
    if (m === "$$") return "$";
    const v = vars[name!];
    if (v !== undefined && v !== "") return v;
    if (op === "-") return arg ?? "";
    if (op === "?") throw new Error(`required variable ${name} is missing: ${arg}`);
    return "";
  });
}

const ENV_EXAMPLE = dotenv(read(".env.example"));
const RAW = read("docker-compose.yml");
const compose = parse(RAW, { merge: true, maxAliasCount: -1 }) as Compose;
/** The parsed values as text (comments may mention ${VAR} too). */
const VALUES = JSON.stringify(compose);
const services = compose.services;
const names = Object.keys(services);
const isApfa = (s: Service) => s.image === "apfa:local" || s.build !== undefined;
const apfaServices = Object.entries(services).filter(([, s]) => isApfa(s));
const argv = (s: Service) => (Array.isArray(s.command) ? s.command : (s.command ?? "").split(/\s+/).filter(Boolean));

/** A service's environment after interpolation with .env.example. */
function envOf(s: Service): Record<string, string> {
  const e = s.environment ?? {};
  const pairs = Array.isArray(e) ? e.map((x) => x.split(/=(.*)/s).slice(0, 2) as [string, string]) : Object.entries(e).map(([k, v]) => [k, String(v ?? "")] as [string, string]);
  return Object.fromEntries(pairs.map(([k, v]) => [k, interpolate(v, ENV_EXAMPLE)]));
}

/** Bind mounts (short syntax) as {source relative to the repo, target, ro}. */
function binds(s: Service): Array<{ source: string; target: string }> {
  return (s.volumes ?? []).filter((v) => v.startsWith("./") || v.startsWith("../")).map((v) => {
    const [source, target] = v.split(":");
    return { source: path.normalize(source), target };
  });
}

/** Env var names apfa's own code reads: process.env.X, ctx.env.X / env.X, env["X"] in runtime/, server/, plugins/. */
function namesReadBySource(): Set<string> {
  const out = new Set<string>();
  const walk = (dir: string) => {
    for (const d of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = path.join(dir, d.name);
      if (d.isDirectory()) walk(rel);
      else if (d.name.endsWith(".ts") && !d.name.endsWith(".test.ts")) {
        for (const m of read(rel).matchAll(/\benv(?:\.([A-Z][A-Z0-9_]*)|\[["']([A-Z][A-Z0-9_]*)["']\])/g)) out.add(m[1] ?? m[2]);
      }
    }
  };
  for (const d of ["runtime", "server", "plugins"]) walk(d);
  return out;
}

// From the parsed values (comments may mention ${VAR} too).
const pipelineVars = [...new Set([...JSON.stringify(parse(read(PIPELINE))).matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}/g)].map((m) => m[1]))];

describe("docker-compose.yml structure", () => {
  it("has the services of the deployment", () => {
    for (const s of ["postgres", "redis", "minio", "minio-init", "worker-1", "worker-2", "server", "prometheus", "grafana"]) expect(names).toContain(s);
    expect(services.postgres.image).toMatch(/^postgres:16\b/);
    expect(services.postgres.healthcheck?.test?.join(" ")).toMatch(/pg_isready/);
    expect(argv(services.redis)).toEqual(expect.arrayContaining(["--appendonly", "yes"]));
    expect(services["minio-init"].image).toMatch(/^minio\/mc\b/);
    expect(argv(services.server)).toEqual(["serve"]);
    for (const w of ["worker-1", "worker-2"]) expect(argv(services[w])).toEqual(["worker", "--metrics-port", "0.0.0.0:9464"]);
  });

  it("every depends_on names a service, and completion is only awaited on one-shots", () => {
    for (const [name, s] of Object.entries(services)) {
      const deps = Array.isArray(s.depends_on) ? Object.fromEntries(s.depends_on.map((d) => [d, {}])) : (s.depends_on ?? {});
      for (const [dep, cond] of Object.entries(deps)) {
        expect(names, `${name} depends on ${dep}`).toContain(dep);
        expect(dep, `${name} depends on itself`).not.toBe(name);
        if ((cond as { condition?: string }).condition === "service_healthy") expect(services[dep].healthcheck?.test, `${dep} has a healthcheck`).toBeDefined();
        if ((cond as { condition?: string }).condition === "service_completed_successfully") expect((services[dep] as { restart?: string }).restart).toBe("no");
      }
    }
    const serverDeps = Object.keys(services.server.depends_on ?? {});
    for (const s of ["postgres", "redis", "minio-init", "worker-1", "worker-2"]) expect(serverDeps).toContain(s);
  });

  it("named volumes are declared; no secret is written into the file", () => {
    for (const s of Object.values(services)) {
      for (const v of s.volumes ?? []) if (!/^\.\.?\//.test(v)) expect(Object.keys(compose.volumes ?? {})).toContain(v.split(":")[0]);
    }
    // Every credential-looking value comes from a ${VAR:?…} reference, not a literal.
    for (const [name, s] of Object.entries(services)) {
      for (const [k, v] of Object.entries(s.environment ?? {})) {
        if (/PASSWORD|SECRET|ACCESS_KEY/.test(k)) expect(String(v), `${name}.${k}`).toMatch(/^\$\{[A-Z_]+:\?[^}]+\}$/);
      }
    }
    expect(RAW).not.toMatch(/change-me/);
  });

  it("interpolates with .env.example (every required ${VAR:?} has a placeholder there)", () => {
    const required = [...VALUES.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*):\?/g)].map((m) => m[1]);
    for (const v of required) expect(ENV_EXAMPLE, `.env.example sets ${v}`).toHaveProperty(v);
    expect(required.length).toBeGreaterThan(0);
    expect(() => interpolate(VALUES, ENV_EXAMPLE)).not.toThrow();
    expect(() => interpolate(VALUES, {})).toThrow(/required variable/);
  });
});

describe("apfa containers and deploy/pipeline.compose.yaml", () => {
  const readBySource = namesReadBySource();

  it("apfa reads APFA_CONFIG, DATABASE_URL and REDIS_URL (the scan of the sources finds them)", () => {
    for (const n of ["APFA_CONFIG", "DATABASE_URL", "REDIS_URL"]) expect(readBySource).toContain(n);
  });

  it.each(apfaServices.map(([n]) => n))("%s: every env var it sets is one apfa reads, and it sets every ${VAR} of the pipeline", async (name) => {
    const env = envOf(services[name]);
    const { config } = await loadConfig(path.join(ROOT, PIPELINE), { env, checkPlugins: false });
    const s3opts = s3.options.parse(config!.store.options);
    const reads = new Set([...readBySource, ...pipelineVars, s3opts.access_key_env, s3opts.secret_key_env]);
    for (const k of Object.keys(env)) expect(reads, `${name} sets ${k}, which apfa never reads`).toContain(k);
    for (const v of pipelineVars) expect(env[v], `${name} must set ${v} (used by ${PIPELINE})`).toBeTruthy();
    expect(env[s3opts.access_key_env]).toBeTruthy();
    expect(env[s3opts.secret_key_env]).toBeTruthy();
    expect(env.APFA_CONFIG).toBe(PIPELINE);
  });

  it("`apfa lint deploy/pipeline.compose.yaml` passes with the compose environment (plugins included)", async () => {
    const env = envOf(services.server);
    const r = await loadConfig(path.join(ROOT, PIPELINE), { env });
    expect(r.problems).toEqual([]);
    const c = r.config!;
    expect(c.store.plugin).toBe("s3");
    expect(c.stages.notifier.plugin).toBe("redis");
    expect(c.stages.notifier.options.url).toBe(env.REDIS_URL);
    expect(c.server.cache.redis_url).toBe(env.REDIS_URL);
    expect(c.server.host).toBe("0.0.0.0");
    expect(c.server.auth.jwt_secret).toBe(env.APFA_JWT_SECRET);
    expect(Buffer.byteLength(env.APFA_JWT_SECRET)).toBeGreaterThanOrEqual(32); // server/auth.ts refuses shorter
    expect(c.database.url).toBe(env.DATABASE_URL);
    // Without the environment it fails loudly instead of falling back to the embedded default.
    const bare = await loadConfig(path.join(ROOT, PIPELINE), { env: {}, checkPlugins: false });
    expect(bare.problems.map((p) => p.kind)).toEqual(expect.arrayContaining(["env"]));
    expect(new Set(bare.problems.map((p) => p.message.match(/variable (\w+)/)?.[1]))).toEqual(new Set(pipelineVars));
  });

  it("the URLs point at compose services, with matching credentials and ports", async () => {
    const env = envOf(services.server);
    const { config } = await loadConfig(path.join(ROOT, PIPELINE), { env, checkPlugins: false });
    const db = new URL(env.DATABASE_URL);
    const pg = envOf(services.postgres);
    expect(db.hostname).toBe("postgres");
    expect([db.username, decodeURIComponent(db.password), db.pathname.slice(1)]).toEqual([pg.POSTGRES_USER, pg.POSTGRES_PASSWORD, pg.POSTGRES_DB]);
    expect(new URL(env.REDIS_URL).hostname).toBe("redis");
    const endpoint = new URL(String(config!.store.options.endpoint));
    expect(endpoint.hostname).toBe("minio");
    expect(endpoint.port).toBe("9000");
    const minio = envOf(services.minio);
    expect([env.AWS_ACCESS_KEY_ID, env.AWS_SECRET_ACCESS_KEY]).toEqual([minio.MINIO_ROOT_USER, minio.MINIO_ROOT_PASSWORD]);
    // minio-init creates the bucket the store uses.
    expect(argv(services["minio-init"]).join(" ")).toContain(`/${config!.store.options.bucket}`);
    // The server publishes the port it listens on.
    expect(services.server.ports).toContain(`${config!.server.port}:${config!.server.port}`);
  });

  it("the Dockerfile builds the image these services run", () => {
    const df = read("Dockerfile");
    expect(df).toMatch(/^FROM node:20-bookworm-slim$/m);
    expect(df).toMatch(/RUN npm ci\b/);
    // The image runs the compiled dist/, built in a stage of its own that has the dev dependencies (tsc).
    expect(df).toMatch(/^FROM node:20-bookworm-slim AS build$/m);
    expect(df).toMatch(/^RUN npm run build$/m);
    expect(df).toContain("COPY --from=build /app/dist ./dist");
    expect(df).toMatch(/^USER (?!root)\w+/m);
    expect(df).toContain('ENTRYPOINT ["node", "bin/apfa.mjs"]');
    expect(df).toContain('CMD ["serve"]');
    expect(df).toMatch(/HEALTHCHECK[\s\S]*\/health/);
    for (const m of df.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const src of m[1].split(/\s+/)) expect(fs.existsSync(path.join(ROOT, src)), `COPY ${src}`).toBe(true);
    }
    const ignored = read(".dockerignore").split("\n").map((l) => l.trim());
    for (const p of ["node_modules", ".apfa", "bench/results", "test-artifacts", ".git"]) expect(ignored).toContain(p);
    // The image generates the corpus the compose pipeline reads.
    expect(df).toContain("examples/corpus.ts examples/data/corpus.jsonl");
    expect(read(PIPELINE)).toContain("path: ../examples/data/corpus.jsonl");
  });
});

describe("monitoring in compose", () => {
  const mountOf = (service: string, target: string) => binds(services[service]).find((b) => b.target === target)?.source;

  it("every bind-mounted host path exists in the repository", () => {
    for (const [name, s] of Object.entries(services)) {
      for (const b of binds(s)) expect(fs.existsSync(path.join(ROOT, b.source)), `${name}: ${b.source}`).toBe(true);
    }
  });

  it("Prometheus scrapes compose services on the ports they listen on, with the job names alerts and dashboards use", () => {
    const file = mountOf("prometheus", "/etc/prometheus/prometheus.yml");
    expect(file).toBeDefined();
    const prom = parse(read(file!)) as { rule_files?: string[]; scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }> };
    for (const rf of prom.rule_files ?? []) expect(mountOf("prometheus", path.posix.join("/etc/prometheus", rf)), `rule file ${rf} mounted`).toBeDefined();
    const jobs = Object.fromEntries(prom.scrape_configs.map((j) => [j.job_name, j.static_configs.flatMap((c) => c.targets)]));
    expect(Object.keys(jobs).sort()).toEqual(["apfa-server", "apfa-worker"]);
    for (const [job, targets] of Object.entries(jobs)) {
      expect(targets.length).toBeGreaterThan(0);
      for (const t of targets) {
        const [host, port] = t.split(":");
        expect(names, `${job} target ${t}`).toContain(host);
        const a = argv(services[host]);
        if (job === "apfa-worker") {
          expect(a[0]).toBe("worker");
          expect(a[a.indexOf("--metrics-port") + 1]).toBe(`0.0.0.0:${port}`);
        } else {
          expect(a[0]).toBe("serve");
          expect(port).toBe("8080");
        }
      }
    }
    // Every apfa worker and server in compose is scraped.
    const scraped = Object.values(jobs).flat().map((t) => t.split(":")[0]);
    for (const [n, s] of apfaServices) if (["worker", "serve"].includes(argv(s)[0])) expect(scraped).toContain(n);
    // Worker healthchecks probe the metrics port they were given.
    for (const [n, s] of apfaServices) if (argv(s)[0] === "worker") expect(s.healthcheck?.test?.join(" "), n).toContain(":9464/health");
  });

  it("Grafana mounts its provisioning where Grafana reads it and the dashboards where the provider points", () => {
    const ds = mountOf("grafana", "/etc/grafana/provisioning/datasources/apfa-prometheus.yml");
    const dash = mountOf("grafana", "/etc/grafana/provisioning/dashboards/apfa.yml");
    expect(ds).toBe(path.normalize("monitoring/grafana/provisioning/datasources/apfa-prometheus.yml"));
    expect(dash).toBe(path.normalize("monitoring/grafana/provisioning/dashboards/apfa.yml"));
    const provider = (parse(read(dash!)) as { providers: Array<{ options: { path: string } }> }).providers[0];
    const dir = mountOf("grafana", provider.options.path);
    expect(dir, `dashboards mounted at ${provider.options.path}`).toBeDefined();
    const jsons = fs.readdirSync(path.join(ROOT, dir!)).filter((f) => f.endsWith(".json"));
    expect(jsons.sort()).toEqual(["apfa-performance.json", "apfa-workers.json"]);
    const url = new URL((parse(read(ds!)) as { datasources: Array<{ url: string }> }).datasources[0].url);
    expect(names).toContain(url.hostname);
    expect(url.port).toBe("9090");
  });

  const PROMTOOL = spawnSync("promtool", ["--version"], { encoding: "utf8" }).status === 0;
  it.skipIf(!PROMTOOL)("promtool check config on the Prometheus file compose mounts", () => {
    const file = mountOf("prometheus", "/etc/prometheus/prometheus.yml")!;
    const r = spawnSync("promtool", ["check", "config", path.basename(file)], { cwd: path.join(ROOT, path.dirname(file)), encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });
});

const COMPOSE = spawnSync("docker", ["compose", "version"], { encoding: "utf8" }).status === 0;
if (!COMPOSE) console.warn("deploy-compose: `docker compose` (docker CLI + compose plugin) not found; `docker compose config` SKIPPED");
describe.skipIf(!COMPOSE)("docker compose config (no engine needed)", () => {
  it("docker compose -f docker-compose.yml --env-file .env.example config -q", () => {
    const r = spawnSync("docker", ["compose", "-f", "docker-compose.yml", "--env-file", ".env.example", "config", "-q"], { cwd: ROOT, encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });
});
