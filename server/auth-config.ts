/**
 * Which auth the server and `apfa token` use: the configured key, none (loopback only), or the per-install
 * development secret. Kept apart from server/serve.ts so `apfa token` loads no server.
 * @module
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { PipelineConfig } from "../runtime/config/schema.ts";
import type { Logger } from "../runtime/contracts.ts";
import { ApfaError } from "../runtime/errors.ts";
import type { AuthConfig } from "./auth-rules.ts";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);

/** What {@link resolveAuth} reads of a config (`apfa token`'s quick path passes just these). */
export interface AuthSettings {
  server: { host: string; auth: PipelineConfig["server"]["auth"] };
  baseDir: string;
}

/** The auth config in force: the configured key, or in dev mode a per-install secret under .apfa/. */
export function resolveAuth(config: AuthSettings, log?: Logger): AuthConfig | null {
  const a = config.server.auth;
  if (a.mode === "none") {
    if (!LOOPBACK.has(config.server.host)) {
      throw new ApfaError("config", `server.auth.mode "none" is only allowed when server.host is a loopback address (got ${config.server.host}); set server.auth.jwt_secret`);
    }
    return null;
  }
  if (a.jwt_secret || a.public_key || a.jwks_url) return a as AuthConfig;
  const file = path.resolve(config.baseDir, ".apfa/dev-jwt.secret");
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, crypto.randomBytes(32).toString("base64url"), { mode: 0o600 });
  }
  log?.warn("no server.auth key configured: using the development secret in .apfa/dev-jwt.secret; mint tokens with `apfa token`", { file });
  return { ...a, jwt_secret: fs.readFileSync(file, "utf8").trim() } as AuthConfig;
}
