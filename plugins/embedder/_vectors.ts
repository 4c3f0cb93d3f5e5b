/** Vector helpers shared by the embedder plugins (not a plugin: `_` files are skipped by the loader). @module */
import { ApfaError } from "../../runtime/errors.ts";

/**
 * Scales each row of a row-major `n × dims` matrix to unit length, in place. Models' outputs are often close
 * to, but not exactly, unit norm, and remote servers may not normalise at all, so every embedder calls this.
 * A zero or non-finite row is an error rather than a silent NaN in the index.
 */
export function normalizeRows(out: Float32Array, dims: number): Float32Array {
  for (let r = 0; r < out.length / dims; r++) {
    let sum = 0;
    for (let i = r * dims; i < (r + 1) * dims; i++) sum += out[i] * out[i];
    if (!(sum > 0) || !Number.isFinite(sum)) {
      throw new ApfaError("embedder", `row ${r} is ${sum > 0 ? "not finite" : "all zeros or NaN"} and cannot be normalised`);
    }
    const inv = 1 / Math.sqrt(sum);
    for (let i = r * dims; i < (r + 1) * dims; i++) out[i] *= inv;
  }
  return out;
}

/** Indices of `texts` sorted by length (stable), so batches of similar length pad less. */
export function byLength(texts: string[]): number[] {
  return texts.map((_, i) => i).sort((a, b) => texts[a].length - texts[b].length);
}
