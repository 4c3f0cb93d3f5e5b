/**
 * The hosted LLM is the one boundary we cannot run, so a local node:http server speaks the OpenAI
 * chat/completions protocol, and each test picks how it behaves.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import openai from "../../plugins/generator/openai.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { citations, SAMPLE_DOCS, SAMPLE_QUERY, testGenerator } from "../conformance/generator.ts";

const KEY = `sk-test-${Math.random().toString(36).slice(2)}-secret`;
type Mode = "ok" | "invented" | "500" | "slow" | "garbage" | "shape" | "empty";
let mode: Mode = "ok";
let calls: { headers: http.IncomingHttpHeaders; body: any; url: string }[] = [];

const reply = (content: string | null) => JSON.stringify({ id: "c1", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content } }] });

const server = http.createServer((req, res) => {
  let raw = "";
  req.on("data", (c) => (raw += c));
  req.on("end", () => {
    const body = JSON.parse(raw);
    calls.push({ headers: req.headers, body, url: req.url ?? "" });
    const firstId = /\[([^\]]+)\]/.exec(body.messages[1].content)?.[1] ?? "none";
    const json = (status: number, s: string) => res.writeHead(status, { "content-type": "application/json" }).end(s);
    switch (mode) {
      case "ok": return json(200, reply(`Go with the first option [${firstId}]. This is not financial advice.`));
      case "invented": return json(200, reply(`Pick [${firstId}] over [loan-made-up], see [docs](https://x.test).`));
      // Like OpenAI's 401/500 bodies, which can echo the key back.
      case "500": return json(500, JSON.stringify({ error: { message: `Server error for key ${KEY}` } }));
      case "slow": return void setTimeout(() => json(200, reply("too late [x]")), 3000);
      case "garbage": return json(200, "{not json at all");
      case "shape": return json(200, JSON.stringify({ result: "hello" }));
      case "empty": return json(200, reply("   "));
    }
  });
});

let baseUrl = "";
beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});
beforeEach(() => {
  mode = "ok";
  calls = [];
});

const make = async (o: Record<string, unknown> = {}, env: Record<string, string> = { OPENAI_API_KEY: KEY }) =>
  openai.create(openai.options.parse({ base_url: baseUrl, model: "test-model", timeout_ms: 400, ...o }), { baseDir: "/", log: silentLogger, env });
const gen = async (o?: Record<string, unknown>) => (await make(o)).generate({ query: SAMPLE_QUERY, docs: SAMPLE_DOCS });

testGenerator("openai (local OpenAI-protocol server)", () => make(), { deterministic: false });

it("openai sends the key only in Authorization and the documents in the prompt, and returns the model's answer", async () => {
  const out = await gen({ max_tokens: 123, temperature: 0 });
  expect(out).toEqual({ advice: "Go with the first option [loan-flex-84]. This is not financial advice.", generator: "openai" });
  expect(calls).toHaveLength(1);
  const { headers, body, url } = calls[0];
  expect(url).toBe("/v1/chat/completions");
  expect(headers.authorization).toBe(`Bearer ${KEY}`);
  expect(body).toMatchObject({ model: "test-model", max_tokens: 123, temperature: 0 });
  expect(body.messages[0].role).toBe("system");
  for (const d of SAMPLE_DOCS) expect(body.messages[1].content).toContain(`[${d.id}]`);
  expect(body.messages[1].content).toContain(SAMPLE_QUERY);
  expect(JSON.stringify(body)).not.toContain(KEY);
});

it("openai drops citations of ids it was not given and adds the disclaimer when the model forgot it", async () => {
  mode = "invented";
  const out = await gen();
  expect(citations(out.advice)).toEqual(["loan-flex-84"]);
  expect(out.advice).toContain("[docs](https://x.test)");
  expect(out.advice).toMatch(/not financial advice/);
});

for (const [m, reason] of [["500", /^http 500$/], ["garbage", /malformed/], ["shape", /malformed/], ["empty", /empty content/]] as const) {
  it(`openai falls back to the template on ${m} without leaking the key`, async () => {
    mode = m;
    const out = await gen();
    expect(out.generator).toBe("template");
    expect(out.fallback_reason).toMatch(reason);
    expect(out.advice).toMatch(/Lowest APR: Everyday Loan \[loan-everyday\]/);
    expect(JSON.stringify(out)).not.toContain(KEY);
  });
}

it("openai falls back on timeout, within the deadline", async () => {
  mode = "slow";
  // The slow endpoint does answer (after 3 s): a template answer with this reason is the deadline firing.
  const out = await gen({ timeout_ms: 300 });
  expect(out).toMatchObject({ generator: "template", fallback_reason: "timeout after 300 ms" });
});

it("openai falls back when the endpoint is unreachable", async () => {
  const out = await gen({ base_url: "http://127.0.0.1:1/v1" });
  expect(out.generator).toBe("template");
  expect(out.fallback_reason).toMatch(/fetch failed|ECONNREFUSED/);
});

it("openai honours the request's AbortSignal instead of falling back", async () => {
  mode = "slow";
  const ctrl = new AbortController();
  setTimeout(() => ctrl.abort(), 100);
  // Ignoring the signal would return the slow endpoint's answer after 3 s, not an error.
  const err = await (await make({ timeout_ms: 5000 })).generate({ query: SAMPLE_QUERY, docs: SAMPLE_DOCS, signal: ctrl.signal }).catch((e) => e);
  expect(isApfaError(err, "timeout")).toBe(true);
  expect(err.status).toBe(499);
  expect(String(err.message)).not.toContain(KEY);
});

it("openai answers zero documents without calling the model", async () => {
  const out = await (await make()).generate({ query: "anything", docs: [] });
  expect(calls).toHaveLength(0);
  expect(out.generator).toBe("template");
  expect(out.advice).toMatch(/could not find/);
});

it("openai sends no Authorization header when the key variable is unset (local servers)", async () => {
  const out = await (await make({ api_key_env: "APFA_TEST_UNSET_KEY" }, {})).generate({ query: SAMPLE_QUERY, docs: SAMPLE_DOCS });
  expect(out.generator).toBe("openai");
  expect(calls[0].headers.authorization).toBeUndefined();
});

it("openai options reject a key written into the config and unknown fields", () => {
  expect(openai.options.safeParse({ api_key: KEY }).success).toBe(false);
  expect(openai.options.parse({})).toMatchObject({ api_key_env: "OPENAI_API_KEY", timeout_ms: 15000 });
});

it("openai puts the question's stated constraints and each product's eligibility in the prompt", async () => {
  const out = await (await make()).generate({ query: "I have a 650 credit score and need $45,000", docs: SAMPLE_DOCS });
  expect(out.generator).toBe("openai");
  const prompt: string = calls[0].body.messages[1].content;
  expect(prompt).toContain("Stated by the person: credit score 650; borrow $45,000");
  expect(prompt).toContain(`Structured facts: {"credit_score":650,"amount":45000}`);
  expect(prompt).toMatch(/\[loan-flex-84\] open to this person: a credit score of 650 meets its minimum of 620; covers \$45,000/);
  expect(prompt).toMatch(/\[loan-everyday\] NOT open to this person: a credit score of 650 is below its minimum of 700; it lends at most \$40,000/);
  // No stated constraints: the prompt is as before.
  calls = [];
  await (await make()).generate({ query: "tell me about loans", docs: SAMPLE_DOCS });
  expect(calls[0].body.messages[1].content).not.toContain("Stated by the person");
});
