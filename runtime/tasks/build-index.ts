/**
 * `build_index` (indexing queue): an adapter over the build stage. Reads the run's new batch parts (refusing
 * when more are missing than `run.missing_batch_threshold` allows), the base version's rows when the run
 * carries any, builds the version, writes `indexes/<version>/` with its manifest and publishes it. When the
 * run changed nothing, the base version is the result as it is. The same inputs give the same version, so a
 * retried build is harmless.
 * @module
 */
import type { JobHelpers } from "graphile-worker";
import { errorMessage, isApfaError } from "../errors.ts";
import { layout } from "../keys.ts";
import { decodeNpy } from "../npy.ts";
import type { Pipeline } from "../pipeline.ts";
import { loadQuerySamples } from "../query-samples.ts";
import { failRun, getRun, listBatches, recordBuildProgress, succeedRun, type RunRow } from "../runs.ts";
import { readBase } from "../stages/base.ts";
import { buildVersion, unchangedBase, type NewPart } from "../stages/build.ts";
import { decodeReuse } from "../stages/enumerate.ts";
import { engineKey, sourceKey } from "../stages/identity.ts";
import { publishVersion, readLatest, readManifest, writeVersion } from "../versions.ts";

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
    const batches = await listBatches(p.db.pool, runId);
    const parts: NewPart[] = [];
    const missing: Array<{ n: number; reason: string }> = [];
    for (const b of batches) {
      if (b.status !== "done" || !b.vectors_key || !b.docs_key || b.dims === null || b.model_id === null || b.max_chars === null) {
        missing.push({ n: b.n, reason: `batch ${b.status}` });
        continue;
      }
      try {
        const npy = decodeNpy(await p.store.get(b.vectors_key), b.vectors_key);
        if (npy.rows && npy.cols !== b.dims) throw new Error(`${b.vectors_key} has ${npy.cols} dims, the batch says ${b.dims}`);
        parts.push({ n: b.n, docs: await p.store.get(b.docs_key), vectors: npy.data, rows: npy.rows, dims: b.dims, modelId: b.model_id, maxChars: b.max_chars });
      } catch (err) {
        log.error("batch artifact missing or unreadable", { batch: b.n, error: errorMessage(err) });
        missing.push({ n: b.n, reason: errorMessage(err) });
      }
    }
    if (batches.length && missing.length / batches.length > p.config.run.missing_batch_threshold) {
      const msg = `${missing.length} of ${batches.length} batches missing (threshold ${p.config.run.missing_batch_threshold}): ` +
        missing.slice(0, 10).map((m) => `#${m.n} ${m.reason}`).join("; ");
      await failRun(p.db.pool, runId, msg);
      log.error("build refused", { missing: missing.length, batches: batches.length });
      return;
    }

    let version: string;
    let timing = { load_ms: 0, assemble_ms: 0, engine_ms: 0, lexical_ms: 0 };
    let count: number;
    try {
      const reuse = run.reuse_key ? decodeReuse(await p.store.get(run.reuse_key)) : [];
      const baseManifest = run.base_version ? await readManifest(p.store, run.base_version) : undefined;
      const ekey = await engineKey(p.config);
      if (baseManifest && unchangedBase(baseManifest, reuse, parts.length, ekey, p.config.server.retrieval.lexical_max_docs)) {
        version = baseManifest.version;
        count = baseManifest.count;
        if ((await readLatest(p.store))?.version !== version) await publishVersion(p, baseManifest);
        log.info("nothing changed: the base version stands", { version });
      } else {
        const engine = await p.engine();
        const sameEngine = baseManifest?.engine === p.config.stages.index.plugin && baseManifest.reuse?.engine_key === ekey;
        const base = baseManifest && reuse.length ? await readBase(p.store, baseManifest, { engineFiles: sameEngine && Boolean(engine.update) }) : undefined;
        const queries = await loggedQueries(p, run, parts[0]?.dims ?? base?.dims ?? 0, log);
        timing.load_ms = Math.round(performance.now() - t0);
        const progress = progressWriter(p, runId, log);
        const built = await buildVersion({
          pipeline: p.config.name, runId, engine, engineName: p.config.stages.index.plugin, engineKey: ekey,
          embedderKey: run.embedder_key ?? "", source: { key: await sourceKey(p.config), cursor: run.source_cursor ?? undefined }, parts, base, reuse, queries,
          warn: (m, f) => log.warn(m, f), onProgress: progress.report, lexicalMaxDocs: p.config.server.retrieval.lexical_max_docs,
        }).finally(progress.flushed);
        timing = { ...timing, assemble_ms: Math.round(built.assembleMs), engine_ms: Math.round(built.engineMs), lexical_ms: Math.round(built.lexicalMs) };
        await writeVersion(p, built.manifest, built.files);
        version = built.manifest.version;
        count = built.manifest.count;
        log.info("index built", { version, count, dims: built.manifest.dims, engine: built.manifest.engine, built_from: built.manifest.built_from, index_build: built.manifest.index_build, ...timing });
      }
    } catch (err) {
      // Bad inputs (a damaged base, mixed embedders, nothing to index) do not improve with a retry; a store that
      // is down, full or refusing access may once someone fixes it, so that goes back to graphile-worker.
      if (!isApfaError(err, "index") && helpers.job.attempts < helpers.job.max_attempts) throw err;
      await failRun(p.db.pool, runId, `build failed: ${errorMessage(err)}`);
      log.error("build failed", { error: errorMessage(err) });
      return;
    }
    const stats = runStats(run, { batches: batches.length, missing: missing.length, vectors: count, ...timing });
    await succeedRun(p.db.pool, runId, version, stats);
    await p.store.put(layout.runReport(runId), new TextEncoder().encode(JSON.stringify({ run_id: runId, version, stats }, null, 2)))
      .catch((err) => log.warn("run report not written", { error: errorMessage(err) }));
  };
}

/** Bounds how often a build's progress is written to its run row. */
const PROGRESS_EVERY_MS = 1000;

/**
 * Writes the engine's build progress to the run row for `apfa run`'s progress line: the first and the last count
 * and at most one a second between, one write at a time and in order. A failed write only loses a display.
 */
function progressWriter(p: Pipeline, runId: string, log: Pipeline["log"]) {
  let lastAt = -Infinity;
  let writes = Promise.resolve();
  return {
    report(done: number, total: number): void {
      const now = performance.now();
      if (done > 0 && done < total && now - lastAt < PROGRESS_EVERY_MS) return;
      lastAt = now;
      writes = writes.then(() => recordBuildProgress(p.db.pool, runId, done, total)).catch((err) => log.debug("build progress not recorded", { error: errorMessage(err) }));
    },
    /** Resolves when every write has landed, so none arrives after the run's outcome. */
    flushed: () => writes,
  };
}

/**
 * The newest logged query vectors of the run's embedder (`server.query_samples.build_sample` of them), for the
 * engine's recall check. Without them (none logged yet, or the read failed) the check uses corpus rows only,
 * as before: a build never fails for want of samples.
 */
async function loggedQueries(p: Pipeline, run: RunRow, dims: number, log: Pipeline["log"]): Promise<Float32Array | undefined> {
  const limit = p.config.server.query_samples.build_sample;
  if (!run.embedder_key || !dims || limit <= 0) return undefined;
  try {
    const q = await loadQuerySamples(p.db.pool, run.embedder_key, dims, limit);
    if (q.length) log.info("recall check uses logged queries", { queries: q.length / dims });
    return q.length ? q : undefined;
  } catch (err) {
    log.warn("logged queries not read; the recall check uses corpus rows only", { error: errorMessage(err) });
    return undefined;
  }
}

/** The figures `apfa.runs.stats` and `runs/<run>.json` carry. */
function runStats(run: RunRow, b: { batches: number; missing: number; vectors: number; load_ms: number; assemble_ms: number; engine_ms: number; lexical_ms: number }): Record<string, unknown> {
  const elapsed = run.started_at ? (Date.now() - run.started_at.getTime()) / 1000 : undefined;
  return {
    docs_read: Number(run.docs_read),
    docs_embedded: Number(run.docs_embedded),
    docs_reused: Number(run.docs_reused),
    docs_changed: Number(run.docs_changed),
    docs_removed: Number(run.docs_removed),
    docs_skipped: Number(run.docs_skipped),
    docs_truncated: Number(run.docs_truncated),
    skipped: run.skipped,
    base_version: run.base_version,
    base_reason: run.base_reason,
    source_read: run.source_read,
    batches: b.batches,
    batches_missing: b.missing,
    vectors: b.vectors,
    duration_s: elapsed,
    docs_per_s: elapsed ? Number(run.docs_embedded) / elapsed : undefined,
    build_load_ms: b.load_ms,
    build_assemble_ms: b.assemble_ms,
    build_engine_ms: b.engine_ms,
    build_lexical_ms: b.lexical_ms,
  };
}
