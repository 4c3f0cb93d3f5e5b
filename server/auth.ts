/**
 * Bearer-token auth for the HTTP API: JWTs verified with `jose` against exactly one key source (an HS256
 * secret, a PEM public key, or a JWKS URL), with the accepted algorithms pinned so `alg: none` and
 * HS256-signed-with-the-public-key tokens are refused. Every failure is an {@link AuthError}: status 401 with
 * a short `reason`, never a 500, and never the token or secret in the message.
 * @module
 */
import {
  createRemoteJWKSet, type CryptoKey, errors, importSPKI, importX509, type JWTPayload, type JWTVerifyGetKey, jwtVerify, SignJWT,
} from "jose";
import { ApfaError } from "../runtime/errors.ts";
import { type AuthConfig, checkTokenRequest, resolveAuthRules as resolve, type ResolvedAuth as Resolved } from "./auth-rules.ts";

export type { AuthConfig } from "./auth-rules.ts";

export type AuthReason =
  | "missing_token" | "malformed_header" | "malformed_token" | "bad_signature" | "expired" | "not_yet_valid"
  | "wrong_issuer" | "wrong_audience" | "alg_not_allowed" | "unknown_key" | "key_unavailable" | "invalid_claims";

/** A rejected request: always status 401; `reason` is safe to return to the client. */
export class AuthError extends ApfaError {
  readonly reason: AuthReason;
  constructor(reason: AuthReason, cause?: unknown) {
    super("invalid_input", `unauthorized: ${reason}`, { status: 401, where: "auth", cause });
    this.name = "AuthError";
    this.reason = reason;
  }
}

export interface Verified {
  sub?: string;
  claims: JWTPayload;
}

export type Verifier = ((authorizationHeader: string | null | undefined) => Promise<Verified>) & {
  /** Resolves once the configured key is usable; rejects with a config error (await it at startup). */
  ready(): Promise<void>;
};

const MAX_HEADER = 8192;
/** Verified tokens kept per process, and how long one is trusted before its signature is checked again. */
const RECENT_MAX = 10_000;
const RECHECK_MS = 60_000;

function keyResolver(cfg: AuthConfig, r: Resolved): { getKey: Uint8Array | JWTVerifyGetKey; ready: Promise<void> } {
  if (r.kind === "secret") return { getKey: new TextEncoder().encode(cfg.jwt_secret!), ready: Promise.resolve() };
  if (r.kind === "jwks") {
    let url: URL;
    try {
      url = new URL(cfg.jwks_url!);
    } catch (err) {
      throw new ApfaError("config", `server.auth.jwks_url is not a URL: ${cfg.jwks_url}`, { cause: err });
    }
    return { getKey: createRemoteJWKSet(url, { timeoutDuration: 3000, cooldownDuration: 30_000 }), ready: Promise.resolve() };
  }
  // A CryptoKey is bound to one algorithm, so import the PEM once per pinned algorithm.
  const pem = cfg.public_key!.trim();
  const imports = new Map<string, Promise<CryptoKey>>();
  const load = (alg: string) => {
    let p = imports.get(alg);
    if (!p) {
      p = (pem.includes("BEGIN CERTIFICATE") ? importX509(pem, alg) : importSPKI(pem, alg)).catch((err) => {
        throw new ApfaError("config", `server.auth.public_key cannot be used for ${alg}: ${(err as Error).message}`, { cause: err });
      });
      imports.set(alg, p);
    }
    return p;
  };
  const ready = Promise.all(r.algorithms.map(load)).then(() => undefined);
  ready.catch(() => {}); // surfaced by verifier.ready() and by each request as key_unavailable
  return { getKey: (header) => load(header.alg), ready };
}

/** Maps a jose (or key-loading) failure to the reason we tell the client. */
function reasonOf(err: unknown): AuthReason {
  if (err instanceof errors.JWTExpired) return "expired";
  if (err instanceof errors.JWTClaimValidationFailed) {
    return err.claim === "nbf" ? "not_yet_valid" : err.claim === "iss" ? "wrong_issuer" : err.claim === "aud" ? "wrong_audience" : "invalid_claims";
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return "alg_not_allowed";
  if (err instanceof errors.JWSSignatureVerificationFailed) return "bad_signature";
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) return "unknown_key";
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || err instanceof ApfaError) return "key_unavailable";
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid || err instanceof errors.JOSENotSupported) return "malformed_token";
  // The JWKS endpoint answered badly (non-200, not JSON) or not at all (fetch's TypeError).
  if (err instanceof errors.JOSEError && /JSON Web Key Set/.test(err.message)) return "key_unavailable";
  if (err instanceof TypeError && /fetch|network/i.test(err.message)) return "key_unavailable";
  // Anything else (e.g. a key of the wrong type for the header's alg) is still the client's 401, not our 500.
  return "malformed_token";
}

/** Builds the request verifier. Throws a config error right away for an unusable configuration. */
export function makeVerifier(cfg: AuthConfig): Verifier {
  const r = resolve(cfg);
  const { getKey, ready } = keyResolver(cfg, r);
  /**
   * Tokens that verified, by their exact text: a client sends the same token with every request, and a
   * signature check through WebCrypto cost an eighth of a busy server's CPU (measured under 10k connections).
   * Only successes are kept; a token that is not here, or whose time is up, is verified in full.
   */
  const recent = new Map<string, { verified: Verified; until: number }>();
  const verify = async (header: string | null | undefined): Promise<Verified> => {
    if (header === null || header === undefined || header.trim() === "") throw new AuthError("missing_token");
    if (header.length > MAX_HEADER) throw new AuthError("malformed_header");
    const m = /^Bearer[ \t]+([A-Za-z0-9_\-.=]+)[ \t]*$/i.exec(header);
    if (!m) throw new AuthError("malformed_header");
    if (m[1].split(".").length !== 3) throw new AuthError("malformed_token");
    const token = m[1];
    const now = Date.now();
    const known = recent.get(token);
    if (known && now < known.until) return known.verified;
    if (known) recent.delete(token);
    try {
      const { payload } = await jwtVerify(token, getKey as JWTVerifyGetKey, {
        algorithms: r.algorithms,
        issuer: cfg.issuer,
        audience: cfg.audience,
        clockTolerance: r.tolerance,
        requiredClaims: ["exp"],
      });
      const verified = { sub: typeof payload.sub === "string" ? payload.sub : undefined, claims: payload };
      // Kept until the token expires (as jwtVerify judges it, with the tolerance), and never longer than
      // RECHECK_MS, so a key removed from a JWKS stops a token it signed within that time.
      const until = Math.min(now + RECHECK_MS, (payload.exp! + r.tolerance) * 1000);
      if (recent.size >= RECENT_MAX) recent.delete(recent.keys().next().value!);
      recent.set(token, { verified, until });
      return verified;
    } catch (err) {
      throw new AuthError(reasonOf(err), err);
    }
  };
  return Object.assign(verify, { ready: () => ready });
}

/** Signs a token for `apfa token` (HS* with jwt_secret only: asymmetric tokens come from your identity provider). */
export async function mintToken(cfg: AuthConfig, opts: { sub: string; ttl_s?: number; claims?: Record<string, unknown> }): Promise<string> {
  const r = resolve(cfg);
  if (r.kind !== "secret") {
    throw new ApfaError("config", "apfa token needs server.auth.jwt_secret; with public_key or jwks_url, tokens come from your identity provider");
  }
  const ttl = checkTokenRequest(opts);
  const jwt = new SignJWT({ ...opts.claims }).setProtectedHeader({ alg: r.algorithms[0], typ: "JWT" })
    .setSubject(opts.sub).setIssuedAt().setExpirationTime(`${ttl}s`);
  if (cfg.issuer) jwt.setIssuer(cfg.issuer);
  if (cfg.audience) jwt.setAudience(cfg.audience);
  return jwt.sign(new TextEncoder().encode(cfg.jwt_secret!));
}
