/**
 * The embedding suite's raw baseline, in its own process like the pipeline's worker: the configured embedder
 * plugin called directly on the corpus in batches of the pipeline's `batch_size`, one after another, after the
 * same warm-up the worker gets. argv: pipeline.yaml, corpus.jsonl. Answers `{ docs, ms, rssMiB }` over IPC.
 * @module
 */
import * as fs from "node:fs";
import { loadOrFail } from "../../runtime/commands/common.ts";
import type { Embedder } from "../../runtime/contracts.ts";
import { createLogger } from "../../runtime/log.ts";
import { createPlugin } from "../../runtime/pipeline.ts";
import { generateCorpus } from "../../examples/corpus.ts";
import { peakRssMiB } from "../lib.ts";

try {
  const config = await loadOrFail(process.argv[2]);
  const log = createLogger({ bench: "embed-raw" }, { level: "warn" });
  const embedder = await createPlugin<Embedder>("embedder", config.stages.embedder, { baseDir: config.baseDir, log, env: process.env });
  const cut = (t: string) => t.slice(0, embedder.maxChars);
  await embedder.embed(generateCorpus({ count: 32, seed: 9 }).map((d) => cut(d.text)));
  const texts = fs.readFileSync(process.argv[3], "utf8").split("\n").filter(Boolean).map((l) => cut((JSON.parse(l) as { text: string }).text));
  const t0 = performance.now();
  for (let i = 0; i < texts.length; i += config.batch_size) await embedder.embed(texts.slice(i, i + config.batch_size));
  const ms = performance.now() - t0;
  process.send?.({ docs: texts.length, ms, rssMiB: peakRssMiB(process.pid) }, () => process.exit(0));
} catch (err) {
  process.send?.({ error: (err as Error).message }, () => process.exit(1));
}
