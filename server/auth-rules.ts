/**
 * The rules an auth configuration must meet — one key source, algorithms that fit it, a long enough secret —
 * and the checks on a token request. Free of `jose` so `apfa token`'s quick path shares them with the server
 * (server/auth.ts) without loading it.
 * @module
 */
import { ApfaError } from "../runtime/errors.ts";

export interface AuthConfig {
  /** HS256 shared secret (at least 32 characters); use `${APFA_JWT_SECRET}` in pipeline.yaml. */
  jwt_secret?: string;
  /** JWKS endpoint of your identity provider; keys are fetched and cached by `kid`. */
  jwks_url?: string;
  /** PEM public key (SPKI) or X.509 certificate for RS256/ES256/EdDSA tokens. */
  public_key?: string;
  /** Required `iss` claim. */
  issuer?: string;
  /** Required `aud` claim (one of). */
  audience?: string;
  /** Accepted `alg` values. @default ["HS256"] with jwt_secret, ["RS256"] with public_key or jwks_url */
  algorithms?: string[];
  /** Leeway for `exp`/`nbf`, in seconds (0–300). @default 30 */
  clock_tolerance_s?: number;
  /** Other keys of the server's auth block (e.g. `mode`) are ignored here. */
  [other: string]: unknown;
}

export const HMAC = ["HS256", "HS384", "HS512"];
export const ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"];

export interface ResolvedAuth {
  kind: "secret" | "public_key" | "jwks";
  algorithms: string[];
  tolerance: number;
}

export function resolveAuthRules(cfg: AuthConfig): ResolvedAuth {
  const sources = (["jwt_secret", "public_key", "jwks_url"] as const).filter((k) => cfg[k] !== undefined && cfg[k] !== "");
  if (sources.length !== 1) {
    throw new ApfaError("config", sources.length
      ? `server.auth: set only one of ${sources.join(", ")}; mixing a shared secret and public keys invites algorithm confusion`
      : "server.auth: set jwt_secret (e.g. ${APFA_JWT_SECRET}), public_key or jwks_url, or set mode: none for local use");
  }
  const kind = sources[0] === "jwt_secret" ? "secret" : sources[0] === "public_key" ? "public_key" : "jwks";
  const allowed = kind === "secret" ? HMAC : ASYMMETRIC;
  const algorithms = cfg.algorithms?.length ? cfg.algorithms : kind === "secret" ? ["HS256"] : ["RS256"];
  const bad = algorithms.filter((a) => !allowed.includes(a));
  if (bad.length) {
    throw new ApfaError("config", `server.auth.algorithms: ${bad.join(", ")} cannot be used with ${sources[0]}; allowed: ${allowed.join(", ")}`);
  }
  if (kind === "secret" && new TextEncoder().encode(cfg.jwt_secret!).byteLength < 32) {
    throw new ApfaError("config", "server.auth.jwt_secret must be at least 32 bytes (try `openssl rand -base64 48`)");
  }
  const tolerance = cfg.clock_tolerance_s ?? 30;
  if (!Number.isFinite(tolerance) || tolerance < 0 || tolerance > 300) {
    throw new ApfaError("config", `server.auth.clock_tolerance_s must be between 0 and 300, got ${tolerance}`);
  }
  return { kind, algorithms, tolerance };
}

/** The longest `apfa token` lifetime, in seconds. */
export const MAX_TOKEN_TTL_S = 366 * 86400;

/** Checks a token request's subject and lifetime; returns the lifetime in seconds. */
export function checkTokenRequest(opts: { sub: string; ttl_s?: number }): number {
  const ttl = opts.ttl_s ?? 3600;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TOKEN_TTL_S) throw new ApfaError("invalid_input", `ttl_s must be a whole number of seconds from 1 to ${MAX_TOKEN_TTL_S}`);
  if (!opts.sub) throw new ApfaError("invalid_input", "token subject (sub) must not be empty");
  return ttl;
}
