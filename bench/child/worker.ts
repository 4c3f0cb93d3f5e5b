/**
 * A pipeline worker in its own process, for the embedding suite: loads the pipeline.yaml given as argv[2],
 * loads and warms the embedder (so model loading is not timed as pipeline work), starts `startWorker`
 * (graphile-worker runners, no crontab) and tells the parent `{ ready }` over IPC. SIGTERM stops it cleanly,
 * which also lets `--cpu-prof` write its profile.
 * @module
 */
import { loadOrFail } from "../../runtime/commands/common.ts";
import { createLogger } from "../../runtime/log.ts";
import { openPipeline } from "../../runtime/pipeline.ts";
import { startWorker } from "../../runtime/worker.ts";
import { generateCorpus } from "../../examples/corpus.ts";

const send = (m: unknown) => process.send?.(m);

try {
  const config = await loadOrFail(process.argv[2]);
  const p = await openPipeline(config, createLogger({ bench: "worker" }, { level: "warn" }));
  const embedder = await p.embedder();
  await embedder.embed(generateCorpus({ count: 32, seed: 9 }).map((d) => d.text.slice(0, embedder.maxChars)));
  const w = await startWorker(p, { cron: false });
  process.once("SIGTERM", () => {
    void w.stop("bench finished").then(() => p.close()).finally(() => process.exit(0));
  });
  send({ ready: true, pid: process.pid });
} catch (err) {
  send({ error: (err as Error).message });
  process.exit(1);
}
