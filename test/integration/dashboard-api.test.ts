/**
 * The operations API (`/api/*`, server/api.ts) against a live system: a fresh Postgres database, a worker that
 * has run two real embedding runs with the hash test embedder (so two index versions), and `apfa serve` in
 * process with a JWT secret configured. A second server with `auth.mode: none` covers the open, localhost-only
 * access of the embedded default.
 * @module
 */
import * as http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunRow } from "../../runtime/runs.ts";
import { readLatest } from "../../runtime/versions.ts";
import { opsAccess } from "../../server/api.ts";
import { openOpsSystem, until, type OpsServer, type OpsSystem } from "../fixtures/ops-system.ts";

let sys: OpsSystem;
let server: OpsServer;
let token: string;
let first: RunRow;
let second: RunRow;

beforeAll(async () => {
  sys = await openOpsSystem({ docs: 50 });
  await sys.startWorker();
  first = await sys.runToEnd();
  await sys.writeCorpus(60, "second");
  second = await sys.runToEnd();
  expect([first.status, second.status]).toEqual(["succeeded", "succeeded"]);
  server = await sys.serve();
  token = await sys.token();
});
afterAll(() => sys?.close());

type Json = Record<string, any>;
async function call(path: string, init: { method?: string; body?: unknown; token?: string | null; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Json; headers: Headers }> {
  const headers: Record<string, string> = { ...init.headers };
  const t = init.token === undefined ? token : init.token;
  if (t) headers.authorization = `Bearer ${t}`;
  if (init.body !== undefined && !headers["content-type"]) headers["content-type"] = "application/json";
  const res = await fetch(server.base + path, {
    method: init.method ?? (init.body !== undefined ? "POST" : "GET"),
    headers,
    body: init.body === undefined ? undefined : typeof init.body === "string" ? init.body : JSON.stringify(init.body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : {}, headers: res.headers };
}

describe("access", () => {
  it("logs at start-up that the API needs a JWT", () => {
    expect(server.logs.some((l) => String(l.msg).includes("require a JWT"))).toBe(true);
    expect(opsAccess(sys.config, (() => {}) as never)).toEqual({ mode: "jwt" });
  });

  it("refuses /api without a token or with a bad one, as JSON 401", async () => {
    const none = await call("/api/workers", { token: null });
    expect(none.status).toBe(401);
    expect(none.body).toEqual({ error: "unauthorized", message: "missing_token" });
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer /);
    expect((await call("/api/runs", { token: `${token.slice(0, -4)}AAAA` })).status).toBe(401);
    expect((await call("/api/runs", { method: "POST", body: {}, token: null })).status).toBe(401);
  });

  it("accepts the token as a Bearer header or as ?token=", async () => {
    expect((await call("/api/workers")).status).toBe(200);
    const q = await call(`/api/workers?token=${encodeURIComponent(token)}`, { token: null });
    expect(q.status).toBe(200);
    expect(q.body.workers.length).toBeGreaterThan(0);
  });

  it("serves the dashboard shell (no data in it) with a strict CSP", async () => {
    const res = await fetch(`${server.base}/dashboard`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/html");
    expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    const html = await res.text();
    expect(html).toContain('<script src="/dashboard/app.js"');
    const js = await fetch(`${server.base}/dashboard/app.js`);
    expect(js.headers.get("content-type")).toContain("text/javascript");
    expect(await js.text()).toContain("sessionStorage");
  });
});

describe("read endpoints", () => {
  it("GET /api/workers: the worker is online with a fresh heartbeat and shows the job it holds", async () => {
    const w0 = (await call("/api/workers")).body;
    const me = w0.workers.find((w: Json) => w.id === sys.worker!.id);
    expect(me).toMatchObject({ online: true, status: "online", pipeline: "dash", queues: { embedding: 4, indexing: 1, maintenance: 1 }, running: [] });
    expect(typeof me.heartbeat_age_s).toBe("number"); // fresh enough is `online: true`, judged by the server

    const job = await sys.addJob("hold");
    try {
      const running = await until("the hold job to show on the worker", async () => {
        const w = (await call("/api/workers")).body.workers.find((x: Json) => x.id === sys.worker!.id);
        return w?.running.find((j: Json) => j.id === job);
      });
      expect(running).toMatchObject({ task: "hold", queue: "maintenance" });
      const active = (await call("/api/jobs?status=running")).body;
      expect(active.jobs).toEqual([expect.objectContaining({ id: job, task: "hold", state: "running", worker_id: sys.worker!.id })]);
      const q = (await call("/api/queues")).body.queues.find((x: Json) => x.queue === "maintenance");
      expect(q.running).toBe(1);
    } finally {
      sys.releaseHolds();
    }
    await until("the hold job to finish", async () => (await call("/api/jobs?status=running")).body.jobs.length === 0);
  });

  it("GET /api/queues: depth counts waiting jobs, the last hour's outcomes come from job_history", async () => {
    const later = await sys.addJob("noop", { runAt: new Date(Date.now() + 3_600_000) });
    const { rows: [h] } = await sys.db.pool.query<{ ok: number }>(
      "select count(*)::int as ok from apfa.job_history where queue = 'embedding' and outcome = 'success'",
    );
    const { queues } = (await call("/api/queues")).body;
    expect(queues.map((q: Json) => q.queue).slice(0, 3)).toEqual(["embedding", "indexing", "maintenance"]);
    const emb = queues.find((q: Json) => q.queue === "embedding");
    // Two runs of 50 and 60 docs in batches of 20: 3 + 3 embed_batch jobs and 2 embed_all jobs.
    expect(h.ok).toBe(8);
    expect(emb).toMatchObject({ concurrency: 4, depth: 0, running: 0, completed_1h: 8, failed_1h: 0 });
    expect(emb.rate_per_min).toBeCloseTo(8 / 5, 5);
    expect(queues.find((q: Json) => q.queue === "indexing")).toMatchObject({ concurrency: 1, completed_1h: 2 });
    expect(queues.find((q: Json) => q.queue === "maintenance")).toMatchObject({ depth: 1, ready: 0, scheduled: 1 });
    await sys.db.pool.query("select graphile_worker.complete_jobs(array[$1::bigint])", [later]);
  });

  it("GET /api/runs: newest first, with progress", async () => {
    const { runs, pipeline } = (await call("/api/runs?limit=5")).body;
    expect(pipeline).toBe("dash");
    expect(runs.map((r: Json) => r.id)).toEqual([second.id, first.id]);
    expect(runs[0]).toMatchObject({ status: "succeeded", batches_total: 3, batches_done: 3, docs_embedded: 60, progress: 1, index_version: second.index_version });
    expect(runs[0].docs_per_s).toBeGreaterThan(0);
    expect((await call("/api/runs?limit=1")).body.runs).toHaveLength(1);
  });

  it("GET /api/index/versions: both versions, the one `latest` names marked current", async () => {
    const body = (await call("/api/index/versions")).body;
    expect(body.current).toBe(second.index_version);
    expect(body.versions.map((v: Json) => [v.version, v.current])).toEqual([[second.index_version, true], [first.index_version, false]]);
    expect(body.versions[0]).toMatchObject({ engine: "flat", dims: 64, count: 60, run_id: second.id, deleted_at: null });
  });

  it("GET /api/jobs?status=recent: finished attempts with their outcome", async () => {
    const { jobs } = (await call("/api/jobs?status=recent&limit=3")).body;
    expect(jobs).toHaveLength(3);
    expect(jobs[0]).toMatchObject({ outcome: "success", error: null });
    expect(Date.parse(jobs[0].finished_at)).toBeGreaterThanOrEqual(Date.parse(jobs[2].finished_at));
  });
});

describe("actions", () => {
  it("POST /api/runs starts a run (201) that the worker completes; 409 while one is active unless forced", async () => {
    const before = (await sys.db.pool.query("select id from apfa.runs")).rowCount;
    const r = await call("/api/runs", { body: {} });
    expect(r.status).toBe(201);
    expect(r.body.run).toMatch(/^r\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    const { rows } = await sys.db.pool.query("select trigger from apfa.runs where id = $1", [r.body.run]);
    expect(rows).toEqual([{ trigger: "api" }]);
    expect((await sys.db.pool.query("select id from apfa.runs")).rowCount).toBe(before! + 1);
    expect((await sys.waitForRun(r.body.run)).status).toBe("succeeded");

    // An active run (a row with no job, so it stays pending) blocks a plain rebuild.
    await sys.db.pool.query("insert into apfa.runs (id, pipeline, batch_size, deadline_at) values ('r-active', 'dash', 20, now() + interval '1 hour')");
    try {
      const busy = await call("/api/runs", { body: {} });
      expect(busy.status).toBe(409);
      expect(busy.body).toMatchObject({ error: "run_active", run: "r-active" });
      const forced = await call("/api/runs", { body: { force: true } });
      expect(forced.status).toBe(201);
      await sys.waitForRun(forced.body.run);
    } finally {
      await sys.db.pool.query("update apfa.runs set status = 'cancelled', finished_at = now() where id = 'r-active'");
    }
  });

  it("POST /api/jobs/:id/retry puts a permanently failed job back with fresh attempts", async () => {
    const id = await sys.addJob("flaky", { maxAttempts: 1 });
    const failed = await until("the flaky job to fail for good", async () =>
      (await call("/api/jobs?status=failed")).body.jobs.find((j: Json) => j.id === id && j.state === "failed"));
    expect(failed).toMatchObject({ task: "flaky", attempts: 1, max_attempts: 1 });
    expect(failed.error).toContain("fails on purpose");
    expect((await call("/api/queues")).body.queues.find((q: Json) => q.queue === "maintenance").failed_jobs).toBe(1);

    sys.gates.flakyPasses = true;
    const r = await call(`/api/jobs/${id}/retry`, { body: {} });
    expect(r.status).toBe(200);
    expect(r.body.job).toMatchObject({ id, task: "flaky", attempts: 0, max_attempts: 1 });
    await until("the retried job to succeed", async () => {
      const { rows } = await sys.db.pool.query("select 1 from apfa.job_history where job_id = $1 and outcome = 'success'", [id]);
      return rows.length === 1;
    });
    expect((await sys.db.pool.query("select 1 from graphile_worker._private_jobs where id = $1", [id])).rowCount).toBe(0);
    expect((await call(`/api/jobs/${id}/retry`, { body: {} })).status).toBe(404);
  });

  it("POST /api/jobs/:id/retry refuses a job that has not failed (409)", async () => {
    const id = await sys.addJob("noop", { runAt: new Date(Date.now() + 3_600_000) });
    const r = await call(`/api/jobs/${id}/retry`, { body: {} });
    expect(r.status).toBe(409);
    expect(r.body.error).toBe("job_not_failed");
    await sys.db.pool.query("select graphile_worker.complete_jobs(array[$1::bigint])", [id]);
  });

  it("POST /api/index/rollback re-publishes an older version and the server swaps to it", async () => {
    const current = (await call("/api/index/versions")).body.current;
    const r = await call("/api/index/rollback", { body: { version: first.index_version } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ version: first.index_version, previous: current, count: 50 });
    expect((await readLatest(sys.pipeline.store))?.version).toBe(first.index_version);
    const versions = (await call("/api/index/versions")).body;
    expect(versions.current).toBe(first.index_version);
    expect(versions.versions.find((v: Json) => v.current).version).toBe(first.index_version);
    await until("the server to serve the rolled-back version", async () => {
      const ix = await (await fetch(`${server.base}/index`)).json() as Json;
      return ix.version === first.index_version;
    });
  });

  it("POST /api/index/rollback refuses unknown (404) and deleted (409) versions", async () => {
    const unknown = await call("/api/index/rollback", { body: { version: "ab".repeat(32) } });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toBe("unknown_version");
    expect(unknown.body.message).toContain("not in apfa.index_versions");
    await sys.db.pool.query("update apfa.index_versions set deleted_at = now() where version = $1", [second.index_version]);
    try {
      const deleted = await call("/api/index/rollback", { body: { version: second.index_version } });
      expect(deleted.status).toBe(409);
      expect(deleted.body.error).toBe("deleted_version");
      expect((await readLatest(sys.pipeline.store))?.version).toBe(first.index_version);
    } finally {
      await sys.db.pool.query("update apfa.index_versions set deleted_at = null where version = $1", [second.index_version]);
    }
  });
});

describe("bad input is a 4xx JSON answer, never a 500", () => {
  const cases: Array<[string, { method?: string; body?: unknown; headers?: Record<string, string> }, number, string]> = [
    ["/api/jobs?status=bogus", {}, 400, "status must be one of running, failed, recent"],
    ["/api/jobs?status=failed&limit=0", {}, 400, "limit must be a whole number from 1 to 500"],
    ["/api/jobs?limit=abc", {}, 400, "limit must be"],
    ["/api/runs?limit=100000", {}, 400, "limit must be"],
    ["/api/jobs/abc/retry", { body: {} }, 400, "job id must be a positive integer"],
    ["/api/jobs/-1/retry", { body: {} }, 400, "job id must be a positive integer"],
    ["/api/jobs/99999999999999999999999/retry", { body: {} }, 400, "job id must be a positive integer"],
    ["/api/jobs/987654/retry", { body: {} }, 404, "job 987654 does not exist"],
    ["/api/index/rollback", { body: { version: "xyz" } }, 400, "version: must be an index version"],
    ["/api/index/rollback", { body: { version: "AB".repeat(32) } }, 400, "version: must be an index version"],
    ["/api/index/rollback", { body: {} }, 400, "version"],
    ["/api/index/rollback", { body: { version: "ab".repeat(32), extra: 1 } }, 400, 'unknown field "extra"'],
    ["/api/index/rollback", { body: "{not json" }, 400, "not valid JSON"],
    ["/api/index/rollback", { body: "[]" }, 400, "expected a JSON object"],
    ["/api/runs", { body: "version=1", headers: { "content-type": "application/x-www-form-urlencoded" } }, 415, "content-type must be application/json"],
    ["/api/runs", { body: { force: "yes" } }, 400, "force"],
    ["/api/runs", { method: "POST" }, 415, "content-type must be application/json"],
  ];
  it.each(cases)("%s %j → %i", async (path, init, status, message) => {
    const r = await call(path, init);
    expect(r.status).toBe(status);
    expect(r.body.message).toContain(message);
    expect(typeof r.body.error).toBe("string");
  });
});

describe("open access in the embedded default (no key, loopback)", () => {
  let open: OpsServer;
  beforeAll(async () => {
    open = await sys.serve({ server: { auth: { mode: "none" } } }, { jwt: false });
  });

  /** node:http, because fetch does not let a caller set Host. */
  function raw(path: string, headers: Record<string, string>, method = "GET", body?: string): Promise<{ status: number; body: Json }> {
    const u = new URL(open.base + path);
    return new Promise((resolve, reject) => {
      const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers }, (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(text || "{}") }));
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  it("answers without a token and says so in the start-up log", async () => {
    expect(open.logs.some((l) => l.level === "warn" && String(l.msg).includes("open without a token"))).toBe(true);
    const r = await fetch(`${open.base}/api/workers`);
    expect(r.status).toBe(200);
    expect(((await r.json()) as Json).workers.length).toBeGreaterThan(0);
  });

  it("refuses a Host that is not loopback (DNS rebinding) and a cross-site Origin on POST", async () => {
    expect((await raw("/api/workers", { host: `127.0.0.1:${new URL(open.base).port}` })).status).toBe(200);
    const rebound = await raw("/api/workers", { host: "attacker.example" });
    expect(rebound.status).toBe(403);
    expect(rebound.body.message).toContain("only answers requests addressed to localhost");
    const cross = await raw("/api/runs", { host: `127.0.0.1:${new URL(open.base).port}`, origin: "http://attacker.example", "content-type": "application/json" }, "POST", "{}");
    expect(cross.status).toBe(403);
    expect(cross.body.error).toBe("cross_origin");
  });

  it("decides open access only for auth none, or no key on a loopback host", async () => {
    const verifier = (() => {}) as never;
    const at = (host: string, auth: Json) => ({ ...sys.config, server: { ...sys.config.server, host, auth: { mode: "jwt", ...auth } } }) as typeof sys.config;
    expect(opsAccess(at("127.0.0.1", {}), null).mode).toBe("open");
    expect(opsAccess(at("127.0.0.1", {}), verifier).mode).toBe("open");
    expect(opsAccess(at("0.0.0.0", {}), verifier).mode).toBe("jwt");
    expect(opsAccess(at("127.0.0.1", { jwks_url: "https://id.example/jwks" }), verifier).mode).toBe("jwt");
  });
});
