/**
 * `embed_all`, the run orchestrator (embedding queue). Reads the source in order, applies the bad-document
 * rules, writes each batch's input to the store and, in one transaction per batch, records the batch row and
 * enqueues its `embed_batch` job. A retried orchestrator re-reads the same batches and skips rows that exist,
 * so it never enqueues a batch twice and never loses one.
 * @module
 */
import type { JobHelpers } from "graphile-worker";
import { checkItem, isSkip, type Doc, type Skip } from "../documents.ts";
import { errorMessage } from "../errors.ts";
import { layout } from "../keys.ts";
import type { Pipeline } from "../pipeline.ts";
import { withRetry } from "../retry.ts";
import { activeRuns, addJob, createRun, failRun, fanIn, getRun, tx } from "../runs.ts";

const SAMPLE_LIMIT = 50;

export interface EmbedAllPayload {
  run_id?: string;
  /** Set by schedules: `schedule:<name>`. */
  trigger?: string;
  overlap?: "skip" | "queue" | "replace";
}

/** For runs started by a schedule: create the run, honouring the overlap policy. */
async function runForSchedule(p: Pipeline, payload: EmbedAllPayload, helpers: JobHelpers): Promise<string | undefined> {
  const active = await activeRuns(p.db.pool, p.config.name);
  const policy = payload.overlap ?? "skip";
  if (active.length && policy === "skip") {
    helpers.logger.info(`schedule fire skipped: run ${active[0].id} still active (overlap: skip)`);
    return undefined;
  }
  if (active.length && policy === "queue") {
    await addJob(p.db.pool, p.config, "embed_all", { ...payload }, { runAt: new Date(Date.now() + 60_000) });
    helpers.logger.info(`schedule fire deferred 60s: run ${active[0].id} still active (overlap: queue)`);
    return undefined;
  }
  for (const r of active) await p.db.pool.query("update apfa.runs set status = 'cancelled', finished_at = now(), error = 'replaced by a newer scheduled run' where id = $1", [r.id]);
  return createRun(p.db.pool, p.config, payload.trigger ?? "schedule");
}

export function makeEmbedAll(p: Pipeline) {
  return async (raw: unknown, helpers: JobHelpers): Promise<void> => {
    const payload = (raw ?? {}) as EmbedAllPayload;
    const runId = payload.run_id ?? (await runForSchedule(p, payload, helpers));
    if (!runId) return;
    if (!payload.run_id) {
      // The schedule created the run; its own embed_all job (keyed by run id) does the work.
      return;
    }
    const run = await getRun(p.db.pool, runId);
    if (!run) throw new Error(`run ${runId} does not exist`);
    if (run.status !== "pending" && run.status !== "enumerating") return;
    await p.db.pool.query("update apfa.runs set status = 'enumerating', started_at = coalesce(started_at, now()) where id = $1", [runId]);

    const log = p.log.child({ run: runId, task: "embed_all" });
    const batchSize = p.config.batch_size;
    const seen = new Set<string>();
    const skipped: Record<string, number> = {};
    const samples: Skip[] = [];
    let read = 0;
    let n = 0;
    let batch: Doc[] = [];
    let enqueued = 0;
    // A failed put of a batch input is a store problem (disk full, permission denied), not a source one.
    let putFailed = false;

    const flush = async () => {
      const docs = batch;
      batch = [];
      const num = n++;
      const key = layout.batchInput(runId, num);
      const body = new TextEncoder().encode(docs.map((d) => JSON.stringify(d)).join("\n") + "\n");
      await withRetry(() => p.store.put(key, body), { onRetry: (e, a, d) => log.warn("store put failed; retrying", { key, attempt: a, delay_ms: d, error: errorMessage(e) }) })
        .catch((err) => {
          putFailed = true;
          throw err;
        });
      const added = await tx(p.db.pool, async (c) => {
        const ins = await c.query(
          "insert into apfa.batches (run_id, n, docs, input_key) values ($1, $2, $3, $4) on conflict do nothing",
          [runId, num, docs.length, key],
        );
        if (ins.rowCount === 0) return false;
        await addJob(c, p.config, "embed_batch", { run_id: runId, n: num }, { key: `embed_batch:${runId}:${num}` });
        return true;
      });
      if (added) enqueued++;
    };

    let source;
    try {
      source = await p.source();
      for await (const page of source.pages({ pageSize: Math.min(batchSize, 10_000) })) {
        for (const item of page) {
          read++;
          const r = checkItem(item, seen);
          if (isSkip(r)) {
            skipped[r.reason] = (skipped[r.reason] ?? 0) + 1;
            if (samples.length < SAMPLE_LIMIT) samples.push(r);
            continue;
          }
          batch.push(r);
          if (batch.length >= batchSize) await flush();
        }
      }
      if (batch.length) await flush();
    } catch (err) {
      const msg = putFailed ? `writing batch input failed: ${errorMessage(err)}` : `reading source ${p.config.stages.source.plugin} failed: ${errorMessage(err)}`;
      if (helpers.job.attempts >= helpers.job.max_attempts) await failRun(p.db.pool, runId, msg);
      throw new Error(msg, { cause: err });
    } finally {
      await source?.close?.().catch(() => {});
    }

    const skippedTotal = Object.values(skipped).reduce((a, b) => a + b, 0);
    await tx(p.db.pool, async (c) => {
      await c.query(
        `update apfa.runs set status = case when $2::int = 0 then 'failed' else 'embedding' end,
                error = case when $2::int = 0 then 'the source yielded no valid documents' else error end,
                finished_at = case when $2::int = 0 then now() else finished_at end,
                batches_total = $2, docs_read = $3, docs_skipped = $4, skipped = $5, skipped_samples = $6, enumerated_at = now()
          where id = $1 and status = 'enumerating'`,
        [runId, n, read, skippedTotal, JSON.stringify(skipped), JSON.stringify(samples)],
      );
      await fanIn(c, p.config, runId);
    });
    log.info("run enumerated", { batches: n, enqueued_now: enqueued, docs_read: read, docs_skipped: skippedTotal, skipped });
  };
}
