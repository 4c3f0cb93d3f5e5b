/**
 * `embed_all`, the run orchestrator (embedding queue): an adapter over the enumerate stage and the run state
 * machine. It fixes the run's base version (once, so a retry plans against the same one), enumerates the
 * source, records each batch to embed with its `embed_batch` job, stores the reuse list, and finishes
 * enumeration (which enqueues `build_index` at once when nothing needs embedding). A retried orchestrator
 * re-reads the same batches and skips rows that exist, so it never enqueues a batch twice and never loses one.
 * @module
 */
import type { JobHelpers } from "graphile-worker";
import { errorMessage } from "../errors.ts";
import { layout } from "../keys.ts";
import type { Pipeline } from "../pipeline.ts";
import { activeRuns, addJob, cancelRuns, createRun, failRun, finishEnumerating, fixBase, recordBatch, startEnumerating } from "../runs.ts";
import { planBase } from "../stages/base.ts";
import { encodeReuse, enumerate } from "../stages/enumerate.ts";
import { embedderKey, sourceKey } from "../stages/identity.ts";

export interface EmbedAllPayload {
  run_id?: string;
  /** Set by schedules: `schedule:<name>`. */
  trigger?: string;
  overlap?: "skip" | "queue" | "replace";
}

/** For runs started by a schedule: create the run, honouring the overlap policy. */
async function runForSchedule(p: Pipeline, payload: EmbedAllPayload, helpers: JobHelpers): Promise<void> {
  const active = await activeRuns(p.db.pool, p.config.name);
  const policy = payload.overlap ?? "skip";
  if (active.length && policy === "skip") {
    helpers.logger.info(`schedule fire skipped: run ${active[0].id} still active (overlap: skip)`);
    return;
  }
  if (active.length && policy === "queue") {
    await addJob(p.db.pool, p.config, "embed_all", { ...payload }, { runAt: new Date(Date.now() + 60_000) });
    helpers.logger.info(`schedule fire deferred 60s: run ${active[0].id} still active (overlap: queue)`);
    return;
  }
  await cancelRuns(p.db.pool, active.map((r) => r.id), "replaced by a newer scheduled run");
  // The new run's own embed_all job (keyed by run id) does the work.
  await createRun(p.db.pool, p.config, payload.trigger ?? "schedule");
}

export function makeEmbedAll(p: Pipeline) {
  return async (raw: unknown, helpers: JobHelpers): Promise<void> => {
    const payload = (raw ?? {}) as EmbedAllPayload;
    if (!payload.run_id) return runForSchedule(p, payload, helpers);
    const runId = payload.run_id;
    const run = await startEnumerating(p.db.pool, runId);
    if (!run) return;
    const log = p.log.child({ run: runId, task: "embed_all" });

    // Every attempt of a run plans against the base the first attempt chose, so their batches agree.
    const key = await embedderKey(p.config);
    const earlier = run.base_reason !== null;
    const plan = await planBase(p.store, { pipeline: p.config.name, embedderKey: key, full: run.full_run, version: earlier ? run.base_version : undefined })
      .catch(async (err) => {
        const msg = `reading the previous version failed: ${errorMessage(err)}`;
        if (helpers.job.attempts >= helpers.job.max_attempts) await failRun(p.db.pool, runId, msg);
        throw new Error(msg, { cause: err });
      });
    if (earlier && (plan.base?.version ?? null) !== run.base_version) {
      const msg = `the base version ${run.base_version} an earlier attempt planned against is no longer usable (${plan.reason}); start a new run`;
      await failRun(p.db.pool, runId, msg);
      throw new Error(msg);
    }
    if (!earlier) await fixBase(p.db.pool, runId, { version: plan.base?.version ?? null, reason: plan.reason, embedderKey: key });
    const base = plan.base;
    if (!base) log.info("embedding every document", { reason: plan.reason });

    let enqueued = 0;
    // A failed put of a batch input is a store problem (disk full, permission denied), not a source one.
    let putFailed = false;
    let source;
    let result;
    try {
      source = await p.source();
      // A source that can tell what changed since the base was read is asked only that (same result, less reading).
      const skey = await sourceKey(p.config);
      const since = base?.manifest.reuse?.source_key === skey ? base.manifest.reuse.source_cursor : undefined;
      result = await enumerate(source, {
        batchSize: p.config.batch_size,
        base,
        since,
        onBatch: async (docs, n) => {
          const inputKey = layout.batchInput(runId, n);
          const body = new TextEncoder().encode(docs.map((d) => JSON.stringify(d)).join("\n") + "\n");
          await p.store.put(inputKey, body).catch((err) => {
            putFailed = true;
            throw err;
          });
          if (await recordBatch(p.db.pool, p.config, runId, n, docs.length, inputKey)) enqueued++;
        },
      });
      if (result.reuse.length) {
        putFailed = true;
        await p.store.put(layout.runReuse(runId), encodeReuse(result.reuse));
        putFailed = false;
      }
    } catch (err) {
      const msg = putFailed ? `writing batch input failed: ${errorMessage(err)}` : `reading source ${p.config.stages.source.plugin} failed: ${errorMessage(err)}`;
      if (helpers.job.attempts >= helpers.job.max_attempts) await failRun(p.db.pool, runId, msg);
      throw new Error(msg, { cause: err });
    } finally {
      await source?.close?.().catch(() => {});
    }

    await finishEnumerating(p.db.pool, p.config, runId, {
      batches: result.batches,
      read: result.read,
      skipped: result.skipped,
      samples: result.samples,
      reused: result.reuse.length,
      changed: result.changed,
      removed: result.removed,
      reuseKey: result.reuse.length ? layout.runReuse(runId) : null,
      sourceRead: result.mode,
      sourceCursor: result.cursor ?? null,
      kept: result.toEmbed + result.reuse.length,
    });
    log.info("run enumerated", {
      batches: result.batches, enqueued_now: enqueued, docs_read: result.read, to_embed: result.toEmbed, reused: result.reuse.length,
      changed: result.changed, removed: result.removed, skipped: result.skipped, base: base?.version ?? null, source_read: result.mode,
    });
  };
}
