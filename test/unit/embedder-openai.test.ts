import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeEach, expect, it } from "vitest";
import openai, { retryAfterMs } from "../../plugins/embedder/openai.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { createLogger, silentLogger } from "../../runtime/log.ts";
import { cosine, testEmbedder } from "../conformance/embedder.ts";

const DIMS = 16;
const KEY = "sk-test-SECRET-0123456789";

/** Deterministic, deliberately unnormalised vector for a text (FNV-1a seed, xorshift). */
function fakeVector(text: string): number[] {
  let h = 2166136261;
  for (const c of text) h = Math.imul(h ^ c.codePointAt(0)!, 16777619) >>> 0;
  return Array.from({ length: DIMS }, () => {
    h ^= h << 13; h >>>= 0; h ^= h >>> 17; h ^= h << 5; h >>>= 0;
    return (h / 2 ** 32 - 0.5) * 3;
  });
}

/** One-shot behaviours for the next requests; when empty the server answers normally. */
type Behaviour = (res: http.ServerResponse) => void;
const script: Behaviour[] = [];
const seen: { auth?: string; body: { model: string; input: string[]; encoding_format?: string } }[] = [];

const server = http.createServer((req, res) => {
  let raw = "";
  req.on("data", (c) => (raw += c));
  req.on("end", () => {
    if (req.method !== "POST" || req.url !== "/v1/embeddings") return void res.writeHead(404).end();
    const body = JSON.parse(raw);
    seen.push({ auth: req.headers.authorization, body });
    const next = script.shift();
    if (next) return next(res);
    // Out of order on purpose: clients must sort by `index`.
    const data = body.input.map((t: string, index: number) => ({ object: "embedding", index, embedding: fakeVector(t) })).reverse();
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data, model: body.model }));
  });
});
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
afterAll(() => {
  server.closeAllConnections();
  server.close();
});
beforeEach(() => {
  script.length = 0;
  seen.length = 0;
});

const ctx = { baseDir: "/", log: silentLogger, env: { OPENAI_API_KEY: KEY } as Record<string, string | undefined> };
const make = async (opts: Record<string, unknown> = {}, c = ctx) =>
  openai.create(openai.options.parse({ base_url: baseUrl, model: "fake-embed", dims: DIMS, backoff_ms: 1, ...opts }), c);
const failure = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e);
const json = (status: number, body: unknown, headers: Record<string, string> = {}): Behaviour => (res) =>
  res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));

testEmbedder("openai (local server)", () => make());

it("openai sends model, input and the key from api_key_env as a Bearer token", async () => {
  await (await make()).embed(["hello"]);
  expect(seen[0]).toEqual({ auth: `Bearer ${KEY}`, body: { model: "fake-embed", input: ["hello"], encoding_format: "float" } });
  await (await make({ api_key_env: "UNSET_KEY_VAR" })).embed(["hello"]);
  expect(seen[1].auth).toBeUndefined();
});

it("openai discovers dims with one probe request when dims is unset", async () => {
  const e = await make({ dims: undefined });
  expect(e.dims).toBe(DIMS);
  expect(e.modelId).toBe(`openai:fake-embed:${DIMS}`);
  expect(seen.map((s) => s.body.input)).toEqual([["dimension probe"]]);
});

it("openai splits input into batch_size requests and keeps rows in input order", async () => {
  const texts = Array.from({ length: 200 }, (_, i) => `text ${i}`);
  const v = await (await make()).embed(texts);
  expect(seen.map((s) => s.body.input.length)).toEqual([96, 96, 8]);
  for (const i of [0, 95, 96, 199]) {
    const want = new Float32Array(fakeVector(texts[i]));
    const n = Math.hypot(...want);
    expect(cosine(v, i, want.map((x) => x / n), 0, DIMS)).toBeGreaterThan(0.99999);
  }
});

it("openai waits as long as a 429's Retry-After says, then succeeds", async () => {
  script.push(json(429, { error: { message: "Rate limit reached" } }, { "retry-after": "1" }));
  const t = performance.now();
  const v = await (await make()).embed(["a", "b"]);
  expect(performance.now() - t).toBeGreaterThan(900); // backoff_ms is 1: only Retry-After explains the wait
  expect(v.length).toBe(2 * DIMS);
  expect(seen).toHaveLength(2);
});

it("openai retries a 500 twice, then succeeds", async () => {
  script.push(json(500, { error: "boom" }), json(502, "bad gateway"));
  const lines: string[] = [];
  const log = createLogger({}, { write: (l) => lines.push(l) });
  const v = await (await make({}, { ...ctx, log })).embed(["a"]);
  expect(v.length).toBe(DIMS);
  expect(seen).toHaveLength(3);
  expect(lines.filter((l) => l.includes("retrying"))).toHaveLength(2);
  expect(lines.join("\n")).not.toContain(KEY);
});

it("openai fails at once on a 400 with the server's message, and never shows the key", async () => {
  script.push(json(400, { error: { message: `'input' is invalid for key ${KEY}` } }));
  const err = await failure((await make()).embed(["a"]));
  expect(seen).toHaveLength(1);
  expect(isApfaError(err, "embedder")).toBe(true);
  expect((err as Error).message).toMatch(/HTTP 400: 'input' is invalid/);
  expect((err as Error).message).not.toContain(KEY);
  script.push(json(401, { error: { message: "Incorrect API key provided" } }));
  expect((await failure((await make()).embed(["a"])) as Error).message).toMatch(/HTTP 401.*environment variable OPENAI_API_KEY/);
});

it("openai times out a request that never answers, retries it, then reports a timeout", async () => {
  script.push(() => {}, () => {});
  const err = await failure((await make({ timeout_ms: 200, max_retries: 1 })).embed(["a"]));
  expect(isApfaError(err, "timeout")).toBe(true);
  expect((err as Error).message).toMatch(/failed after 2 attempts: no response within timeout_ms=200/);
  expect(seen).toHaveLength(2);
});

it("openai retries a dropped connection", async () => {
  script.push((res) => res.socket?.destroy());
  expect((await (await make()).embed(["a"])).length).toBe(DIMS);
  expect(seen).toHaveLength(2);
});

it("openai gives up after max_retries on a persistent 503", async () => {
  script.push(...Array.from({ length: 5 }, () => json(503, { error: { message: "overloaded" } })));
  const err = await failure((await make({ max_retries: 2 })).embed(["a"]));
  expect((err as Error).message).toMatch(/failed after 3 attempts: HTTP 503: overloaded/);
  expect(seen).toHaveLength(3);
});

it("openai says which dims to set when the server's width differs", async () => {
  const err = await failure((await make({ dims: 8 })).embed(["a"]));
  expect((err as Error).message).toMatch(/returned 16-d vectors but dims is 8; set option dims: 16/);
});

it("openai rejects a response with the wrong number of embeddings", async () => {
  script.push(json(200, { data: [{ index: 0, embedding: fakeVector("x") }] }));
  const err = await failure((await make()).embed(["a", "b"]));
  expect((err as Error).message).toMatch(/returned 1 embeddings for 2 inputs/);
});

it("retryAfterMs reads delta-seconds and HTTP dates, and caps absurd waits", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  expect(retryAfterMs("2", now)).toBe(2000);
  expect(retryAfterMs("Thu, 01 Jan 2026 00:00:03 GMT", now)).toBe(3000);
  expect(retryAfterMs("Wed, 31 Dec 2025 23:59:00 GMT", now)).toBe(0);
  expect(retryAfterMs("86400", now)).toBe(120_000);
  expect(retryAfterMs("soon", now)).toBeUndefined();
  expect(retryAfterMs(null, now)).toBeUndefined();
});
