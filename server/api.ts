/**
 * The operations API under `/api`, in the spirit of Celery's Flower, and the dashboard at `/dashboard` that
 * renders it. Mounted through `createApp`'s `extend` hook; serves the same queries as `apfa inspect`
 * (runtime/queries.ts) and `apfa index rollback` (runtime/index-versions.ts).
 *
 * | route | what |
 * | --- | --- |
 * | `GET /api/workers` | workers, online when their heartbeat is recent, with the jobs they hold |
 * | `GET /api/queues` | depth, running, last hour's completed/failed, rate per minute |
 * | `GET /api/jobs?status=failed\|recent\|running&limit=` | jobs with their errors |
 * | `GET /api/runs?limit=` | runs with progress |
 * | `GET /api/index/versions` | versions, the one `indexes/latest` names marked `current` |
 * | `POST /api/runs` `{force?}` | start a rebuild (409 while a run is active unless `force`) |
 * | `POST /api/jobs/:id/retry` | put a failed job back in its queue with a fresh set of attempts |
 * | `POST /api/index/rollback` `{version}` | re-publish an existing version; servers hot-swap to it |
 *
 * Access. With a JWT key configured (`server.auth.jwt_secret`, `public_key` or `jwks_url`) every `/api` call
 * goes through the server's verifier, with the token in `Authorization: Bearer` or, for links from the CLI,
 * `?token=` (the page moves it into sessionStorage and sends the header). Without one the API is open — but
 * only in the embedded default, where the server binds a loopback address: `server.auth.mode: none`, or the
 * dev-secret mode (no key configured) on loopback, so `apfa serve` + a browser works with no token dance.
 * An open API still refuses requests whose Host is not loopback (DNS rebinding) and, on every POST, a
 * cross-site Origin and any content type but JSON (so no HTML form can trigger a rebuild). The decision is
 * logged once at start-up. The page itself is a static shell with no data in it and is served to anyone:
 * everything it shows comes from `/api`.
 * @module
 */
import * as fs from "node:fs";
import { getRouterParam, type H3, type H3Event } from "h3";
import { z } from "zod";
import { inspectJobs, inspectQueues, inspectRuns, heartbeatTimeoutS, inspectWorkers, JOB_FILTERS, type JobFilter } from "../runtime/queries.ts";
import { listVersions, rollbackVersion, RollbackError } from "../runtime/index-versions.ts";
import type { PipelineConfig } from "../runtime/config/schema.ts";
import type { Logger } from "../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../runtime/errors.ts";
import type { Pipeline } from "../runtime/pipeline.ts";
import { activeRuns, createRun } from "../runtime/runs.ts";
import type { AppDeps } from "./app.ts";
import { AuthError, type Verifier } from "./auth.ts";
import { errorResponse, HttpError, json, readJson, validate } from "./http.ts";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);
const BODY_LIMIT = 16_384;

export interface OpsOptions {
  pipeline: Pipeline;
  /** The server's verifier (null when `server.auth.mode` is none). */
  verifier: Verifier | null;
  log: Logger;
}

export type OpsAccess = { mode: "jwt" } | { mode: "open"; reason: string };

/** Whether `/api` needs a token (see the module comment for why the embedded default does not). */
export function opsAccess(config: PipelineConfig, verifier: Verifier | null): OpsAccess {
  if (!verifier) return { mode: "open", reason: "server.auth.mode is none (loopback only)" };
  const a = config.server.auth;
  if (!a.jwt_secret && !a.public_key && !a.jwks_url && LOOPBACK.has(config.server.host)) {
    return { mode: "open", reason: `no server.auth key configured and the server binds loopback (${config.server.host})` };
  }
  return { mode: "jwt" };
}

function hostName(hostHeader: string): string {
  return (hostHeader.startsWith("[") ? hostHeader.slice(0, hostHeader.indexOf("]") + 1) : hostHeader.split(":")[0]).toLowerCase();
}

function readAsset(name: string): string {
  return fs.readFileSync(new URL(`./dashboard/${name}`, import.meta.url), "utf8");
}

const ASSET_HEADERS = {
  "cache-control": "no-cache",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  // The page may carry ?token= for a moment; never send it on to another site.
  "referrer-policy": "no-referrer",
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

/** Query parameter `limit`: a whole number 1-500, else 400. */
function limitParam(event: H3Event, fallback: number): number {
  const raw = event.url.searchParams.get("limit");
  if (raw === null) return fallback;
  if (!/^\d{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > 500) {
    throw new HttpError(400, "invalid_request", `limit must be a whole number from 1 to 500 (got ${JSON.stringify(raw.slice(0, 40))})`, "limit");
  }
  return Number(raw);
}

/** The `extend` hook for createApp: mounts `/api/*` and `/dashboard`. */
export function opsRoutes(opts: OpsOptions): NonNullable<AppDeps["extend"]> {
  const { pipeline: p, verifier, log } = opts;
  const { config } = p;
  const pool = p.db.pool;
  const access = opsAccess(config, verifier);
  const timeoutS = heartbeatTimeoutS(config);
  const assets = { html: readAsset("index.html"), js: readAsset("app.js") };

  async function authorize(event: H3Event, write: boolean): Promise<void> {
    const req = event.req;
    if (write) {
      const origin = req.headers.get("origin");
      if (origin && origin !== "null" && URL.canParse(origin) && new URL(origin).host !== req.headers.get("host")) {
        throw new HttpError(403, "cross_origin", "cross-site requests are refused");
      }
    }
    if (access.mode === "open") {
      if (!LOOPBACK.has(hostName(req.headers.get("host") ?? ""))) {
        throw new HttpError(403, "forbidden", "without server.auth configured the operations API only answers requests addressed to localhost");
      }
      return;
    }
    const header = req.headers.get("authorization");
    const token = event.url.searchParams.get("token");
    await verifier!(header ?? (token !== null ? `Bearer ${token}` : null));
  }

  /** Wraps an /api handler: access check, then every failure as JSON (4xx for the client's, 503 for ours). */
  const api = (name: string, fn: (event: H3Event) => Promise<Response>, write = false) => async (event: H3Event): Promise<Response> => {
    try {
      await authorize(event, write);
      return await fn(event);
    } catch (err) {
      if (err instanceof AuthError) return errorResponse(401, "unauthorized", err.reason, undefined, { "www-authenticate": `Bearer error="invalid_token", error_description="${err.reason}"` });
      if (err instanceof HttpError) return errorResponse(err.status, err.error, err.message.replace(/^\[apfa\] /, ""), err.field);
      if (err instanceof RollbackError) return errorResponse(err.status, err.reason, err.message.replace(/^\[apfa\] (\[[^\]]+\] )?/, ""));
      if (err instanceof ApfaError && err.status < 500) return errorResponse(err.status, err.code, err.message.replace(/^\[apfa\] (\[[^\]]+\] )?/, ""));
      log.error("operations API request failed", { route: name, error: errorMessage(err) });
      return errorResponse(503, "unavailable", "the request could not be served; retry shortly");
    }
  };

  const runBody = z.strictObject({ force: z.boolean().default(false) });
  const rollbackBody = z.strictObject({ version: z.string().regex(/^[0-9a-f]{64}$/, "must be an index version: 64 lowercase hex characters") });

  return (app: H3) => {
    const page = () => new Response(assets.html, { headers: { "content-type": "text/html; charset=utf-8", ...ASSET_HEADERS } });
    app.get("/dashboard", page);
    app.get("/dashboard/", page);
    app.get("/dashboard/app.js", () => new Response(assets.js, { headers: { "content-type": "text/javascript; charset=utf-8", ...ASSET_HEADERS } }));

    app.get("/api", api("api", async () => json({
      pipeline: config.name,
      auth: access.mode,
      heartbeat_timeout_s: timeoutS,
      endpoints: ["GET /api/workers", "GET /api/queues", "GET /api/jobs?status=failed|recent|running&limit=", "GET /api/runs?limit=",
        "GET /api/index/versions", "POST /api/runs", "POST /api/jobs/:id/retry", "POST /api/index/rollback"],
    })));
    app.get("/api/workers", api("workers", async () => json({ heartbeat_timeout_s: timeoutS, workers: await inspectWorkers(pool, timeoutS) })));
    app.get("/api/queues", api("queues", async () => json({ queues: await inspectQueues(pool, config) })));
    app.get("/api/jobs", api("jobs", async (event) => {
      const status = event.url.searchParams.get("status") ?? "recent";
      if (!JOB_FILTERS.includes(status as JobFilter)) {
        throw new HttpError(400, "invalid_request", `status must be one of ${JOB_FILTERS.join(", ")} (got ${JSON.stringify(status.slice(0, 40))})`, "status");
      }
      return json({ status, jobs: await inspectJobs(pool, status as JobFilter, limitParam(event, 50)) });
    }));
    app.get("/api/runs", api("runs", async (event) => json({ pipeline: config.name, runs: await inspectRuns(pool, config.name, limitParam(event, 20)) })));
    app.get("/api/index/versions", api("versions", async () => json(await listVersions(pool, p.store, config.name))));

    app.post("/api/runs", api("create-run", async (event) => {
      const { force } = validate(runBody, await readJson(event.req, BODY_LIMIT));
      const active = await activeRuns(pool, config.name);
      if (active.length && !force) {
        return json({ error: "run_active", message: `run ${active[0].id} is still ${active[0].status}; send {"force": true} to start another anyway`, run: active[0].id }, 409);
      }
      const id = await createRun(pool, config, "api");
      log.info("run started from the operations API", { run: id });
      return json({ run: id, status: "pending" }, 201);
    }, true));

    app.post("/api/jobs/:id/retry", api("retry-job", async (event) => {
      const id = getRouterParam(event, "id") ?? "";
      if (!/^[1-9]\d{0,17}$/.test(id)) throw new HttpError(400, "invalid_request", `job id must be a positive integer (got ${JSON.stringify(id.slice(0, 40))})`, "id");
      const job = (await pool.query<{ task: string; locked_at: Date | null; attempts: number; max_attempts: number; last_error: string | null }>(
        "select task, locked_at, attempts, max_attempts, last_error from apfa.jobs where id = $1",
        [id],
      )).rows[0];
      if (!job) return errorResponse(404, "not_found", `job ${id} does not exist (finished jobs are deleted by graphile-worker)`);
      if (job.locked_at) return errorResponse(409, "job_running", `job ${id} is running; only failed jobs can be retried`);
      if (job.attempts === 0 || (job.last_error === null && job.attempts < job.max_attempts)) {
        return errorResponse(409, "job_not_failed", `job ${id} has not failed; only failed jobs can be retried`);
      }
      // reschedule_jobs skips locked jobs, so a job picked up since the check above is left alone. (Not via
      // WorkerUtils.rescheduleJobs: it passes `attempts || null`, which cannot reset attempts to 0.)
      const r = await pool.query<{ id: string; attempts: number; max_attempts: number; run_at: Date }>(
        "select id::text, attempts, max_attempts, run_at from graphile_worker.reschedule_jobs(array[$1::bigint], run_at := now(), attempts := 0)",
        [id],
      );
      if (!r.rows[0]) return errorResponse(409, "job_running", `job ${id} was picked up meanwhile; only failed jobs can be retried`);
      log.info("job retried from the operations API", { job: id, task: job.task, previous_attempts: job.attempts });
      return json({ job: { ...r.rows[0], task: job.task } });
    }, true));

    app.post("/api/index/rollback", api("rollback", async (event) => {
      const { version } = validate(rollbackBody, await readJson(event.req, BODY_LIMIT));
      return json(await rollbackVersion(p, version));
    }, true));

    if (access.mode === "open") {
      log.warn(`operations dashboard (/dashboard) and API (/api) are open without a token: ${access.reason}; set server.auth.jwt_secret to require a JWT`, { dashboard: "/dashboard" });
    } else {
      log.info("operations dashboard (/dashboard) and API (/api) require a JWT: Authorization: Bearer <token> or ?token=<token>", { dashboard: "/dashboard" });
    }
  };
}
