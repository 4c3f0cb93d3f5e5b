/**
 * `.apfa/token-check.json` (next to the pipeline file): a record that the full loader validated these exact
 * pipeline-file bytes, with these values of the environment variables the file references, and that the small
 * auth-block reader reads them as the YAML parser does. `apfa token` then signs without loading the loader.
 * It holds only salted SHA-256 digests, never a value from the file or the environment (so never the secret).
 * @module
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { envRefNames } from "./env-ref.ts";

/** Where the stamp lives, relative to the pipeline file's folder (git-ignored with the rest of .apfa/). */
export const STAMP_FILE = ".apfa/token-check.json";
const FORMAT = 1;

interface Entry {
  salt: string;
  /** Digest of the file's bytes. */
  file: string;
  /** Digest of the names and values of the environment variables the file references. */
  env: string;
  /** The validating code's modules (mtime and size): an upgraded or edited loader validates again. */
  code: string;
}

interface Stamp {
  format: number;
  /** By the pipeline file's absolute path. */
  files: Record<string, Entry>;
}

function digest(salt: string, data: string | Uint8Array): string {
  return createHash("sha256").update(salt).update("\0").update(data).digest("base64url");
}

function envDigest(salt: string, text: string, env: Record<string, string | undefined>): string {
  return digest(salt, JSON.stringify(envRefNames(text).map((n) => [n, env[n] ?? null])));
}

/** The loader's own modules, which decide what is valid; undefined if they cannot be found. */
function codeStamp(): string | undefined {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  try {
    return ["schema", "load", "cron", "env-ref", "auth-block"].map((m) => {
      const st = fs.statSync(new URL(`./${m}${ext}`, import.meta.url));
      return `${st.mtimeMs}:${st.size}`;
    }).join(",");
  } catch {
    return undefined;
  }
}

function stampPath(file: string): string {
  return path.join(path.dirname(file), STAMP_FILE);
}

function readStamp(file: string): Stamp | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(stampPath(file), "utf8")) as Stamp;
    return s && s.format === FORMAT && typeof s.files === "object" ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Null when `file` (absolute) with `bytes` and `env` is stamped; otherwise why not. */
export function stampMismatch(file: string, bytes: Uint8Array, text: string, env: Record<string, string | undefined>): string | null {
  const e = readStamp(file)?.files[file];
  if (!e) return "no stamp for this file";
  if (digest(e.salt, bytes) !== e.file) return "file changed since it was validated";
  if (envDigest(e.salt, text, env) !== e.env) return "environment changed since the file was validated";
  if (codeStamp() !== e.code) return "apfa's config loader changed";
  return null;
}

/** Records that `file` (absolute) with `bytes` and `env` passed full validation. */
export function writeStamp(file: string, bytes: Uint8Array, text: string, env: Record<string, string | undefined>): void {
  const code = codeStamp();
  if (code === undefined) return;
  const salt = randomBytes(16).toString("base64url");
  const stamp = readStamp(file) ?? { format: FORMAT, files: {} };
  stamp.files[file] = { salt, file: digest(salt, bytes), env: envDigest(salt, text, env), code };
  const out = stampPath(file);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  // Written aside and renamed, so a concurrent `apfa token` never reads half a file.
  const tmp = `${out}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(stamp, null, 2) + "\n");
  fs.renameSync(tmp, out);
}
