/**
 * `embed_batch` (embedding queue): an adapter over the embed stage. Reads the batch input, embeds it, writes
 * `batches/<run>/<n>.npy` and the matching `.docs.jsonl` (a retry overwrites both, so there is never a second
 * artifact), then records the batch as done with the embedder's model id, dims and max_chars, which the build
 * reads instead of loading the model.
 * @module
 */
import type { JobHelpers } from "graphile-worker";
import type { Doc } from "../documents.ts";
import { errorMessage } from "../errors.ts";
import { layout } from "../keys.ts";
import type { Pipeline } from "../pipeline.ts";
import { batchDone, batchFailed, startBatch } from "../runs.ts";
import { embedBatch, encodeBatch } from "../stages/embed.ts";

export interface EmbedBatchPayload {
  run_id: string;
  n: number;
}

export function makeEmbedBatch(p: Pipeline) {
  return async (raw: unknown, helpers: JobHelpers): Promise<void> => {
    const { run_id: runId, n } = raw as EmbedBatchPayload;
    const log = p.log.child({ run: runId, batch: n, task: "embed_batch" });
    const row = await startBatch(p.db.pool, runId, n);
    if (!row) throw new Error(`batch ${runId}/${n} is not recorded`);
    if (row.status === "done" || row.run_status === "failed" || row.run_status === "cancelled") return;
    const t0 = performance.now();
    try {
      const input = await p.store.get(row.input_key);
      const docs = new TextDecoder().decode(input).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Doc);
      const batch = await embedBatch(await p.embedder(), docs);
      const out = encodeBatch(batch);
      const vectorsKey = layout.batchVectors(runId, n);
      const docsKey = layout.batchDocs(runId, n);
      await p.store.put(docsKey, out.docs);
      await p.store.put(vectorsKey, out.npy);
      const ms = Math.round(performance.now() - t0);
      await batchDone(p.db.pool, p.config, runId, n, {
        embedded: batch.docs.length, truncated: batch.truncated, zero: batch.zero, vectorsKey, docsKey,
        bytes: out.npy.byteLength + out.docs.byteLength, ms, modelId: batch.modelId, dims: batch.dims, maxChars: batch.maxChars,
      });
      log.info("batch embedded", { docs: batch.docs.length, truncated: batch.truncated, zero_vectors: batch.zero, ms, docs_per_s: Math.round((batch.docs.length / ms) * 1000) });
    } catch (err) {
      const msg = errorMessage(err);
      const last = helpers.job.attempts >= helpers.job.max_attempts;
      await batchFailed(p.db.pool, p.config, runId, n, last, msg).catch((e) => log.error("could not record batch failure", { error: errorMessage(e) }));
      log.warn(last ? "batch failed for good" : "batch failed; graphile-worker will retry", { attempt: helpers.job.attempts, error: msg });
      throw err;
    }
  };
}
