/**
 * Every bad request gets a JSON 4xx naming what was wrong, and nothing the client sends can produce a 5xx:
 * missing/forged/expired tokens 401, oversized bodies 413 (declared or streamed), wrong content type 415,
 * invalid JSON 400, out-of-range `k` 400 naming `k`, unknown routes 404.
 */
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JWT_SECRET, openServerFixture, post, type ServerFixture, type ServerHandle } from "../helpers/server.ts";

let fx: ServerFixture;
let srv: ServerHandle;
let token: string;
const statuses: number[] = [];

beforeAll(async () => {
  fx = await openServerFixture();
  await fx.publish({ count: 200, tag: "auth" });
  srv = await fx.start();
  token = await fx.token();
});
afterAll(async () => {
  await srv?.stop();
  await fx?.close();
});

const sign = (secret: string, claims: { exp?: number; nbf?: number } = {}) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({}).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject("t").setIssuedAt(now - 600)
    .setExpirationTime(claims.exp ?? now + 600).sign(new TextEncoder().encode(secret));
};

async function call(route: string, init: RequestInit = {}) {
  const res = await fetch(srv.url + route, init);
  statuses.push(res.status);
  const text = await res.text();
  expect(res.headers.get("content-type") ?? "", `${route} answered ${res.status} without JSON: ${text.slice(0, 200)}`).toMatch(/application\/json/);
  return { status: res.status, json: JSON.parse(text) as { error: string; message: string; field?: string }, headers: res.headers };
}

const searchBody = JSON.stringify({ query: "credit card debt", k: 3 });
const withAuth = (t: string, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${t}`, "content-type": "application/json", ...extra });

describe("server auth", () => {
  it("answers 200 with a valid token (the baseline the 401s are measured against)", async () => {
    const r = await post(srv.url, "/search", { query: "credit card debt", k: 3 }, { token });
    statuses.push(r.status);
    expect(r.status).toBe(200);
    expect(r.json.hits).toHaveLength(3);
  });

  it.each([
    ["no token", {} as Record<string, string>, "missing_token"],
    ["a non-Bearer header", { authorization: "Basic dXNlcjpwYXNz" }, "malformed_header"],
    ["garbage instead of a JWT", { authorization: "Bearer not.a.jwt" }, "malformed_token"],
  ])("401 JSON for %s", async (_name, headers, reason) => {
    for (const route of ["/search", "/generate-advice"]) {
      const r = await call(route, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: searchBody });
      expect(r.status).toBe(401);
      expect(r.json.error).toBe("unauthorized");
      expect(r.json.message).toBe(reason);
      expect(r.headers.get("www-authenticate")).toMatch(/^Bearer /);
    }
  });

  it("401 JSON for a token signed with another secret", async () => {
    const bad = await sign("a-completely-different-secret-of-40-chars!!");
    const r = await call("/search", { method: "POST", headers: withAuth(bad), body: searchBody });
    expect(r.status).toBe(401);
    expect(r.json).toMatchObject({ error: "unauthorized", message: "bad_signature" });
  });

  it("401 JSON for an expired token (beyond the 30 s clock tolerance)", async () => {
    const expired = await sign(JWT_SECRET, { exp: Math.floor(Date.now() / 1000) - 120 });
    const r = await call("/generate-advice", { method: "POST", headers: withAuth(expired), body: searchBody });
    expect(r.status).toBe(401);
    expect(r.json).toMatchObject({ error: "unauthorized", message: "expired" });
  });

  it("413 for a body over body_limit_bytes, declared or streamed without a length", async () => {
    const big = JSON.stringify({ query: "x".repeat(70_000), k: 3 });
    const declared = await call("/search", { method: "POST", headers: withAuth(token), body: big });
    expect(declared.status).toBe(413);
    expect(declared.json.error).toBe("payload_too_large");
    const bytes = new TextEncoder().encode(big);
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 8192) c.enqueue(bytes.subarray(i, i + 8192));
        c.close();
      },
    });
    const chunked = await call("/search", { method: "POST", headers: withAuth(token), body: stream, duplex: "half" } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(chunked.json.message).toMatch(/limited to 65536 bytes/);
  });

  it("reads a body streamed in pieces, split inside a multi-byte character, whole", async () => {
    const bytes = new TextEncoder().encode(JSON.stringify({ query: "crédit — prêt étudiant ".repeat(40), k: 2 }));
    const cut = bytes.indexOf(0xc3) + 1; // between the two bytes of "é"
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.subarray(0, cut));
        for (let i = cut; i < bytes.length; i += 100) c.enqueue(bytes.subarray(i, i + 100));
        c.close();
      },
    });
    const res = await fetch(srv.url + "/search", { method: "POST", headers: withAuth(token), body: stream, duplex: "half" } as RequestInit);
    statuses.push(res.status);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { hits: unknown[] }).hits).toHaveLength(2);
  });

  it("415 for a wrong or missing content type", async () => {
    for (const ct of ["text/plain", "application/x-www-form-urlencoded", ""]) {
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (ct) headers["content-type"] = ct;
      const r = await call("/search", { method: "POST", headers, body: searchBody });
      expect(r.status, `content-type ${JSON.stringify(ct)}`).toBe(415);
      expect(r.json.error).toBe("unsupported_media_type");
    }
  });

  it("400 for invalid JSON, an empty body and a non-object body", async () => {
    const cases: Array<[string, string]> = [["{\"query\": ", "invalid_json"], ["", "invalid_json"], ["[1,2]", "invalid_body"], ["null", "invalid_body"]];
    for (const [body, error] of cases) {
      const r = await call("/generate-advice", { method: "POST", headers: withAuth(token), body });
      expect(r.status, `body ${JSON.stringify(body)}`).toBe(400);
      expect(r.json.error).toBe(error);
    }
  });

  it("400 naming `k` when k is out of range or not an integer; naming the field for other bad fields", async () => {
    for (const k of [0, -1, 51, 1.5, "3", 1e9]) {
      const r = await call("/search", { method: "POST", headers: withAuth(token), body: JSON.stringify({ query: "loan", k }) });
      expect(r.status, `k=${JSON.stringify(k)}`).toBe(400);
      expect(r.json.field).toBe("k");
      expect(r.json.message).toMatch(/^k: /);
    }
    const empty = await call("/search", { method: "POST", headers: withAuth(token), body: JSON.stringify({ query: "   " }) });
    expect(empty).toMatchObject({ status: 400, json: { field: "query" } });
    const extra = await call("/search", { method: "POST", headers: withAuth(token), body: JSON.stringify({ query: "loan", top: 3 }) });
    expect(extra).toMatchObject({ status: 400, json: { field: "top", message: 'unknown field "top"' } });
  });

  it("404 JSON for unknown routes, 405 or 404 JSON for wrong methods", async () => {
    const r = await call("/nope", { method: "GET" });
    expect(r.status).toBe(404);
    expect(r.json).toMatchObject({ error: "not_found", message: "no route GET /nope" });
    const p = await call("/search/extra", { method: "POST", headers: withAuth(token), body: searchBody });
    expect(p.status).toBe(404);
    const m = await call("/search", { method: "GET" });
    expect([404, 405]).toContain(m.status);
  });

  it("never answered 5xx, and counted the client errors in /metrics by status", async () => {
    expect(statuses.length).toBeGreaterThan(20);
    expect(statuses.filter((s) => s >= 500)).toEqual([]);
    const text = await (await fetch(srv.url + "/metrics")).text();
    expect(text).toMatch(/apfa_requests_total\{route="search",status="401"\} [1-9]/);
    expect(text).toMatch(/apfa_requests_total\{route="search",status="413"\} 2/);
    expect(text).not.toMatch(/status="5\d\d"/);
    expect(srv.logs.filter((l) => l.level === "error")).toEqual([]);
  });
});
