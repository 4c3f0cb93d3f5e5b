/**
 * Embedder throughput on 1,000 short realistic texts (the conformance suite's sample): docs/s after warm-up,
 * for `use-lite` (in-process and 2 worker threads) and `transformers` on a generated MiniLM-L6-shaped BERT
 * (random weights: same compute as all-MiniLM-L6-v2, so the speed carries over, the vectors do not), with
 * one onnxruntime thread and with one per core.
 * Run: `npx tsx bench/embedders.ts [use-lite|transformers]`. Wall-clock docs/s depends on the cores free at
 * the time; docs per CPU-second (all threads of this process) does much less, so both are printed.
 * @module
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import type { Embedder } from "../runtime/contracts.ts";
import { silentLogger } from "../runtime/log.ts";
import transformers from "../plugins/embedder/transformers.ts";
import useLite from "../plugins/embedder/use-lite.ts";
import { sampleTexts } from "../test/conformance/embedder.ts";
import { MINILM_L6_SHAPE, makeBertModel } from "../test/fixtures/tiny-bert.ts";

const texts = sampleTexts(1000);
const only = process.argv[2];

async function measure(label: string, make: () => Promise<Embedder>): Promise<void> {
  let t = performance.now();
  const e = await make();
  const loadMs = performance.now() - t;
  await e.embed(texts.slice(0, 16));
  t = performance.now();
  const cpu = process.cpuUsage();
  await e.embed(texts);
  const s = (performance.now() - t) / 1000;
  const used = process.cpuUsage(cpu);
  const cpuS = (used.user + used.system) / 1e6;
  console.log(`${label.padEnd(40)} ${(texts.length / s).toFixed(1).padStart(7)} docs/s  ${(texts.length / cpuS).toFixed(1).padStart(7)} docs/CPU-s` +
    `  (model load ${loadMs.toFixed(0)} ms, ${e.dims}-d)`);
}

const ctx = { baseDir: process.cwd(), log: silentLogger, env: {} };
console.log(`${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(2)}; ${texts.length} texts, mean ${Math.round(texts.join("").length / texts.length)} chars`);
if (!only || only === "use-lite") {
  for (const threads of [1, 2]) {
    await measure(`use-lite threads=${threads}`, async () => useLite.create(useLite.options.parse({ threads }), ctx));
  }
}
if (!only || only === "transformers") {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-bench-minilm-"));
  try {
    // The corpus' words go into the vocabulary, so texts tokenise to about as many tokens as with the real one.
    const words = [...new Set(texts.join(" ").toLowerCase().match(/[a-z]+/g))];
    await makeBertModel(dir, { ...MINILM_L6_SHAPE, words });
    for (const dtype of ["q8", "fp32"]) {
      for (const threads of [1, 0]) {
        await measure(`transformers MiniLM-L6 shape ${dtype} threads=${threads}`, async () =>
          transformers.create(transformers.options.parse({ model: dir, dtype, threads }), ctx));
      }
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
