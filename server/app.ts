/**
 * The HTTP API on h3 (web-standard Request/Response, so Node and Deno serve the same app):
 * `POST /generate-advice`, `POST /search` (JWT), `GET /health`, `/ready`, `/metrics`, `/index`, `/openapi.json`.
 * @module
 */
import { getRequestIP, H3, type H3Event } from "h3";
import { z } from "zod";
import type { PipelineConfig } from "../runtime/config/schema.ts";
import type { Embedder, Generator, Logger, RetrievedDoc } from "../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../runtime/errors.ts";
import type { QuerySampler } from "../runtime/query-samples.ts";
import { eligibilityPredicate, extractFacts, hasFacts, purposePredicate, type QuestionFacts } from "../runtime/question.ts";
import { createAdmission, QueueWaitExceeded } from "./admission.ts";
import { AuthError, type Verifier } from "./auth.ts";
import { createHotSet, type ResponseCache } from "./cache.ts";
import { errorResponse, HttpError, json, jsonText, readJson, validate } from "./http.ts";
import type { IndexHolder, Lease, LoadedIndex } from "./index-holder.ts";
import type { ServerMetrics } from "./metrics.ts";
import { createRateLimiter } from "./rate-limit.ts";
import { openapiDocument } from "./openapi.ts";
import { compiled, requestBody } from "./request.ts";
import { createRetriever, type CompiledFilter, type Ranked } from "./retrieval.ts";

export interface AppDeps {
  config: PipelineConfig;
  holder: IndexHolder;
  embedder: Embedder;
  generator: Generator;
  /** Answers as a cache hit sends them: the JSON body, `cached: true` (an entry costs one string, a hit no parsing). */
  cache: ResponseCache<string>;
  /** null when auth is off (embedded default on localhost). */
  verifier: Verifier | null;
  metrics: ServerMetrics;
  log: Logger;
  /** Which server process answers (`/ready` reports it): its pid and its slot under `--processes` (0 alone). */
  instance?: { pid: number; process: number };
  /**
   * Under `--processes N`, with answers shared between processes (Redis, or the processes' caches linked): this
   * process's slot and N. Each warms a new version with its share of the most asked questions, not all of them.
   */
  warmShare?: { index: number; of: number };
  /** Keeps a sample of query vectors for the build's recall check (runtime/query-samples.ts). */
  querySamples?: Pick<QuerySampler, "offer">;
  /** Mounts more routes (dashboard, admin API). */
  extend?: (app: H3, helpers: { guard: (event: H3Event) => Promise<void> }) => void;
}

export interface Hit {
  id: string;
  score: number;
  text: string;
  metadata: Record<string, unknown>;
}

export interface CachedAnswer {
  hits?: Hit[];
  advice?: string;
  generator?: string;
  fallback_reason?: string;
  /** The constraints the question stated, as /generate-advice read them. */
  stated?: QuestionFacts;
}

export function createApp(deps: AppDeps): H3 {
  const { config, holder, embedder, generator, cache, verifier, metrics, log } = deps;
  const limits = config.server;
  const body = requestBody(limits);
  const retriever = createRetriever(limits.retrieval, log);

  /** Methods per fixed path, so a wrong method gets 405 with `Allow` instead of 404. */
  const known = new Map<string, string[]>();
  const app = new H3({
    silent: true,
    onError(error, event) {
      const status = error.status ?? 500;
      const allow = known.get(event.url.pathname);
      if (status === 404 && allow) {
        return errorResponse(405, "method_not_allowed", `${event.req.method} is not allowed on ${event.url.pathname}; use ${allow.join(", ")}`, undefined, { allow: allow.join(", ") });
      }
      if (status >= 500) log.error("unhandled error", { path: event.url.pathname, error: errorMessage(error.cause ?? error) });
      return status === 404
        ? errorResponse(404, "not_found", `no route ${event.req.method} ${event.url.pathname.slice(0, 200)}`)
        : status === 405
        ? errorResponse(405, "method_not_allowed", `${event.req.method} is not allowed on ${event.url.pathname.slice(0, 200)}`)
        : errorResponse(status >= 500 ? 500 : status, status >= 500 ? "internal" : "bad_request", status >= 500 ? "internal error" : error.message);
    },
  });

  async function guard(event: H3Event): Promise<void> {
    if (verifier) await verifier(event.req.headers.get("authorization"));
  }

  /** Wraps a route: timing, status counters and the error → JSON mapping. */
  const route = (name: string, fn: (event: H3Event) => Promise<Response> | Response) => async (event: H3Event) => {
    const t0 = performance.now();
    let res: Response;
    try {
      res = await fn(event);
    } catch (err) {
      if (err instanceof AuthError) res = errorResponse(401, "unauthorized", err.reason, undefined, { "www-authenticate": `Bearer error="invalid_token", error_description="${err.reason}"` });
      else if (err instanceof HttpError) res = errorResponse(err.status, err.error, err.message.replace(/^\[apfa\] /, ""), err.field);
      else if (err instanceof ApfaError && err.status < 500) res = errorResponse(err.status, err.code, err.message.replace(/^\[apfa\] (\[[^\]]+\] )?/, ""));
      else if (event.req.signal?.aborted) {
        // The client went away mid-request: nothing to answer and nothing wrong with the server (nginx's 499).
        log.debug("client closed the request", { route: name });
        res = errorResponse(499, "client_closed", "the client closed the request");
      } else {
        log.error("request failed", { route: name, error: errorMessage(err) });
        res = errorResponse(503, "unavailable", "the request could not be served; retry shortly");
      }
    }
    metrics.responseTime.observe({ route: name }, (performance.now() - t0) / 1000);
    metrics.requests.inc({ route: name, status: String(res.status) });
    return res;
  };

  /**
   * The index search, the CPU-bound step, runs `max_searching` at a time; a request waits for its turn only
   * within what is left of its `max_wait_ms` (counted from its arrival), so a request holding an admission slot
   * never queues unseen behind dozens of scans: past its budget it gets the same 503 as a full gate.
   */
  const searching = createAdmission({ max_active: limits.overload.max_searching, max_queued: Number.MAX_SAFE_INTEGER, max_wait_ms: limits.overload.max_wait_ms });

  async function retrieve(lease: Lease, query: string, k: number, opts: { filter?: CompiledFilter; mode?: "vector" | "hybrid"; facts?: QuestionFacts; arrived: number; warmup?: boolean }): Promise<Hit[]> {
    const t0 = performance.now();
    const vector = await embedder.embed([query]);
    if (!opts.warmup) deps.querySamples?.offer(vector);
    metrics.embedQuery.observe((performance.now() - t0) / 1000);
    // A warm-up search runs on a version that does not serve yet, whose searcher nothing else uses: it takes no turn
    // from requests, and under overload it would not get one within any budget.
    const turn = opts.warmup ? () => {} : await searching.enter(undefined, limits.overload.max_wait_ms - (performance.now() - opts.arrived))!;
    const t1 = performance.now();
    let found: Ranked[];
    try {
      found = await rank(lease.index, query, vector, k, opts);
    } finally {
      turn(); // released before the documents are read: a file read is not the CPU-bound step the turn bounds
    }
    metrics.search.observe((performance.now() - t1) / 1000);
    const lines = await lease.index.docs.getMany(found.map((r) => r.row));
    return found.map(({ score }, i) => {
      const d = JSON.parse(lines[i]) as { id: string; text: string; metadata?: Record<string, unknown> };
      return { id: d.id, score, text: d.text, metadata: d.metadata ?? {} };
    });
  }

  /** The top `k` rows: plain retrieval, or, when the question states facts, the products open to the person first. */
  async function rank(ix: Lease["index"], query: string, vector: Float32Array, k: number, opts: { filter?: CompiledFilter; mode?: "vector" | "hybrid"; facts?: QuestionFacts }): Promise<Ranked[]> {
    const search = (filter?: CompiledFilter) => retriever.search(ix, { vector, text: query, k: Math.min(k, ix.manifest.count), filter, mode: opts.mode });
    const and = (a: CompiledFilter, b?: CompiledFilter): CompiledFilter => (b ? { key: `${a.key}&${b.key}`, test: (m) => a.test(m) && b.test(m) } : a);
    let ranked = opts.facts && hasFacts(opts.facts) ? [] : await search(opts.filter);
    if (opts.facts && hasFacts(opts.facts)) {
      // The products open to the person first; when fewer than k are, the nearest for the same purpose, then
      // whatever plain retrieval finds (a corpus without product metadata answers as it did without facts).
      const fk = JSON.stringify(opts.facts);
      const steps = [
        and({ key: `open:${fk}`, test: eligibilityPredicate(opts.facts) }, opts.filter),
        and({ key: `purpose:${opts.facts.category ?? ""}`, test: purposePredicate(opts.facts) }, opts.filter),
        opts.filter,
      ];
      const seen = new Set<number>();
      for (const f of steps) {
        if (ranked.length >= k) break;
        for (const r of await search(f)) {
          if (seen.has(r.row) || ranked.length >= k) continue;
          seen.add(r.row);
          ranked.push(r);
        }
      }
    }
    return ranked;
  }

  /** One question as a request asked it: enough to answer it again, on another version. */
  interface Question {
    kind: "search" | "advice";
    query: string;
    k: number;
    filter?: CompiledFilter;
    mode?: "vector" | "hybrid";
    /** The cache key's question part (kind, mode, filter and text). */
    ck: string;
  }

  /**
   * The constraints an advice question states, read only when its answer is computed: most requests are answered
   * from the cache, and reading them took a twentieth of a busy server's CPU when every request did.
   */
  const factsOf = (q: Question): QuestionFacts | undefined => (q.kind === "advice" && limits.retrieval.question_filters ? extractFacts(q.query) : undefined);

  /** Retrieves (and, for advice, generates) the answer to `q` from the lease's version, and caches it. */
  async function compute(lease: Lease, q: Question, arrived: number, signal: AbortSignal, warmup = false): Promise<CachedAnswer> {
    const facts = factsOf(q);
    const hits = await retrieve(lease, q.query, q.k, { filter: q.filter, mode: q.mode, facts, arrived, warmup });
    let value: CachedAnswer;
    if (q.kind === "search") value = { hits };
    else {
      const docs: RetrievedDoc[] = hits.map((h) => ({ id: h.id, score: h.score, text: h.text, metadata: h.metadata }));
      const a = await generator.generate({ query: q.query, docs, facts, signal });
      if (a.fallback_reason) metrics.generatorFallbacks.inc();
      value = { hits, advice: a.advice, generator: a.generator, fallback_reason: a.fallback_reason, ...(facts && hasFacts(facts) ? { stated: facts } : {}) };
    }
    await cache.set(lease.index.version, q.ck, q.k, JSON.stringify(payload(q.kind, value, lease.index.version, true)));
    return value;
  }

  /** Which of `of` processes warms the question with this key (FNV-1a of its UTF-16 units). */
  const shareOf = (key: string, of: number): number => {
    let h = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    return (h >>> 0) % of;
  };

  /** Warm-up searches in flight at once: flat's search worker scans up to `search_batch` (8) in one pass. */
  const WARM_AT_ONCE = 8;
  /**
   * The cache is keyed by version, so a swap would start the new version with an empty one and send every
   * popular question to the index at once. Before a new version serves, the `warm_on_swap` most asked recent
   * questions are answered on it and cached, WARM_AT_ONCE at a time, until `warm_budget_ms` runs out; the rest are
   * left for traffic. They take no search turns from requests (that version's searcher serves nobody yet): taking
   * them, a warm-up under overload answered 1-10 of 256 questions in its 2 s, as requests held every turn.
   */
  const warmth = limits.cache;
  const hot = createHotSet<Question>(warmth.warm_on_swap);
  const share = deps.warmShare && deps.warmShare.of > 1 ? deps.warmShare : undefined;
  async function warm(ix: LoadedIndex): Promise<void> {
    const top = hot.top(warmth.warm_on_swap);
    // Split by the question, not by its rank: the processes' lists of most asked questions differ a little.
    const questions = share ? top.filter((q) => shareOf(`${q.k}\0${q.ck}`, share.of) === share.index) : top;
    if (!questions.length || warmth.warm_budget_ms <= 0) return;
    const t0 = performance.now();
    const deadline = t0 + warmth.warm_budget_ms;
    const stop = new AbortController();
    const lease: Lease = { index: ix, release() {} }; // not serving yet: nothing can retire it while this runs
    let next = 0;
    let answered = 0;
    const one = async () => {
      while (next < questions.length && performance.now() < deadline) {
        const q = questions[next++];
        try {
          await compute(lease, q, performance.now(), stop.signal, true);
          answered++;
        } catch (err) {
          log.debug("warm-up question not answered", { version: ix.version, error: errorMessage(err) });
        }
      }
    };
    // A search cannot be cancelled: past the budget the swap goes on, and answers still under way land in the cache.
    let timeUp!: () => void;
    const late = new Promise<void>((res) => (timeUp = res));
    const timer = setTimeout(() => {
      stop.abort(new QueueWaitExceeded(warmth.warm_budget_ms));
      timeUp();
    }, warmth.warm_budget_ms);
    try {
      await Promise.race([Promise.all(Array.from({ length: Math.min(WARM_AT_ONCE, questions.length) }, one)), late]);
    } finally {
      clearTimeout(timer);
    }
    metrics.cacheWarmed.inc({ outcome: "answered" }, answered);
    metrics.cacheWarmed.inc({ outcome: "skipped" }, questions.length - answered);
    log.info("answer cache warmed for the new version", { version: ix.version, answered, asked: questions.length, ms: Math.round(performance.now() - t0) });
  }
  if (warmth.warm_on_swap > 0) holder.beforeServing(warm);

  const limiter = createRateLimiter(limits.rate_limit ?? { rps: 0, burst: 1 });

  // Overload is an answer: past the bounded queue a request gets a 503 at once.
  const overload = limits.overload;
  const admission = createAdmission(overload);
  metrics.admission = admission.stats;
  const refuse = (name: string, reason: "queue_full" | "queue_wait") => {
    metrics.overloadRejected.inc({ route: name, reason });
    const why = reason === "queue_full" ? `${overload.max_queued} requests already waiting` : `no slot within ${overload.max_wait_ms} ms`;
    return errorResponse(503, "overloaded", `the server is at capacity (${overload.max_active} requests active, ${why}); retry in ${overload.retry_after_s} s`, undefined, { "retry-after": String(overload.retry_after_s) });
  };

  /**
   * Identical misses in flight share one computation (key: version, cache key, k): a popular query that is
   * not cached yet is computed once, not once per waiting client. The computation (an LLM call, say) is
   * cancelled only when every request waiting for it has gone, not when the first one does.
   */
  interface Flight {
    work: Promise<CachedAnswer>;
    waiting: number;
    cancel: AbortController;
  }
  const inflight = new Map<string, Flight>();

  /** Counts `signal`'s request as waiting for `f` until it settles; the last one to leave cancels it. */
  async function waitFor(f: Flight, signal: AbortSignal): Promise<CachedAnswer> {
    f.waiting++;
    const leave = () => {
      if (--f.waiting === 0) f.cancel.abort(signal.reason);
    };
    if (signal.aborted) leave();
    else signal.addEventListener("abort", leave, { once: true });
    try {
      return await f.work;
    } finally {
      signal.removeEventListener("abort", leave);
      if (!signal.aborted) f.waiting--;
    }
  }

  /** A freshly computed answer (one request's own, or one it joined). */
  function respond(kind: "search" | "advice", value: CachedAnswer, version: string): Response {
    metrics.byVersion.inc({ version: version.slice(0, 16) });
    return json(payload(kind, value, version, false));
  }

  /** A cached answer: stored as sent (`cached: true`), so a hit neither parses nor serialises anything. */
  function sendCached(text: string, version: string): Response {
    metrics.byVersion.inc({ version: version.slice(0, 16) });
    return jsonText(text);
  }

  function payload(kind: "search" | "advice", value: CachedAnswer, version: string, cached: boolean): object {
    const hits = value.hits ?? [];
    if (kind === "search") return { hits, index_version: version, cached };
    return {
      advice: value.advice,
      sources: hits.map((h) => ({ id: h.id, score: h.score, metadata: h.metadata })),
      index_version: version,
      cached,
      generator: value.generator,
      ...(value.stated ? { stated: value.stated } : {}),
      ...(value.fallback_reason ? { fallback_reason: value.fallback_reason } : {}),
    };
  }

  /**
   * Search and advice. A cached answer (or one another request is computing) costs no admission slot: only a
   * request that has to embed, search and generate waits for one, so under overload the answers already known
   * keep flowing while the expensive ones are refused with a 503.
   */
  async function answer(event: H3Event, kind: "search" | "advice", name: string): Promise<Response> {
    try {
      return await answerOrWait(event, kind, name);
    } catch (err) {
      // A wait past max_wait_ms: for a slot, for a search turn, or for the identical request this one joined.
      if (err instanceof QueueWaitExceeded) return refuse(name, "queue_wait");
      throw err;
    }
  }

  async function answerOrWait(event: H3Event, kind: "search" | "advice", name: string): Promise<Response> {
    const arrived = performance.now();
    const ip = getRequestIP(event) ?? "unknown";
    const loopback = ip.startsWith("127.") || ip === "::1" || ip === "::ffff:127.0.0.1";
    const wait = loopback && limits.rate_limit?.exempt_loopback !== false ? 0 : limiter.take(ip);
    if (wait > 0) return errorResponse(429, "rate_limited", `too many requests; retry in ${wait} s`, undefined, { "retry-after": String(wait) });
    await guard(event);
    const { query, k, filter: rawFilter, mode } = validate(body, await readJson(event.req, limits.body_limit_bytes));
    const filter = compiled(rawFilter);
    const ck = `${kind}:${mode ?? limits.retrieval.mode}:${filter?.key ?? ""}:${query}`;
    const question: Question = { kind, query, k, filter, mode, ck };
    if (warmth.warm_on_swap > 0) hot.add(`${k}\0${ck}`, question);
    const serving = holder.current();
    if (!serving) throw new ApfaError("index", "no index is loaded yet", { status: 503 });
    const ready = await cache.get(serving.version, ck, k);
    if (ready !== undefined) return sendCached(ready, serving.version);
    /** Answers with an identical request's result; if that request was refused for time, so is this one. */
    const join = async (f: Flight, version: string) => {
      metrics.coalesced.inc({ route: name });
      return respond(kind, await waitFor(f, event.req.signal), version);
    };
    const shared = inflight.get(`${serving.version}\0${k}\0${ck}`);
    if (shared) return await join(shared, serving.version);

    const entered = admission.enter(event.req.signal);
    if (!entered) return refuse(name, "queue_full");
    const release = await entered; // rejects when the client leaves while queued (the route answers 499) or waits too long
    let lease: Lease | undefined;
    try {
      lease = holder.acquire();
      if (!lease) throw new ApfaError("index", "no index is loaded yet", { status: 503 });
      const version = lease.index.version;
      // A swap while this request waited: the new version's answer may be cached or in flight already.
      if (version !== serving.version) {
        const hit = await cache.get(version, ck, k);
        if (hit !== undefined) return sendCached(hit, version);
      }
      const key = `${version}\0${k}\0${ck}`;
      const other = inflight.get(key);
      if (other) return await join(other, version);
      const held = lease;
      const cancel = new AbortController();
      const work = compute(held, question, arrived, cancel.signal);
      const flight: Flight = { work, waiting: 0, cancel };
      inflight.set(key, flight);
      try {
        return respond(kind, await waitFor(flight, event.req.signal), version);
      } finally {
        inflight.delete(key);
      }
    } finally {
      lease?.release();
      release();
    }
  }

  const add = (method: "GET" | "POST", p: string, handler: ReturnType<typeof route>) => {
    known.set(p, [...(known.get(p) ?? []), method]);
    if (method === "GET") app.get(p, handler);
    else app.post(p, handler);
  };
  add("POST", "/search", route("search", (e) => answer(e, "search", "search")));
  add("POST", "/generate-advice", route("generate-advice", (e) => answer(e, "advice", "generate-advice")));
  add("GET", "/health", route("health", () => json({ status: "ok" })));
  const openapi = openapiDocument(limits);
  add("GET", "/openapi.json", route("openapi", () => json(openapi)));
  add("GET", "/ready", route("ready", () => {
    const s = holder.status();
    return json({ ...s, auth: verifier ? "jwt" : "none", ...deps.instance }, s.ready ? 200 : 503);
  }));
  add("GET", "/index", route("index", () => {
    const ix = holder.current();
    return ix ? json({ ...ix.manifest, source: ix.source, loaded_at: ix.loadedAt.toISOString() }) : errorResponse(503, "not_ready", "no index is loaded yet");
  }));
  add("GET", "/metrics", route("metrics", async () => {
    const ix = holder.current();
    if (ix) metrics.indexAge.set((Date.now() - Date.parse(ix.manifest.created_at)) / 1000);
    return new Response(await (metrics.render?.() ?? metrics.registry.metrics()), { headers: { "content-type": metrics.registry.contentType } });
  }));
  deps.extend?.(app, { guard });
  return app;
}
