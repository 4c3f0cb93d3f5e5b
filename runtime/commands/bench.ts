/** `apfa bench`: the benchmark suites (bench/run.ts), each figure a ratio against a raw baseline. @module */
import type { Command } from "./common.ts";

export const bench: Command = {
  summary: "Run the benchmark suites (embedding, queue, index, serve, incremental, quality): tables, bench/results/<suite>.json, BENCHMARKS.md with SVG charts.",
  usage: [
    "apfa bench [suite...] [--quick] [--large] [--load] [--compare] [--accept] [--profile] [--report]",
    "Suites: embedding, queue, index, serve, load (the serve suite at 1k and 10k connections; what --load runs), incremental (unchanged and 0.1-100 % changed re-runs against a full run), quality (recall@10, nDCG@10 and ineligible recommendations on labelled queries; filtered hnsw recall), ann (apfa's engines beside FAISS on the same vectors), million (a 1M-document run with hnsw, served by 1 and 2 processes, against flat; about an hour); all but load and million by default",
    "  --quick     small sizes, about a minute per suite (CI proves the suites run); writes under bench/results/quick/",
    "  --large     adds the 1M-vector index and the use-lite batch/concurrency sweeps; with index: ann at 100k and 1M, and million",
    "  --load      serve under 1k and 10k connections, a Zipf query mix, a 100k index, with and without swaps, at 1 to cores (at most 4) processes (the load suite)",
    "  --compare   exit 1 when a ratio is more than 20% worse than bench/baseline.json",
    "  --accept    write this run's ratios to bench/baseline.json",
    "  --profile   CPU-profile the bench process and its children (bench/results/profiles/) and print where time went",
    "  --report    only rewrite the report (and charts' links) from the saved bench/results/*.json",
    "Needs Postgres at 127.0.0.1:5432 (APFA_BENCH_ADMIN_URL to change); each suite creates and drops its own database.",
  ].join("\n"),
  options: {
    quick: { type: "boolean" },
    large: { type: "boolean" },
    load: { type: "boolean" },
    compare: { type: "boolean" },
    accept: { type: "boolean" },
    profile: { type: "boolean" },
    report: { type: "boolean" },
  },
  async run({ values, positionals }) {
    const { runBench } = await import("../../bench/run.ts");
    return runBench({
      suites: positionals,
      quick: Boolean(values.quick),
      large: Boolean(values.large),
      load: Boolean(values.load),
      compare: Boolean(values.compare),
      accept: Boolean(values.accept),
      profile: Boolean(values.profile),
      reportOnly: Boolean(values.report),
    });
  },
};
