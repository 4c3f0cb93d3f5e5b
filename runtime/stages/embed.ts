/**
 * Stage 2: embed one batch of documents. Texts are truncated to the embedder's `maxChars` (and counted), every
 * row is checked to be unit length (normalised if the model did not), and documents whose vector is all zeros
 * are dropped (they cannot be ranked) and counted as skipped. No database, no store.
 * @module
 */
import type { Embedder } from "../contracts.ts";
import type { Doc } from "../documents.ts";
import { encodeNpy, normaliseRows } from "../npy.ts";
import { concatBytes } from "../streams.ts";
import { docLine } from "./enumerate.ts";

/** Embeds in sub-batches so one huge batch does not build one huge tensor. */
const MODEL_BATCH = 256;

export interface EmbeddedBatch {
  /** The documents kept, in input order; row i of `vectors` is `docs[i]`. */
  docs: Doc[];
  vectors: Float32Array;
  dims: number;
  truncated: number;
  /** Documents dropped because the model returned a zero vector. */
  zero: number;
  modelId: string;
  maxChars: number;
}

export async function embedBatch(embedder: Embedder, docs: Doc[]): Promise<EmbeddedBatch> {
  const { dims, maxChars } = embedder;
  let truncated = 0;
  const texts = docs.map((d) => {
    if (d.text.length <= maxChars) return d.text;
    truncated++;
    return d.text.slice(0, maxChars);
  });
  const vectors = new Float32Array(docs.length * dims);
  for (let i = 0; i < texts.length; i += MODEL_BATCH) {
    const want = Math.min(MODEL_BATCH, texts.length - i);
    const part = await embedder.embed(texts.slice(i, i + MODEL_BATCH));
    if (part.length !== want * dims) throw new Error(`embedder ${embedder.modelId} returned ${part.length} floats for ${want} texts × ${dims} dims`);
    vectors.set(part, i * dims);
  }
  const { zero } = normaliseRows(vectors, dims);
  const base = { dims, truncated, zero: zero.length, modelId: embedder.modelId, maxChars };
  if (!zero.length) return { docs, vectors, ...base };
  const bad = new Set(zero);
  const keep = docs.filter((_, i) => !bad.has(i));
  const data = new Float32Array(keep.length * dims);
  for (let i = 0, j = 0; i < docs.length; i++) if (!bad.has(i)) data.set(vectors.subarray(i * dims, (i + 1) * dims), j++ * dims);
  return { docs: keep, vectors: data, ...base };
}

/** A batch's artifacts: `.npy` (numpy reads it) and `.docs.jsonl` with the same rows in the same order. */
export function encodeBatch(b: EmbeddedBatch): { npy: Uint8Array; docs: Uint8Array } {
  return {
    npy: concatBytes(encodeNpy(b.vectors, b.docs.length, b.dims)),
    docs: new TextEncoder().encode(b.docs.map(docLine).join("\n") + "\n"),
  };
}
