/**
 * `apfa token`. The full path loads and validates pipeline.yaml (yaml + zod) and signs with jose, and then
 * stamps the file (runtime/config/token-stamp.ts). While the file, the environment variables it references
 * and the loader are unchanged, the quick path reads only `server.auth` with a small reader and signs the
 * same JWT with node:crypto's HMAC: a start-up close to a bare `node`. Anything it does not handle — no stamp,
 * an edit, an asymmetric key, `mode: none`, a bad flag — goes the full path, which reports what is wrong.
 * Only light modules are imported at the top; the full path's are loaded when it runs.
 * @module
 */
import { Buffer } from "node:buffer";
import { createHmac } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { resolveAuth } from "../../server/auth-config.ts";
import { type AuthConfig, checkTokenRequest, resolveAuthRules } from "../../server/auth-rules.ts";
import { AUTH_DEFAULTS, DEFAULT_HOST, readAuthBlock } from "../config/auth-block.ts";
import { interpolate } from "../config/env-ref.ts";
import type { PipelineConfig } from "../config/schema.ts";
import { stampMismatch, writeStamp } from "../config/token-stamp.ts";
import type { Command } from "./common.ts";

type Env = Record<string, string | undefined>;

export interface TokenRequest {
  sub: string;
  ttl_s: number;
}

/** A minted token (null: `server.auth.mode` is none), and which path minted it (and why not the quick one). */
export interface TokenResult {
  token: string | null;
  path: "quick" | "full";
  reason?: string;
}

/** Mints the token `apfa token` prints; throws (with the full, located problems printed) on a bad config. */
export async function mintCliToken(file: string, req: TokenRequest, env: Env = process.env as Env): Promise<TokenResult> {
  const abs = path.resolve(file);
  let bytes: Buffer | undefined;
  try {
    bytes = fs.readFileSync(abs);
  } catch {
    // The full loader reports the unreadable file.
  }
  const text = bytes?.toString("utf8");
  const quick = bytes && text !== undefined ? quickToken(abs, bytes, text, req, env) : { reason: "cannot read the file" };
  if ("token" in quick) return { token: quick.token, path: "quick" };
  return { token: await fullToken(file, abs, bytes, text, req, env), path: "full", reason: quick.reason };
}

function quickToken(abs: string, bytes: Buffer, text: string, req: TokenRequest, env: Env): { token: string } | { reason: string } {
  const mismatch = stampMismatch(abs, bytes, text, env);
  if (mismatch) return { reason: mismatch };
  const block = readAuthBlock(text);
  if (!block) return { reason: "server.auth is written in a form the quick reader does not follow" };
  let missing = false;
  const expanded = interpolate({ host: block.host, auth: block.auth ?? {} }, env, [], () => (missing = true)) as { host?: unknown; auth: Record<string, unknown> };
  if (missing) return { reason: "an environment variable is not set" };
  const set = Object.fromEntries(Object.entries(expanded.auth).filter(([, v]) => v !== undefined));
  const auth = { ...AUTH_DEFAULTS, ...set } as PipelineConfig["server"]["auth"];
  if (auth.mode !== "jwt") return { reason: `server.auth.mode is ${String(auth.mode)}` };
  try {
    const cfg = resolveAuth({ server: { host: (expanded.host as string | undefined) ?? DEFAULT_HOST, auth }, baseDir: path.dirname(abs) });
    if (!cfg) return { reason: "no auth" };
    const rules = resolveAuthRules(cfg);
    if (rules.kind !== "secret") return { reason: "not an HMAC secret" };
    const ttl = checkTokenRequest(req);
    return { token: signHmac(cfg, rules.algorithms[0], req.sub, ttl) };
  } catch (err) {
    return { reason: (err as Error).message };
  }
}

/** The JWT jose's SignJWT makes in server/auth.ts mintToken: same header, same claims in the same order. */
function signHmac(cfg: AuthConfig, alg: string, sub: string, ttl: number): string {
  const iat = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { sub, iat, exp: iat + ttl };
  if (cfg.issuer) claims.iss = cfg.issuer;
  if (cfg.audience) claims.aud = cfg.audience;
  const input = `${b64(JSON.stringify({ alg, typ: "JWT" }))}.${b64(JSON.stringify(claims))}`;
  const mac = createHmac(`sha${alg.slice(2)}`, new TextEncoder().encode(cfg.jwt_secret!)).update(input).digest("base64url");
  return `${input}.${mac}`;
}

function b64(s: string): string {
  return Buffer.from(s, "utf8").toString("base64url");
}

async function fullToken(file: string, abs: string, bytes: Buffer | undefined, text: string | undefined, req: TokenRequest, env: Env): Promise<string | null> {
  const [{ loadOrFail }, { mintToken }] = await Promise.all([import("./common.ts"), import("../../server/auth.ts")]);
  const config = await loadOrFail(file, { checkPlugins: false, env, ...(text !== undefined ? { text } : {}) });
  const cfg = resolveAuth(config);
  const token = cfg ? await mintToken(cfg, { sub: req.sub, ttl_s: req.ttl_s }) : null;
  if (bytes && text !== undefined && (await readerAgrees(text))) {
    try {
      writeStamp(abs, bytes, text, env);
    } catch (err) {
      // Only speed is lost: the next token validates in full again.
      if (env.APFA_DEBUG) console.error(`[apfa] token: cannot write the stamp: ${(err as Error).message}`);
    }
  }
  return token;
}

/** True when the small reader reads server.host and server.auth exactly as the YAML parser does. */
async function readerAgrees(text: string): Promise<boolean> {
  const mine = readAuthBlock(text);
  if (!mine) return false;
  const { parse } = await import("yaml");
  try {
    const server = (parse(text) as { server?: { host?: unknown; auth?: unknown } } | null)?.server;
    return JSON.stringify(mine) === JSON.stringify({ host: server?.host, auth: server?.auth });
  } catch {
    return false; // the loader accepted it, so this is not expected; it only keeps the file on the full path
  }
}

export const tokenCmd: Command = {
  summary: "Mint a development JWT for the configured HS256 secret (or the per-install dev secret).",
  usage: "apfa token [--sub user] [--ttl 3600]",
  options: { sub: { type: "string", default: "dev" }, ttl: { type: "string", default: "3600" } },
  async run({ values }) {
    const r = await mintCliToken(values.config as string, { sub: String(values.sub), ttl_s: Number(values.ttl) });
    if (process.env.APFA_DEBUG) console.error(`[apfa] token: ${r.path} path${r.reason ? ` (${r.reason})` : ""}`);
    if (r.token === null) {
      console.error("apfa token: server.auth.mode is none; no token is needed");
      return 1;
    }
    console.log(r.token);
    return 0;
  },
};
