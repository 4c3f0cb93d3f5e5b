import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { parse, stringify } from "yaml";
import { mintCliToken, type TokenResult } from "../../runtime/commands/token.ts";
import { readAuthBlock } from "../../runtime/config/auth-block.ts";
import { STAMP_FILE } from "../../runtime/config/token-stamp.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { makeVerifier } from "../../server/auth.ts";

const SECRET = "env-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
const OTHER = "another-secret-0123456789-abcdefghijklmnopqrstu";
const YAML = `version: 1
server:
  port: 8080
  auth:
    jwt_secret: \${APFA_JWT_SECRET}   # from the environment
    issuer: apfa-test
    audience: "advice-api"
    algorithms: [HS256]
`;
const req = { sub: "dev", ttl_s: 600 };

let dir: string;
let file: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-token-"));
  file = path.join(dir, "pipeline.yaml");
  fs.writeFileSync(file, YAML);
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  fs.rmSync(dir, { recursive: true, force: true });
});

const env = (secret = SECRET) => ({ APFA_JWT_SECRET: secret });
const accepted = (r: TokenResult, secret = SECRET, extra: Record<string, string> = {}) =>
  makeVerifier({ jwt_secret: secret, issuer: "apfa-test", audience: "advice-api", ...extra })(`Bearer ${r.token}`);

describe("apfa token quick path", () => {
  it("validates in full and stamps first, then signs on the quick path a token the server accepts", async () => {
    const first = await mintCliToken(file, req, env());
    expect(first).toMatchObject({ path: "full", reason: "no stamp for this file" });
    const second = await mintCliToken(file, req, env());
    expect(second.path).toBe("quick");
    expect((await accepted(first)).sub).toBe("dev");
    const v = await accepted(second);
    expect(v.claims).toMatchObject({ sub: "dev", iss: "apfa-test", aud: "advice-api" });
    expect(v.claims.exp! - v.claims.iat!).toBe(600);
  });

  it("signs the very bytes jose signs: same header, claims and order", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: new Date("2026-12-06T12:00:00Z") });
    const full = await mintCliToken(file, req, env());
    const quick = await mintCliToken(file, req, env());
    expect([full.path, quick.path]).toEqual(["full", "quick"]);
    expect(quick.token).toBe(full.token);
  });

  it("goes the full path again after an edit, and the token carries the edited values", async () => {
    await mintCliToken(file, req, env());
    fs.writeFileSync(file, YAML.replace("issuer: apfa-test", "issuer: apfa-edited"));
    const r = await mintCliToken(file, req, env());
    expect(r).toMatchObject({ path: "full", reason: "file changed since it was validated" });
    expect((await accepted(r, SECRET, { issuer: "apfa-edited" })).claims.iss).toBe("apfa-edited");
    expect((await mintCliToken(file, req, env())).path).toBe("quick");
  });

  it("reads the secret from the environment and validates again when it changes", async () => {
    await mintCliToken(file, req, env());
    const r = await mintCliToken(file, req, env(OTHER));
    expect(r).toMatchObject({ path: "full", reason: "environment changed since the file was validated" });
    await expect(accepted(r, OTHER)).resolves.toBeDefined();
    await expect(accepted(r, SECRET)).rejects.toMatchObject({ reason: "bad_signature" });
    const quick = await mintCliToken(file, req, env(OTHER));
    expect(quick.path).toBe("quick");
    await expect(accepted(quick, OTHER)).resolves.toBeDefined();
  });

  it("keeps no secret or value in the stamp, only digests", async () => {
    const literal = YAML.replace("${APFA_JWT_SECRET}", OTHER);
    fs.writeFileSync(file, literal);
    await mintCliToken(file, req, env());
    const stamp = fs.readFileSync(path.join(dir, STAMP_FILE), "utf8");
    for (const s of [SECRET, OTHER, "apfa-test", "advice-api", Buffer.from(OTHER).toString("base64url")]) expect(stamp).not.toContain(s);
    const entry = JSON.parse(stamp).files[file];
    expect(Object.keys(entry).sort()).toEqual(["code", "env", "file", "salt"]);
    expect((await mintCliToken(file, req, env())).path).toBe("quick");
  });

  it("reports a bad config with its located problems, as before, even after a stamp", async () => {
    await mintCliToken(file, req, env());
    fs.writeFileSync(file, YAML.replace("issuer: apfa-test", "issuer: apfa-test\n    clock_tolerance_s: 999"));
    const errors: string[] = [];
    vi.spyOn(console, "error").mockImplementation((m: unknown) => void errors.push(String(m)));
    await expect(mintCliToken(file, req, env())).rejects.toBeInstanceOf(ApfaError);
    expect(errors.join("\n")).toMatch(/pipeline\.yaml:7:\d+ +server\.auth\.clock_tolerance_s +must be <= ?300/);
  });

  it("falls back for a short secret, a missing variable and a bad ttl, and reports them", async () => {
    await mintCliToken(file, req, env());
    await expect(mintCliToken(file, req, env("short"))).rejects.toThrow(/jwt_secret must be at least 32 bytes/);
    vi.spyOn(console, "error").mockImplementation(() => {});
    await expect(mintCliToken(file, req, {})).rejects.toThrow(/1 problem/);
    await expect(mintCliToken(file, { sub: "dev", ttl_s: Number("x") }, env())).rejects.toThrow(/ttl_s must be a whole number/);
  });

  it("never takes the quick path for YAML the reader does not follow, nor for mode none", async () => {
    fs.writeFileSync(file, "server:\n  auth: { jwt_secret: \"${APFA_JWT_SECRET}\" }\n");
    await mintCliToken(file, req, env());
    const r = await mintCliToken(file, req, env());
    expect(r).toMatchObject({ path: "full", reason: "no stamp for this file" });
    fs.writeFileSync(file, "server:\n  auth:\n    mode: none\n");
    await mintCliToken(file, req, env());
    expect(await mintCliToken(file, req, env())).toMatchObject({ token: null, path: "full", reason: "server.auth.mode is none" });
  });

  it("signs with the per-install development secret when no key is configured", async () => {
    fs.writeFileSync(file, "version: 1\n");
    const full = await mintCliToken(file, req, {});
    const quick = await mintCliToken(file, req, {});
    expect([full.path, quick.path]).toEqual(["full", "quick"]);
    const dev = fs.readFileSync(path.join(dir, ".apfa/dev-jwt.secret"), "utf8").trim();
    await expect(makeVerifier({ jwt_secret: dev })(`Bearer ${quick.token}`)).resolves.toBeDefined();
  });

  it("the command's module graph loads no package (no yaml, zod or jose) before it falls back", () => {
    const seen = new Set<string>();
    const bare: string[] = [];
    const walk = (f: string) => {
      if (seen.has(f)) return;
      seen.add(f);
      // Static value imports only: `import type` is erased, `await import()` runs on the full path only.
      for (const m of fs.readFileSync(f, "utf8").matchAll(/^import (?!type )[^;]*? from "([^"]+)";/gms)) {
        if (m[1].startsWith(".")) walk(path.resolve(path.dirname(f), m[1]));
        else if (!m[1].startsWith("node:")) bare.push(`${path.relative(process.cwd(), f)}: ${m[1]}`);
      }
    };
    walk(path.resolve("runtime/commands/token.ts"));
    expect(seen.size).toBeGreaterThan(5);
    expect(bare).toEqual([]);
  });

  it("the CLI says which path it took (APFA_DEBUG)", async () => {
    const run = () => promisify(execFile)(process.execPath, ["bin/apfa.mjs", "token", "-c", file], { env: { ...process.env, ...env(), APFA_DEBUG: "1" } });
    expect((await run()).stderr).toContain("[apfa] token: full path (no stamp for this file)");
    const second = await run();
    expect(second.stderr).toContain("[apfa] token: quick path");
    await expect(accepted({ token: second.stdout.trim(), path: "quick" })).resolves.toBeDefined();
  }, 60_000);
});

describe("readAuthBlock", () => {
  const cases = [
    YAML,
    "version: 1\n",
    "server:\n  host: 0.0.0.0\n  auth:\n    jwt_secret: 'it''s-a-secret'\n    algorithms:\n      - HS384\n      - HS512\n    clock_tolerance_s: 10\n",
    "server:\n    auth:\n        mode: none\n    host: \"::1\"\n",
    "# comment\nserver:   # trailing\n  auth:\n    issuer: ${ISS:-apfa}\n    audience: 123\n    mode: jwt\n",
    "server:\n  auth:\n    algorithms:\n    - HS256\n",
    "server:\n  cache:\n    ttl_s: 5\n  auth:\n    jwt_secret: \"${S}\"\n",
    "server:\n  auth:\n    jwt_secret: -U-A0Eilu_7UhfCu0iH-q7A\n    issuer: ?a:b\n    audience: 0xPjx\n",
  ];
  it.each(cases)("reads what the yaml package reads (%#)", (text) => {
    const server = (parse(text) as { server?: { host?: unknown; auth?: unknown } }).server;
    expect(JSON.stringify(readAuthBlock(text))).toBe(JSON.stringify({ host: server?.host, auth: server?.auth }));
  });
  it("reads what the yaml package reads in files yaml.stringify writes (the bench's), for random secrets", () => {
    let read = 0;
    for (let i = 0; i < 300; i++) {
      const secret = randomBytes(16 + (i % 40)).toString((["base64", "base64url", "hex", "latin1"] as const)[i % 4]);
      const text = stringify({ name: "x", server: { host: "127.0.0.1", port: 0, auth: { jwt_secret: secret, issuer: secret.slice(0, 5) }, cache_dir: "/tmp/c" } });
      const mine = readAuthBlock(text);
      if (mine === undefined) continue; // giving up is always safe: the file then stays on the full path
      const server = (parse(text) as { server: { host?: unknown; auth?: unknown } }).server;
      expect(JSON.stringify(mine), text).toBe(JSON.stringify({ host: server.host, auth: server.auth }));
      read++;
    }
    expect(read).toBeGreaterThanOrEqual(225); // every base64, base64url and hex secret: those must go quick
  });
  it.each([
    "server: { auth: { jwt_secret: x } }\n",
    "server:\n  auth: { jwt_secret: x }\n",
    "server:\n  auth:\n    public_key: |\n      -----BEGIN PUBLIC KEY-----\n",
    "server:\n  auth:\n    jwt_secret: &k abc\n",
    "server:\n  auth:\n    jwt_secret: \"a\\tb\"\n",
    "---\nserver:\n  auth:\n    issuer: a\n",
  ])("gives up on forms it does not follow (%#)", (text) => {
    expect(readAuthBlock(text)).toBeUndefined();
  });
});
