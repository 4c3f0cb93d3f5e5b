/**
 * `embed_batch` (embedding queue): embeds one batch's documents, verifies every row is unit-length (fixing it
 * if the model did not), writes `batches/<run>/<n>.npy` and the matching `.docs.jsonl` (a retry overwrites
 * both, so there is never a second artifact), then records the batch as done and runs the fan-in in the same
 * transaction.
 * @module
 */
import type { JobHelpers } from "graphile-worker";
import type { Doc } from "../documents.ts";
import { errorMessage } from "../errors.ts";
import { layout } from "../keys.ts";
import { encodeNpy, normaliseRows } from "../npy.ts";
import type { Pipeline } from "../pipeline.ts";
import { withRetry } from "../retry.ts";
import { fanIn, tx } from "../runs.ts";
import { concatBytes } from "../streams.ts";

export interface EmbedBatchPayload {
  run_id: string;
  n: number;
}

/** Embeds in sub-batches so one huge batch does not build one huge tensor. */
const MODEL_BATCH = 256;

export function makeEmbedBatch(p: Pipeline) {
  return async (raw: unknown, helpers: JobHelpers): Promise<void> => {
    const { run_id: runId, n } = raw as EmbedBatchPayload;
    const log = p.log.child({ run: runId, batch: n, task: "embed_batch" });
    const state = await p.db.pool.query<{ status: string; run_status: string; input_key: string }>(
      `update apfa.batches b set status = case when b.status = 'done' then b.status else 'running' end,
              attempts = b.attempts + 1, started_at = now()
         from apfa.runs r where r.id = b.run_id and b.run_id = $1 and b.n = $2
       returning b.status, r.status as run_status, b.input_key`,
      [runId, n],
    );
    const row = state.rows[0];
    if (!row) throw new Error(`batch ${runId}/${n} is not recorded`);
    if (row.status === "done" || row.run_status === "failed" || row.run_status === "cancelled") return;
    const t0 = performance.now();
    try {
      const retry = { onRetry: (e: unknown, a: number, d: number) => log.warn("store call failed; retrying", { attempt: a, delay_ms: d, error: errorMessage(e) }) };
      const input = await withRetry(() => p.store.get(row.input_key), retry);
      const docs = new TextDecoder().decode(input).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Doc);
      const embedder = await p.embedder();
      let truncated = 0;
      const texts = docs.map((d) => {
        if (d.text.length <= embedder.maxChars) return d.text;
        truncated++;
        return d.text.slice(0, embedder.maxChars);
      });
      const dims = embedder.dims;
      const vectors = new Float32Array(docs.length * dims);
      for (let i = 0; i < texts.length; i += MODEL_BATCH) {
        const part = await embedder.embed(texts.slice(i, i + MODEL_BATCH));
        if (part.length !== Math.min(MODEL_BATCH, texts.length - i) * dims) {
          throw new Error(`embedder ${embedder.modelId} returned ${part.length} floats for ${Math.min(MODEL_BATCH, texts.length - i)} texts × ${dims} dims`);
        }
        vectors.set(part, i * dims);
      }
      const { zero } = normaliseRows(vectors, dims);
      // A zero vector cannot be normalised or ranked; drop those rows and count them as skipped.
      let keep = docs;
      let data = vectors;
      if (zero.length) {
        const bad = new Set(zero);
        keep = docs.filter((_, i) => !bad.has(i));
        data = new Float32Array(keep.length * dims);
        for (let i = 0, j = 0; i < docs.length; i++) if (!bad.has(i)) data.set(vectors.subarray(i * dims, (i + 1) * dims), j++ * dims);
      }
      const vKey = layout.batchVectors(runId, n);
      const dKey = layout.batchDocs(runId, n);
      const npy = concatBytes(encodeNpy(data, keep.length, dims));
      const docsBytes = new TextEncoder().encode(keep.map((d) => JSON.stringify({ id: d.id, text: d.text, metadata: d.metadata })).join("\n") + "\n");
      await withRetry(() => p.store.put(dKey, docsBytes), retry);
      await withRetry(() => p.store.put(vKey, npy), retry);
      const ms = Math.round(performance.now() - t0);
      await tx(p.db.pool, async (c) => {
        const upd = await c.query(
          `update apfa.batches set status = 'done', embedded = $3, truncated = $4, skipped = $5, vectors_key = $6, docs_key = $7,
                  bytes = $8, duration_ms = $9, error = null, finished_at = now()
            where run_id = $1 and n = $2 and status <> 'done'`,
          [runId, n, keep.length, truncated, zero.length, vKey, dKey, npy.byteLength + docsBytes.byteLength, ms],
        );
        if (upd.rowCount === 0) return;
        await c.query(
          `update apfa.runs set batches_done = batches_done + 1, docs_embedded = docs_embedded + $2,
                  docs_truncated = docs_truncated + $3, docs_skipped = docs_skipped + $4,
                  skipped = case when $4::int > 0 then jsonb_set(skipped, '{zero_vector}', to_jsonb(coalesce((skipped->>'zero_vector')::int, 0) + $4::int)) else skipped end
            where id = $1`,
          [runId, keep.length, truncated, zero.length],
        );
        await fanIn(c, p.config, runId);
      });
      log.info("batch embedded", { docs: keep.length, truncated, zero_vectors: zero.length, ms, docs_per_s: Math.round((keep.length / ms) * 1000) });
    } catch (err) {
      const msg = errorMessage(err);
      const last = helpers.job.attempts >= helpers.job.max_attempts;
      await tx(p.db.pool, async (c) => {
        const upd = await c.query(
          `update apfa.batches set status = $3, error = $4, finished_at = case when $3 = 'failed' then now() else finished_at end
            where run_id = $1 and n = $2 and status <> 'done'`,
          [runId, n, last ? "failed" : "pending", msg],
        );
        if (last && upd.rowCount) {
          await c.query("update apfa.runs set batches_failed = batches_failed + 1 where id = $1", [runId]);
          await fanIn(c, p.config, runId);
        }
      }).catch((e) => log.error("could not record batch failure", { error: errorMessage(e) }));
      log.warn(last ? "batch failed for good" : "batch failed; graphile-worker will retry", { attempt: helpers.job.attempts, error: msg });
      throw err;
    }
  };
}
