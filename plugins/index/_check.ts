/** Input checks shared by the index engines (the `_` keeps this file out of the plugin list). @module */
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
