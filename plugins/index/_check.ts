/** Input checks and a temp-directory helper shared by the index engines (the `_` keeps this file out of the plugin list). @module */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { ApfaError } from "../../runtime/errors.ts";

/** Validates `build` input and returns the row count. */
export function checkVectors(vectors: Float32Array, dims: number, where: string): number {
  if (!Number.isInteger(dims) || dims < 1) throw new ApfaError("index", `dims must be a positive integer, got ${dims}`, { where });
  if (!(vectors instanceof Float32Array)) throw new ApfaError("index", "vectors must be a Float32Array", { where });
  if (vectors.length % dims !== 0) {
    throw new ApfaError("index", `vectors hold ${vectors.length} floats, not a multiple of dims ${dims}`, { where });
  }
  return vectors.length / dims;
}

/**
 * Runs `fn` in a fresh temp directory, removed afterwards. Native libraries (usearch, FAISS) read and write only
 * paths, and a directory of its own keeps concurrent builds apart.
 */
export async function withTemp<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  try {
    return await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
