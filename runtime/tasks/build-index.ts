/**
 * `build_index` (indexing queue): loads every batch artifact of a run, concatenates the vectors (one memcpy
 * per batch), builds with the configured engine, names the version by SHA-256 of the index file and the
 * documents, writes `indexes/<version>/` with its manifest, atomically replaces `indexes/latest`, records the
 * version and publishes a swap event. The same inputs give the same version, so a retried build is harmless.
 * @module
 */
import * as crypto from "node:crypto";
import type { JobHelpers } from "graphile-worker";
import { errorMessage } from "../errors.ts";
import { layout } from "../keys.ts";
import { decodeNpy } from "../npy.ts";
import type { Pipeline } from "../pipeline.ts";
import { withRetry } from "../retry.ts";
import { failRun, getRun } from "../runs.ts";
import { concatBytes } from "../streams.ts";
import { writeVersion, type Manifest } from "../versions.ts";

export interface BuildIndexPayload {
  run_id: string;
}

export function makeBuildIndex(p: Pipeline) {
  return async (raw: unknown, helpers: JobHelpers): Promise<void> => {
    const { run_id: runId } = raw as BuildIndexPayload;
    const log = p.log.child({ run: runId, task: "build_index" });
    const run = await getRun(p.db.pool, runId);
    if (!run) throw new Error(`run ${runId} does not exist`);
    if (run.status !== "building") return;
    const t0 = performance.now();
    const batches = (await p.db.pool.query<{ n: number; status: string; vectors_key: string | null; docs_key: string | null }>(
      "select n, status, vectors_key, docs_key from apfa.batches where run_id = $1 order by n",
      [runId],
    )).rows;
    const retry = { onRetry: (e: unknown, a: number, d: number) => log.warn("store call failed; retrying", { attempt: a, delay_ms: d, error: errorMessage(e) }) };

    const parts: Array<{ n: number; data: Float32Array; rows: number; cols: number; docs: Uint8Array }> = [];
    const missing: Array<{ n: number; reason: string }> = [];
    for (const b of batches) {
      if (b.status !== "done" || !b.vectors_key || !b.docs_key) {
        missing.push({ n: b.n, reason: `batch ${b.status}` });
        continue;
      }
      try {
        const npy = decodeNpy(await withRetry(() => p.store.get(b.vectors_key!), retry), b.vectors_key);
        const docs = await withRetry(() => p.store.get(b.docs_key!), retry);
        parts.push({ n: b.n, ...npy, docs });
      } catch (err) {
        log.error("batch artifact missing or unreadable", { batch: b.n, error: errorMessage(err) });
        missing.push({ n: b.n, reason: errorMessage(err) });
      }
    }
    const total = batches.length || 1;
    if (missing.length / total > p.config.run.missing_batch_threshold) {
      const msg = `${missing.length} of ${batches.length} batches missing (threshold ${p.config.run.missing_batch_threshold}): ` +
        missing.slice(0, 10).map((m) => `#${m.n} ${m.reason}`).join("; ");
      await failRun(p.db.pool, runId, msg);
      log.error("build refused", { missing: missing.length, batches: batches.length });
      return;
    }
    const dims = parts[0]?.cols ?? 0;
    const bad = parts.find((x) => x.cols !== dims);
    if (bad || dims === 0) {
      await failRun(p.db.pool, runId, bad ? `batch ${bad.n} has ${bad.cols} dims, batch ${parts[0].n} has ${dims}` : "no vectors to index");
      return;
    }
    const count = parts.reduce((a, x) => a + x.rows, 0);
    const vectors = new Float32Array(count * dims);
    let off = 0;
    for (const x of parts) {
      vectors.set(x.data, off);
      off += x.data.length;
    }
    const docs = concatBytes(parts.map((x) => x.docs));
    const loadMs = performance.now() - t0;

    const engine = await p.engine();
    const embedder = await p.embedder();
    const t1 = performance.now();
    const artifact = await engine.build(vectors, dims);
    const buildMs = performance.now() - t1;
    const main = artifact.files[artifact.main];
    const version = crypto.createHash("sha256").update(main).update(docs).digest("hex");
    const manifest: Manifest = {
      version,
      pipeline: p.config.name,
      engine: p.config.stages.index.plugin,
      metric: engine.metric,
      dims,
      count,
      model_id: embedder.modelId,
      run_id: runId,
      created_at: new Date().toISOString(),
      main: artifact.main,
      files: {},
    };
    await writeVersion(p, manifest, { ...artifact.files, "docs.jsonl": docs }, retry);

    const stats = {
      docs_read: Number(run.docs_read),
      docs_embedded: Number(run.docs_embedded),
      docs_skipped: Number(run.docs_skipped),
      docs_truncated: Number(run.docs_truncated),
      skipped: run.skipped,
      batches: batches.length,
      batches_missing: missing.length,
      vectors: count,
      duration_s: run.started_at ? (Date.now() - run.started_at.getTime()) / 1000 : undefined,
      docs_per_s: run.started_at ? Number(run.docs_embedded) / ((Date.now() - run.started_at.getTime()) / 1000) : undefined,
      build_load_ms: Math.round(loadMs),
      build_engine_ms: Math.round(buildMs),
    };
    await p.db.pool.query(
      `update apfa.runs set status = 'succeeded', index_version = $2, stats = $3, finished_at = now() where id = $1 and status = 'building'`,
      [runId, version, JSON.stringify(stats)],
    );
    await withRetry(() => p.store.put(layout.runReport(runId), new TextEncoder().encode(JSON.stringify({ run_id: runId, version, stats }, null, 2))), retry)
      .catch((err) => log.warn("run report not written", { error: errorMessage(err) }));
    log.info("index built", { version, count, dims, engine: manifest.engine, load_ms: Math.round(loadMs), build_ms: Math.round(buildMs) });
    void helpers;
  };
}
