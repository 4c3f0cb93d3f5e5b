/**
 * Store keys are relative, `/`-separated paths made of safe characters. Every key that reaches a store goes
 * through `assertKey`, so no request or config value can name an object outside the store's root or prefix.
 * @module
 */
import { ApfaError } from "./errors.ts";

const SEGMENT = /^[A-Za-z0-9._=-][A-Za-z0-9._=+-]*$/;

/** Throws `invalid_key` unless `key` is a safe relative key (no `..`, no absolute path, no backslash). */
export function assertKey(key: string): string {
  if (typeof key !== "string" || key.length === 0 || key.length > 1024) {
    throw new ApfaError("invalid_key", `invalid store key ${JSON.stringify(key)}: must be 1-1024 characters`);
  }
  const parts = key.split("/");
  for (const p of parts) {
    if (p === "" || p === "." || p === ".." || !SEGMENT.test(p)) {
      throw new ApfaError(
        "invalid_key",
        `invalid store key ${JSON.stringify(key)}: segments must match ${SEGMENT.source} and may not be empty, "." or ".."`,
      );
    }
  }
  return key;
}

/** Like assertKey but for list prefixes, which may be empty or end with `/`. */
export function assertPrefix(prefix: string): string {
  if (prefix === "") return prefix;
  assertKey(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix);
  return prefix;
}

/** The documented bucket layout. */
export const layout = {
  batchInput: (run: string, n: number) => `batches/${run}/${String(n).padStart(6, "0")}.input.jsonl`,
  batchVectors: (run: string, n: number) => `batches/${run}/${String(n).padStart(6, "0")}.npy`,
  batchDocs: (run: string, n: number) => `batches/${run}/${String(n).padStart(6, "0")}.docs.jsonl`,
  batchPrefix: (run: string) => `batches/${run}/`,
  /** The base rows a run carries into its version (written by embed_all, read by build_index). */
  runReuse: (run: string) => `batches/${run}/reuse.jsonl`,
  indexPrefix: (version: string) => `indexes/${version}/`,
  indexFile: (version: string, file: string) => `indexes/${version}/${file}`,
  latest: "indexes/latest",
  runReport: (run: string) => `runs/${run}.json`,
} as const;
