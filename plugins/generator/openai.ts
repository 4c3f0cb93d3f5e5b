/**
 * `openai` generator: any OpenAI-compatible `POST {base_url}/chat/completions` (OpenAI, Azure-style proxies,
 * vLLM, llama.cpp, Ollama). The model sees only the retrieved documents and must cite them as `[id]`.
 * An answer is never lost to the LLM: on a timeout, a non-2xx, a malformed body or empty content the
 * template generator answers instead and `fallback_reason` says why. The API key is read from the
 * environment, sent only in the Authorization header and scrubbed from every message we produce.
 * @module
 */
import { z } from "zod";
import { type Advice, definePlugin, type Generator, type RetrievedDoc, type StatedFacts } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { redact } from "../../runtime/log.ts";
import { checkEligibility, describeFacts, extractFacts, hasFacts, isProduct } from "../../runtime/question.ts";
import { DEFAULT_DISCLAIMER, renderAdvice } from "./template.ts";

export const NAME = "openai";

export const DEFAULT_SYSTEM_PROMPT = "You are a careful personal-finance assistant. Answer the question using only the documents " +
  "provided; never invent products, rates or figures. Cite every document you rely on by its id in square brackets, " +
  "e.g. [loan-12]. Compare products on what the question asks about (rate, term, amount, credit score). If the " +
  "documents do not answer the question, say so plainly. Keep the answer under 200 words.";

export interface OpenaiOptions {
  /** API root; `/chat/completions` is appended. @default "https://api.openai.com/v1" */
  base_url: string;
  /** Model name sent in the request. @default "gpt-4o-mini" */
  model: string;
  /** Environment variable holding the API key (never put the key itself in pipeline.yaml). @default "OPENAI_API_KEY" */
  api_key_env: string;
  /** Whole-request deadline, after which the template answers. @default 15000 */
  timeout_ms: number;
  /** Upper bound on the answer's length in tokens. @default 400 */
  max_tokens: number;
  /** Sampling temperature. @default 0.2 */
  temperature: number;
  /** System message. @default DEFAULT_SYSTEM_PROMPT */
  system_prompt: string;
  /** Most documents put in the prompt. @default 8 */
  max_docs: number;
}

const options = z.strictObject({
  base_url: z.url().default("https://api.openai.com/v1").describe("API root; /chat/completions is appended"),
  model: z.string().min(1).default("gpt-4o-mini").describe("Model name sent in the request"),
  api_key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default("OPENAI_API_KEY")
    .describe("Environment variable holding the API key; unset = no Authorization header (local servers)"),
  timeout_ms: z.int().min(100).max(600_000).default(15_000).describe("Whole-request deadline in ms before falling back to the template"),
  max_tokens: z.int().min(1).max(32_768).default(400).describe("Upper bound on the answer's length in tokens"),
  temperature: z.number().min(0).max(2).default(0.2).describe("Sampling temperature"),
  system_prompt: z.string().min(1).default(DEFAULT_SYSTEM_PROMPT).describe("System message"),
  max_docs: z.int().min(1).max(100).default(8).describe("Most documents put in the prompt"),
});

const completion = z.object({
  choices: z.array(z.object({ message: z.object({ content: z.string().nullish() }) })).min(1),
});

/**
 * The user message: the question; the constraints it states, if any, with each product's eligibility worked out
 * (the same facts the template answers from, so the model need not do the arithmetic); then each document with
 * its id, score, text and metadata.
 */
export function buildPrompt(query: string, docs: RetrievedDoc[], facts: StatedFacts = extractFacts(query)): string {
  const parts = docs.map((d) => {
    const text = d.text.length > 2000 ? d.text.slice(0, 2000) + "…" : d.text;
    const meta = JSON.stringify(d.metadata);
    return `[${d.id}] (relevance ${d.score.toFixed(3)})\n${text}\nmetadata: ${meta.length > 1000 ? meta.slice(0, 1000) + "…" : meta}`;
  });
  let stated = "";
  if (hasFacts(facts)) {
    const lines = docs.filter((d) => isProduct(d.metadata)).map((d) => {
      const e = checkEligibility(d.metadata, facts);
      return e.fails.length ? `- [${d.id}] NOT open to this person: ${e.fails.join("; ")}` : `- [${d.id}] open to this person${e.meets.length ? `: ${e.meets.join("; ")}` : ""}`;
    });
    stated = `\n\nStated by the person: ${describeFacts(facts)}\nStructured facts: ${JSON.stringify(facts)}\n` +
      `Eligibility (recommend only products open to this person; if none is, say so and name the nearest):\n${lines.join("\n") || "- no loan products retrieved"}`;
  }
  return `Question: ${query}${stated}\n\nDocuments:\n\n${parts.join("\n\n")}`;
}

/** Drops `[x]` citations of ids we did not give the model (it sometimes invents them); links `[t](u)` stay. */
function keepKnownCitations(text: string, ids: Set<string>): string {
  return text.replace(/\s?\[([^\]\s]{1,200})\](?!\()/g, (m, id: string) => (ids.has(id) ? m : ""));
}

export default definePlugin({
  kind: "generator",
  name: NAME,
  description: "Any OpenAI-compatible chat/completions endpoint, falling back to the template generator on failure",
  options,
  create(opts: OpenaiOptions, ctx): Generator {
    const key = ctx.env[opts.api_key_env] ?? "";
    const url = opts.base_url.replace(/\/+$/, "") + "/chat/completions";
    const log = ctx.log.child({ generator: NAME, model: opts.model });
    if (!key) log.warn(`${opts.api_key_env} is not set; calling ${redact(url)} without an Authorization header`);
    const scrub = (s: string) => String(redact(key ? s.split(key).join("***") : s));

    async function complete(query: string, docs: RetrievedDoc[], facts: StatedFacts, signal: AbortSignal): Promise<string> {
      const res = await fetch(url, {
        method: "POST",
        signal,
        headers: { "content-type": "application/json", accept: "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
        body: JSON.stringify({
          model: opts.model,
          temperature: opts.temperature,
          max_tokens: opts.max_tokens,
          messages: [{ role: "system", content: opts.system_prompt }, { role: "user", content: buildPrompt(query, docs, facts) }],
        }),
      });
      if (!res.ok) {
        // The body may echo part of the key (OpenAI's 401 does); it goes to the debug log only, scrubbed.
        log.debug("chat/completions failed", { status: res.status, body: scrub((await res.text().catch(() => "")).slice(0, 500)) });
        throw new Error(`http ${res.status}`);
      }
      let body: unknown;
      try {
        body = await res.json();
      } catch (err) {
        if (signal.aborted) throw err;
        throw new Error("malformed response: not JSON");
      }
      const parsed = completion.safeParse(body);
      if (!parsed.success) throw new Error("malformed response: no choices[0].message");
      const content = parsed.data.choices[0].message.content?.trim();
      if (!content) throw new Error("empty content");
      return content;
    }

    return {
      async generate({ query, docs, facts: given, signal }): Promise<Advice> {
        const used = docs.slice(0, opts.max_docs);
        const facts = given ?? extractFacts(query);
        // Nothing retrieved: the grounded answer is "nothing found", which needs no LLM call.
        if (!used.length) return { advice: renderAdvice(query, used), generator: "template" };
        if (signal?.aborted) throw new ApfaError("timeout", "request aborted", { cause: signal.reason, status: 499, where: `generator:${NAME}` });
        const deadline = AbortSignal.timeout(opts.timeout_ms);
        const combined = signal ? AbortSignal.any([signal, deadline]) : deadline;
        try {
          let text = keepKnownCitations(await complete(query, used, facts, combined), new Set(used.map((d) => d.id)));
          if (!/not (financial|investment) advice/i.test(text)) text += `\n\n${DEFAULT_DISCLAIMER}`;
          return { advice: text, generator: NAME };
        } catch (err) {
          // The caller went away: nobody reads a fallback, so stop here.
          if (signal?.aborted) throw new ApfaError("timeout", "request aborted", { cause: signal.reason, status: 499, where: `generator:${NAME}` });
          const reason = deadline.aborted ? `timeout after ${opts.timeout_ms} ms`
            : scrub(err instanceof Error ? (err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message) : String(err));
          log.warn("LLM call failed; answering with the template generator", { reason });
          return { advice: renderAdvice(query, used, {}, facts), generator: "template", fallback_reason: reason };
        }
      },
    };
  },
});
