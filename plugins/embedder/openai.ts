/**
 * `openai` embedder: any OpenAI-compatible `POST {base_url}/embeddings` (OpenAI, Hugging Face TEI, vLLM,
 * Ollama, LiteLLM). Texts go in batches of `batch_size`; 429, 5xx, network errors and timeouts are retried
 * with exponential backoff that honours `Retry-After`; other 4xx fail at once with the server's message.
 * The API key is read from the environment variable `api_key_env`, sent only in the Authorization header
 * and never logged. Rows are re-normalised here because not every server returns unit vectors.
 * @module
 */
import { z } from "zod";
import { definePlugin, type Embedder } from "../../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../../runtime/errors.ts";
import { redact } from "../../runtime/log.ts";
import { normalizeRows } from "./_vectors.ts";

export const NAME = "openai";
const where = `stage:embedder:${NAME}`;

export interface OpenaiOptions {
  /** API root; `/embeddings` is appended. @default "https://api.openai.com/v1" */
  base_url: string;
  /** Model name sent in the request, e.g. text-embedding-3-small or the model a TEI/vLLM server serves. */
  model: string;
  /** Vector width. When unset, `create` sends one probe request and takes the width of its answer. */
  dims?: number;
  /** Environment variable holding the API key; unset variable = no Authorization header. @default "OPENAI_API_KEY" */
  api_key_env: string;
  /** Texts per request (OpenAI allows 2048; TEI defaults to 32, vLLM to its max batch). @default 96 */
  batch_size: number;
  /** Longest text in characters sent; about 2k tokens, within every common embedding model's limit. @default 8192 */
  max_chars: number;
  /** Deadline per request attempt in ms. @default 60000 */
  timeout_ms: number;
  /** Retries after the first attempt for 429, 5xx, network errors and timeouts. @default 5 */
  max_retries: number;
  /** First backoff in ms, doubled each retry (with jitter) when the server sends no Retry-After. @default 500 */
  backoff_ms: number;
}

const options = z.strictObject({
  base_url: z.url().default("https://api.openai.com/v1").describe("API root; /embeddings is appended"),
  model: z.string().min(1).describe("Model name sent in the request"),
  dims: z.int().min(1).max(65_536).optional().describe("Vector width; when unset, discovered with one probe request at startup"),
  api_key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default("OPENAI_API_KEY")
    .describe("Environment variable holding the API key; unset = no Authorization header (local servers)"),
  batch_size: z.int().min(1).max(2048).default(96).describe("Texts per request"),
  max_chars: z.int().min(16).max(1_000_000).default(8192).describe("Longest text in characters sent"),
  timeout_ms: z.int().min(100).max(600_000).default(60_000).describe("Deadline per request attempt in ms"),
  max_retries: z.int().min(0).max(20).default(5).describe("Retries for 429, 5xx, network errors and timeouts"),
  backoff_ms: z.int().min(0).max(60_000).default(500).describe("First backoff in ms, doubled each retry"),
});

/** Longest wait we accept from a Retry-After header, so a bogus value cannot stall a run for hours. */
const MAX_RETRY_AFTER_MS = 120_000;

/** Retry-After as delta-seconds or an HTTP date, in ms from now; undefined when absent or unparsable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const secs = Number(header.trim());
  const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(header) - now;
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS) : undefined;
}

/** A failure worth retrying, with the server's requested wait if it gave one. */
interface Transient {
  transient: string;
  waitMs?: number;
}

/** Reads `embedding` as numbers or, when a server insists on base64, as little-endian float32. */
function vector(e: unknown): ArrayLike<number> | null {
  if (Array.isArray(e)) return e as number[];
  if (typeof e === "string") {
    const b = Uint8Array.from(atob(e), (c) => c.charCodeAt(0));
    return new Float32Array(b.buffer, 0, b.byteLength >> 2);
  }
  return null;
}

function serverMessage(body: string): string {
  try {
    const j = JSON.parse(body) as { error?: { message?: string } | string; message?: string };
    const m = typeof j.error === "string" ? j.error : j.error?.message ?? j.message;
    if (m) return String(m).slice(0, 300);
  } catch { /* not JSON: fall through to the raw text */ }
  return body.slice(0, 300) || "(empty body)";
}

export default definePlugin({
  kind: "embedder",
  name: NAME,
  description: "Any OpenAI-compatible /embeddings endpoint (OpenAI, TEI, vLLM, Ollama)",
  options,
  identity: (opts: OpenaiOptions) => ({ base_url: opts.base_url, model: opts.model, dims: opts.dims ?? null, max_chars: opts.max_chars }),
  async create(opts: OpenaiOptions, ctx): Promise<Embedder> {
    const url = `${opts.base_url.replace(/\/+$/, "")}/embeddings`;
    const shownUrl = String(redact(url));
    const key = ctx.env[opts.api_key_env];
    const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
    if (key) headers.authorization = `Bearer ${key}`;
    const closed = new AbortController();
    const scrub = (s: string) => (key ? s.split(key).join("***") : s);

    /** One attempt: rows as a raw `n × width` matrix, or a Transient to retry. */
    async function attempt(texts: string[]): Promise<{ rows: Float32Array; width: number } | Transient> {
      let res: Response;
      let body: string;
      try {
        const signal = AbortSignal.any([closed.signal, AbortSignal.timeout(opts.timeout_ms)]);
        res = await fetch(url, { method: "POST", headers, signal, body: JSON.stringify({ model: opts.model, input: texts, encoding_format: "float" }) });
        body = await res.text();
      } catch (err) {
        if (closed.signal.aborted) throw new ApfaError("embedder", "embedder closed during a request", { where });
        const timedOut = (err as Error).name === "TimeoutError";
        return { transient: timedOut ? `no response within timeout_ms=${opts.timeout_ms}` : `network error: ${scrub(errorMessage(err))}` };
      }
      if (res.status === 429 || res.status >= 500) {
        return { transient: `HTTP ${res.status}: ${scrub(serverMessage(body))}`, waitMs: retryAfterMs(res.headers.get("retry-after")) };
      }
      if (!res.ok) {
        const hint = res.status === 401 || res.status === 403 ? `; check the key in the environment variable ${opts.api_key_env}` : "";
        throw new ApfaError("embedder", `POST ${shownUrl} failed with HTTP ${res.status}: ${scrub(serverMessage(body))}${hint}`, { where });
      }
      let data: { index?: number; embedding?: unknown }[];
      try {
        data = (JSON.parse(body) as { data: typeof data }).data;
        if (!Array.isArray(data)) throw new Error("no `data` array");
      } catch (err) {
        throw new ApfaError("embedder", `POST ${shownUrl} returned an unexpected body (${errorMessage(err)}): ${body.slice(0, 200)}`, { where });
      }
      if (data.length !== texts.length) {
        throw new ApfaError("embedder", `POST ${shownUrl} returned ${data.length} embeddings for ${texts.length} inputs`, { where });
      }
      // The spec does not promise response order; `index` does.
      const sorted = [...data].sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
      const width = vector(sorted[0].embedding)?.length ?? 0;
      const rows = new Float32Array(texts.length * width);
      sorted.forEach((d, i) => {
        const v = vector(d.embedding);
        if (d.index !== i || !v || v.length !== width || width === 0) {
          throw new ApfaError("embedder", `POST ${shownUrl} returned a malformed item at index ${d.index ?? i} ` +
            `(expected indexes 0..${texts.length - 1}, each a ${width}-number embedding)`, { where });
        }
        rows.set(v, i * width);
      });
      return { rows, width };
    }

    async function request(texts: string[]): Promise<{ rows: Float32Array; width: number }> {
      for (let retry = 0; ; retry++) {
        const r = await attempt(texts);
        if (!("transient" in r)) return r;
        if (retry >= opts.max_retries) {
          throw new ApfaError(r.transient.startsWith("no response") ? "timeout" : "embedder",
            `POST ${shownUrl} failed after ${retry + 1} attempts: ${r.transient}`, { where });
        }
        const wait = r.waitMs ?? opts.backoff_ms * 2 ** retry * (0.75 + Math.random() * 0.5);
        ctx.log.warn("embedding request failed, retrying", { url: shownUrl, reason: r.transient, retry: retry + 1, wait_ms: Math.round(wait) });
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            closed.signal.removeEventListener("abort", done);
            resolve();
          };
          const timer = setTimeout(done, wait);
          closed.signal.addEventListener("abort", done);
        });
        if (closed.signal.aborted) throw new ApfaError("embedder", "embedder closed while waiting to retry", { where });
      }
    }

    const dims = opts.dims ?? (await request(["dimension probe"])).width;
    return {
      // Not the host: the same model behind another proxy gives the same vectors. The width is part of it
      // because text-embedding-3 models can be served shortened.
      modelId: `openai:${opts.model}:${dims}`,
      dims,
      maxChars: opts.max_chars,
      async embed(texts) {
        const out = new Float32Array(texts.length * dims);
        for (let i = 0; i < texts.length; i += opts.batch_size) {
          const batch = texts.slice(i, i + opts.batch_size).map((t) => t.slice(0, opts.max_chars));
          const { rows, width } = await request(batch);
          if (width !== dims) {
            throw new ApfaError("embedder", `model "${opts.model}" returned ${width}-d vectors but dims is ${dims}; ` +
              `set option dims: ${width} (or remove it to discover the width)`, { where });
          }
          out.set(rows, i * dims);
        }
        return normalizeRows(out, dims);
      },
      async close() {
        closed.abort();
      },
    };
  },
});
