import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { base64url, exportJWK, exportSPKI, generateKeyPair, SignJWT } from "jose";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { AuthError, type AuthReason, makeVerifier, mintToken } from "../../server/auth.ts";
import { ApfaError, isApfaError } from "../../runtime/errors.ts";

const SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
const cfg = { jwt_secret: SECRET, issuer: "apfa-test", audience: "advice-api" };
const now = () => Math.floor(Date.now() / 1000);
const enc = (s: string) => new TextEncoder().encode(s);

async function hs(claims: Record<string, unknown>, opts: { secret?: string; alg?: string } = {}): Promise<string> {
  return new SignJWT({ iss: "apfa-test", aud: "advice-api", sub: "user-1", iat: now(), exp: now() + 600, ...claims })
    .setProtectedHeader({ alg: opts.alg ?? "HS256" })
    .sign(enc(opts.secret ?? SECRET));
}

async function reason(verify: (h: string | null) => Promise<unknown>, header: string | null): Promise<AuthReason> {
  const err = await verify(header).then(() => null, (e: unknown) => e);
  expect(err, `expected ${header} to be refused`).toBeInstanceOf(AuthError);
  const e = err as AuthError;
  expect(e).toBeInstanceOf(ApfaError);
  expect(e.status).toBe(401);
  expect(e.message).not.toContain(SECRET);
  if (header) expect(e.message).not.toContain(header.replace(/^Bearer /, ""));
  return e.reason;
}

describe("auth HS256", () => {
  const verify = makeVerifier(cfg);
  afterEach(() => vi.useRealTimers());

  it("remembers a verified token only until it expires, and never a refused one", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const strict = makeVerifier({ ...cfg, clock_tolerance_s: 0 });
    const token = await hs({ exp: now() + 5 });
    expect((await strict(`Bearer ${token}`)).sub).toBe("user-1");
    expect((await strict(`Bearer ${token}`)).sub).toBe("user-1"); // the remembered answer
    vi.setSystemTime(Date.now() + 6_000);
    expect(await reason(strict, `Bearer ${token}`)).toBe("expired");
    // A token signed with another key is refused every time, however often a good one came before it.
    const forged = await hs({}, { secret: "another-secret-0123456789-abcdefghijklmnopqrstuvw" });
    expect(await reason(strict, `Bearer ${forged}`)).toBe("bad_signature");
    expect(await reason(strict, `Bearer ${forged}`)).toBe("bad_signature");
  });

  it("accepts a valid token and returns sub and claims", async () => {
    const out = await verify(`Bearer ${await hs({ role: "advisor" })}`);
    expect(out.sub).toBe("user-1");
    expect(out.claims).toMatchObject({ role: "advisor", iss: "apfa-test" });
  });

  it("refuses missing and malformed headers", async () => {
    expect(await reason(verify, null)).toBe("missing_token");
    expect(await reason(verify, "  ")).toBe("missing_token");
    for (const h of ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b c", `Bearer ${"a".repeat(9000)}.b.c`]) expect(await reason(verify, h)).toBe("malformed_header");
    expect(await reason(verify, "Bearer abc.def")).toBe("malformed_token");
    expect(await reason(verify, "Bearer a.b.c")).toBe("malformed_token");
  });

  it("refuses a bad signature", async () => {
    expect(await reason(verify, `Bearer ${await hs({}, { secret: "another-secret-0123456789-abcdefghijklmnop" })}`)).toBe("bad_signature");
  });

  it("refuses expired and not-yet-valid tokens, within the clock tolerance", async () => {
    expect(await reason(verify, `Bearer ${await hs({ exp: now() - 120 })}`)).toBe("expired");
    expect((await verify(`Bearer ${await hs({ exp: now() - 10 })}`)).sub).toBe("user-1");
    expect(await reason(verify, `Bearer ${await hs({ nbf: now() + 600 })}`)).toBe("not_yet_valid");
    expect(await reason(makeVerifier({ ...cfg, clock_tolerance_s: 0 }), `Bearer ${await hs({ exp: now() - 10 })}`)).toBe("expired");
  });

  it("refuses the wrong issuer or audience, and a token without exp", async () => {
    expect(await reason(verify, `Bearer ${await hs({ iss: "evil" })}`)).toBe("wrong_issuer");
    expect(await reason(verify, `Bearer ${await hs({ iss: undefined })}`)).toBe("wrong_issuer");
    expect(await reason(verify, `Bearer ${await hs({ aud: "other" })}`)).toBe("wrong_audience");
    expect(await reason(verify, `Bearer ${await hs({ exp: undefined })}`)).toBe("invalid_claims");
  });

  it("refuses alg none and algorithms that were not pinned", async () => {
    const payload = base64url.encode(JSON.stringify({ sub: "admin", iss: "apfa-test", aud: "advice-api", exp: now() + 600 }));
    expect(await reason(verify, `Bearer ${base64url.encode('{"alg":"none","typ":"JWT"}')}.${payload}.`)).toBe("alg_not_allowed");
    expect(await reason(verify, `Bearer ${await hs({}, { alg: "HS512" })}`)).toBe("alg_not_allowed");
  });

  it("mints tokens the verifier accepts, carrying sub, iss, aud and the ttl", async () => {
    const token = await mintToken(cfg, { sub: "ops", ttl_s: 120 });
    const { sub, claims } = await verify(`Bearer ${token}`);
    expect(sub).toBe("ops");
    expect(claims).toMatchObject({ iss: "apfa-test", aud: "advice-api" });
    expect(claims.exp! - claims.iat!).toBe(120);
    await expect(mintToken(cfg, { sub: "x", ttl_s: 0 })).rejects.toThrow(/ttl_s/);
  });

  it("refuses unusable configurations with a config error", async () => {
    const configError = (c: Record<string, unknown>) => {
      try {
        makeVerifier(c);
      } catch (err) {
        return isApfaError(err, "config") ? err.message : `other: ${err}`;
      }
      return "accepted";
    };
    expect(configError({})).toMatch(/set jwt_secret/);
    expect(configError({ jwt_secret: "short" })).toMatch(/at least 32 bytes/);
    expect(configError({ jwt_secret: SECRET, public_key: "x" })).toMatch(/only one of/);
    expect(configError({ jwt_secret: SECRET, algorithms: ["RS256"] })).toMatch(/RS256 cannot be used with jwt_secret/);
    expect(configError({ jwt_secret: SECRET, clock_tolerance_s: 301 })).toMatch(/between 0 and 300/);
    expect(configError({ jwt_secret: SECRET, algorithms: ["none"] })).toMatch(/none cannot be used/);
  });
});

describe("auth RS256 (public key and JWKS)", async () => {
  const { publicKey, privateKey } = await generateKeyPair("RS256", { extractable: true });
  const pem = await exportSPKI(publicKey);
  const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "RS256", use: "sig" };
  const rs = (claims: Record<string, unknown> = {}, kid?: string) =>
    new SignJWT({ sub: "user-rs", exp: now() + 600, ...claims }).setProtectedHeader({ alg: "RS256", ...(kid ? { kid } : {}) }).sign(privateKey);

  let jwksUp = true;
  const server = http.createServer((_req, res) => {
    if (!jwksUp) return void res.writeHead(503).end();
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] }));
  });
  let jwksUrl = "";
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  });
  afterAll(() => new Promise((r) => server.close(r)));

  it("verifies RS256 with a PEM public key and refuses another key's signature", async () => {
    const verify = makeVerifier({ public_key: pem });
    await verify.ready();
    expect((await verify(`Bearer ${await rs()}`)).sub).toBe("user-rs");
    const other = await generateKeyPair("RS256");
    const forged = await new SignJWT({ sub: "x", exp: now() + 60 }).setProtectedHeader({ alg: "RS256" }).sign(other.privateKey);
    expect(await reason(verify, `Bearer ${forged}`)).toBe("bad_signature");
  });

  it("refuses HS256 tokens signed with the public key (algorithm confusion)", async () => {
    const verify = makeVerifier({ public_key: pem });
    const confused = await new SignJWT({ sub: "admin", exp: now() + 600 }).setProtectedHeader({ alg: "HS256" }).sign(enc(pem));
    expect(await reason(verify, `Bearer ${confused}`)).toBe("alg_not_allowed");
    expect(() => makeVerifier({ public_key: pem, algorithms: ["HS256"] })).toThrow(/HS256 cannot be used with public_key/);
  });

  it("reports an unusable PEM through ready() and as key_unavailable per request", async () => {
    const verify = makeVerifier({ public_key: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----" });
    await expect(verify.ready()).rejects.toThrow(/public_key cannot be used for RS256/);
    expect(await reason(verify, `Bearer ${await rs()}`)).toBe("key_unavailable");
  });

  it("verifies against a JWKS endpoint; unknown kid and an unreachable JWKS are 401s", async () => {
    const verify = makeVerifier({ jwks_url: jwksUrl });
    expect((await verify(`Bearer ${await rs({}, "k1")}`)).sub).toBe("user-rs");
    expect(await reason(verify, `Bearer ${await rs({}, "k-unknown")}`)).toBe("unknown_key");
    jwksUp = false;
    expect(await reason(makeVerifier({ jwks_url: jwksUrl }), `Bearer ${await rs({}, "k1")}`)).toBe("key_unavailable");
    expect(await reason(makeVerifier({ jwks_url: "http://127.0.0.1:1/jwks.json" }), `Bearer ${await rs({}, "k1")}`)).toBe("key_unavailable");
    jwksUp = true;
  });

  it("mintToken refuses to sign without a shared secret", async () => {
    await expect(mintToken({ public_key: pem }, { sub: "x" })).rejects.toThrow(/identity provider/);
  });
});
