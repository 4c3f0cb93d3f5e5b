/**
 * Overload is an answer: with one request active and one waiting (`server.overload` max_active 1,
 * max_queued 1), the next search/advice request gets a 503 with `Retry-After` at once, counted in
 * `apfa_overload_rejected_total`; the held ones then finish with 200, and the cheap routes never queue.
 * A question already answered is served from the cache without a slot even then, and one asked twice while
 * it is being worked on is worked on once.
 * The LLM is a local server speaking the OpenAI protocol that holds each answer until the test lets it go,
 * so "active" and "waiting" are observed (its request log, the `apfa_requests_queued` gauge), not timed.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, metric, openServerFixture, post, until, type ServerFixture } from "../helpers/server.ts";

const held: http.ServerResponse[] = [];
/** LLM requests whose client (the apfa server) went away before they were answered. */
let cancelled = 0;
const llm = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => held.push(res));
  res.on("close", () => {
    if (!res.writableEnded) cancelled++;
  });
});
const answer = (res: http.ServerResponse) =>
  res.writeHead(200, { "content-type": "application/json" })
    .end(JSON.stringify({ id: "c", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "Compare the options. This is not financial advice." } }] }));

let fx: ServerFixture;

beforeAll(async () => {
  await new Promise<void>((r) => llm.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(llm.address() as AddressInfo).port}/v1`;
  fx = await openServerFixture({ overrides: { stages: { generator: { plugin: "openai", options: { base_url: base, timeout_ms: 600_000 } } } } });
  await fx.publish({ count: 50 });
}, 90_000);
afterAll(async () => {
  for (const res of held) if (!res.writableEnded) answer(res);
  llm.closeAllConnections();
  await new Promise((r) => llm.close(r));
  await fx?.close();
});

describe("overload", () => {
  it("answers past the bounded queue with a fast 503 + Retry-After, counted, and serves the held requests", async () => {
    const srv = await fx.start({ server: { overload: { max_active: 1, max_queued: 1, max_wait_ms: 600_000, max_searching: 2, retry_after_s: 7 } } });
    try {
      const token = await fx.token();
      const advice = (query: string) => post(srv.url, "/generate-advice", { query, k: 3 }, { token });
      const a = advice("first question about loans");
      await until("the first request to reach the LLM (active)", () => held.length === 1);
      const b = advice("second question about savings");
      await until("the second request to wait for a slot", async () => (await metric(srv.url, /^apfa_requests_queued$/)) === 1);
      expect(await metric(srv.url, /^apfa_requests_active$/)).toBe(1);

      // Full: refused at once, for either gated route, without touching the LLM.
      const c = await advice("third question");
      expect(c.status).toBe(503);
      expect(c.headers.get("retry-after")).toBe("7");
      expect(c.json).toMatchObject({ error: "overloaded" });
      expect(c.json.message).toMatch(/retry in 7 s/);
      const s = await post(srv.url, "/search", { query: "mortgage", k: 3 }, { token });
      expect(s.status).toBe(503);
      expect(held).toHaveLength(1);
      expect(await metric(srv.url, /^apfa_overload_rejected_total\{route="generate-advice",reason="queue_full"\}$/)).toBe(1);
      expect(await metric(srv.url, /^apfa_overload_rejected_total\{route="search",reason="queue_full"\}$/)).toBe(1);
      expect(await metric(srv.url, /^apfa_requests_total\{route="generate-advice",status="503"\}$/)).toBe(1);
      // The cheap routes are not queued behind the expensive ones.
      expect((await getJson(srv.url, "/ready")).status).toBe(200);

      answer(held[0]);
      expect((await a).status).toBe(200);
      await until("the waiting request to reach the LLM", () => held.length === 2);
      answer(held[1]);
      expect((await b).status).toBe(200);
      expect(await metric(srv.url, /^apfa_requests_queued$/)).toBe(0);
      expect(await metric(srv.url, /^apfa_requests_active$/)).toBe(0);
      // And a slot is free again.
      const d = await post(srv.url, "/search", { query: "mortgage", k: 3 }, { token });
      expect(d.status).toBe(200);

      // Full again: an answer already cached costs no slot, and an identical question in flight is shared.
      const e = advice("fourth question about credit cards");
      await until("the fourth request to reach the LLM (active)", () => held.length === 3);
      const f = advice("fifth question about pensions");
      await until("the fifth request to wait for a slot", async () => (await metric(srv.url, /^apfa_requests_queued$/)) === 1);
      const again = await advice("first question about loans");
      expect(again.status).toBe(200);
      expect(again.json).toMatchObject({ cached: true });
      expect((await post(srv.url, "/search", { query: "mortgage", k: 3 }, { token })).json).toMatchObject({ cached: true });
      const twin = advice("fourth question about credit cards");
      await until("the repeated fourth question to join the one in flight", async () => (await metric(srv.url, /^apfa_requests_coalesced_total\{route="generate-advice"\}$/)) === 1);
      expect(await metric(srv.url, /^apfa_overload_rejected_total\{route="generate-advice",reason="queue_full"\}$/)).toBe(1);
      answer(held[2]);
      const [e1, t1] = [await e, await twin];
      expect(e1.status).toBe(200);
      expect(t1.status).toBe(200);
      expect(t1.json.advice).toBe(e1.json.advice);
      await until("the fifth request to reach the LLM", () => held.length === 4);
      answer(held[3]);
      expect((await f).status).toBe(200);
      expect(held).toHaveLength(4); // the twin asked the LLM nothing

      // A shared computation outlives the request that started it while another still waits for it, and is
      // cancelled once every waiting request has gone.
      const leave = (query: string) => {
        const ctl = new AbortController();
        const res = post(srv.url, "/generate-advice", { query, k: 3 }, { token, signal: ctl.signal }).catch(() => undefined);
        return { abort: () => ctl.abort(), res };
      };
      const first = leave("sixth question about mortgages");
      await until("the sixth request to reach the LLM", () => held.length === 5);
      const stays = advice("sixth question about mortgages");
      await until("the repeated sixth question to join", async () => (await metric(srv.url, /^apfa_requests_coalesced_total\{route="generate-advice"\}$/)) === 2);
      first.abort();
      await first.res;
      await metric(srv.url, /^apfa_requests_active$/); // a round trip after the abort reached the server
      expect(cancelled).toBe(0);
      answer(held[4]);
      const kept = await stays;
      expect(kept.status).toBe(200);
      expect(kept.json.advice).toMatch(/not financial advice/);

      const a7 = leave("seventh question about loans");
      await until("the seventh request to reach the LLM", () => held.length === 6);
      const b7 = leave("seventh question about loans");
      await until("the repeated seventh question to join", async () => (await metric(srv.url, /^apfa_requests_coalesced_total\{route="generate-advice"\}$/)) === 3);
      a7.abort();
      b7.abort();
      await until("the LLM call to be cancelled once both requests left", () => cancelled === 1);
    } finally {
      await srv.stop();
    }
  });
});
