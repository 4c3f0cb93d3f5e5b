/**
 * Quality suite: does retrieval bring back the right documents, and does the answer recommend only products the
 * person qualifies for? On the sample corpus (1,000 documents) embedded with use-lite, a labelled query set
 * generated from the documents' metadata (bench/quality-queries.ts; 240 queries; --quick: 60 on 300 documents) goes through
 * the real app in four modes: vector-only, vector + the question's constraints as filters, hybrid (vector +
 * BM25, reciprocal-rank fusion), hybrid + filters. Also: the recall of the approximate engine (hnsw) under
 * selective filters against exact filtered search, and the lexical index's build cost.
 * @module
 */
import hnsw from "../../plugins/index/hnsw.ts";
import flat from "../../plugins/index/flat.ts";
import useLite from "../../plugins/embedder/use-lite.ts";
import { generateCorpus } from "../../examples/corpus.ts";
import type { IndexEngine, Searcher } from "../../runtime/contracts.ts";
import { filteredSearch, overFetch, rowFilter } from "../../runtime/filtered-search.ts";
import { buildLexical } from "../../runtime/lexical.ts";
import { silentLogger } from "../../runtime/log.ts";
import { servedApp } from "../../test/helpers/served-app.ts";
import { writeArtifact } from "../../test/conformance/index.ts";
import { median, num, type BenchContext, type Ratio, type SuiteOutput, type Table } from "../lib.ts";
import { admits, labelledQueries, ndcgAt10, recallAt10, recommended, type LabelledQuery } from "../quality-queries.ts";
import { docsJsonl, embedCached, expand, medianNeighbourCosine, noiseForCosine, realVectors } from "../vectors.ts";

const pctx = { baseDir: "/", log: silentLogger, env: {} };
const MODES = [
  { id: "vector", label: "vector-only", mode: "vector", filters: false },
  { id: "vector_filters", label: "vector + filters", mode: "vector", filters: true },
  { id: "hybrid", label: "hybrid", mode: "hybrid", filters: false },
  { id: "hybrid_filters", label: "hybrid + filters", mode: "hybrid", filters: true },
] as const;
type ModeId = (typeof MODES)[number]["id"];

interface Scores { recall: number[]; ndcg: number[]; ineligibleAnswers: number; answers: number; ineligibleTop10: number[] }

export async function qualitySuite(ctx: BenchContext): Promise<SuiteOutput> {
  // --quick proves the suite runs (CI): 300 documents embed in seconds where no cached vectors exist.
  const size = ctx.quick ? 300 : 1000;
  const corpus = generateCorpus({ count: size });
  const queries = labelledQueries(corpus, ctx.quick ? 60 : 240);
  const meta = new Map(corpus.map((d) => [d.id, d.metadata]));
  const vectors = await embedCached(`use-lite-corpus-${size}`, corpus, ctx.log);
  const embedder = await useLite.create(useLite.options.parse({ threads: 2 }), pctx);
  // Two servers on the same version: one answers from plain retrieval, one reads the question's constraints.
  const plain = await servedApp(corpus, embedder, { vectors, retrieval: { question_filters: false } });
  const filtered = await servedApp(corpus, embedder, { vectors, retrieval: { question_filters: true } });
  const scores = Object.fromEntries(MODES.map((m) => [m.id, { recall: [], ndcg: [], ineligibleAnswers: 0, answers: 0, ineligibleTop10: [] }])) as unknown as Record<ModeId, Scores>;
  const byKind = new Map<string, Record<ModeId, number[]>>();
  let before = 0;
  ctx.log(`${queries.length} labelled queries × ${MODES.length} modes`);
  try {
    for (const q of queries) {
      for (const m of MODES) {
        const app = m.filters ? filtered : plain;
        const { status, body } = await app.post("/generate-advice", { query: q.text, k: 10, mode: m.mode });
        if (status !== 200) throw new Error(`${m.id} "${q.text}": HTTP ${status} ${JSON.stringify(body)}`);
        const ids: string[] = body.sources.map((s: { id: string }) => s.id);
        const s = scores[m.id];
        s.recall.push(recallAt10(ids, q.relevant));
        s.ndcg.push(ndcgAt10(ids, q.relevant));
        const kind = byKind.get(q.kind) ?? (Object.fromEntries(MODES.map((x) => [x.id, []])) as unknown as Record<ModeId, number[]>);
        kind[m.id].push(ndcgAt10(ids, q.relevant));
        byKind.set(q.kind, kind);
        if (q.person) {
          const person = q.person;
          const products = ids.filter((id) => meta.get(id)?.type === "loan_product");
          s.ineligibleTop10.push(products.length ? products.filter((id) => !admits(meta.get(id)!, person)).length / products.length : 0);
          s.answers++;
          if (recommended(body.advice).some((id) => !admits(meta.get(id)!, person))) s.ineligibleAnswers++;
          // The answer before this change listed every retrieved product (first 4, as the README's example) as an option.
          if (m.id === "vector" && ids.slice(0, 4).some((id) => meta.get(id)?.type === "loan_product" && !admits(meta.get(id)!, person))) before++;
        }
      }
    }
  } finally {
    await plain.close();
    await filtered.close();
    await embedder.close?.();
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const eligibleCount = queries.filter((q) => q.person).length;
  const tables: Table[] = [{
    title: `Retrieval quality on ${size.toLocaleString("en-US")} sample documents, ${queries.length} labelled queries (${eligibleCount} eligibility, ${queries.filter((q) => q.kind === "name").length} name, ${queries.filter((q) => q.kind === "id").length} id), use-lite, flat`,
    columns: ["mode", "recall@10", "nDCG@10", "nDCG@10 ÷ vector-only", "ineligible share of retrieved products", "answers recommending an ineligible product"],
    rows: MODES.map((m) => {
      const s = scores[m.id];
      return [m.label, num(mean(s.recall), 3), num(mean(s.ndcg), 3), `${(mean(s.ndcg) / mean(scores.vector.ndcg)).toFixed(2)}×`, num(mean(s.ineligibleTop10), 3), `${s.ineligibleAnswers} of ${s.answers}`];
    }),
    note: `relevant documents come from metadata (bench/quality-queries.ts); "ineligible" = a loan product whose category, minimum credit score, amount range or term does not admit the person the question describes; ` +
      `an answer recommends the products it lists as open to the person. Before this change the answer listed every retrieved product as an option: ${before} of ${eligibleCount} vector-only answers (top 4) included an ineligible one`,
  }, {
    title: "nDCG@10 by query kind",
    columns: ["kind", ...MODES.map((m) => m.label)],
    rows: [...byKind].map(([kind, v]) => [kind, ...MODES.map((m) => num(mean(v[m.id]), 3))]),
  }];
  const ratios: Ratio[] = [
    { id: "hybrid_ndcg_vs_vector", label: "hybrid nDCG@10 ÷ vector-only", value: mean(scores.hybrid.ndcg) / mean(scores.vector.ndcg), better: "higher", goal: 1.2 },
    { id: "hybrid_filters_ndcg_vs_vector", label: "hybrid + filters nDCG@10 ÷ vector-only", value: mean(scores.hybrid_filters.ndcg) / mean(scores.vector.ndcg), better: "higher" },
    { id: "vector_filters_ndcg_vs_vector", label: "vector + filters nDCG@10 ÷ vector-only", value: mean(scores.vector_filters.ndcg) / mean(scores.vector.ndcg), better: "higher" },
    { id: "ineligible_answers_missed", label: "answers recommending an ineligible product, constraint stated (all modes)", value: MODES.reduce((a, m) => a + scores[m.id].ineligibleAnswers, 0), better: "lower", goal: 0 },
  ];
  tables.push(await filteredRecall(ctx), lexicalCost(ctx));
  return { tables, ratios, charts: [], notes: [] };
}

/** hnsw's filtered search (over-fetch, runtime/filtered-search.ts) against exact filtered search, by selectivity. */
async function filteredRecall(ctx: BenchContext): Promise<Table> {
  const dims = 384;
  const count = ctx.quick ? 5000 : 50_000;
  const rv = await realVectors(ctx.quick ? 100 : 1000, ctx.quick ? 20 : 200, dims, ctx.log);
  const parts = expand(rv, count, 1000, noiseForCosine(medianNeighbourCosine(rv)));
  const vectors = new Float32Array(count * dims);
  parts.forEach((p, i) => vectors.set(p, i * 1000 * dims));
  const open = async (e: IndexEngine): Promise<Searcher> => e.open(await writeArtifact(await e.build(vectors, dims)), { dims, count });
  const exact = await open(flat.create(flat.options.parse({}), pctx) as IndexEngine);
  const graphs = [64, 256];
  const approx = await Promise.all(graphs.map((ef) => open(hnsw.create(hnsw.options.parse({ expansion_search: ef }), pctx) as IndexEngine)));
  const rows: Table["rows"] = [];
  // 100 %: no filter, hnsw's own recall on these vectors (the ceiling the filtered rows are compared with).
  for (const share of [1, 0.5, 0.1, 0.01, 0.001]) {
    // Pseudo-random passing rows at this share (a filter on an attribute unrelated to the vectors).
    const passing = Uint32Array.from({ length: count }, (_, i) => i).filter((i) => share === 1 || ((i * 2654435761) >>> 0) / 4294967296 < share);
    const f = rowFilter(passing, count);
    const row: Table["rows"][number] = [`${share * 100}%`, passing.length];
    for (const searcher of approx) {
      let hits = 0, want = 0, searches = 0;
      const ms: number[] = [];
      for (let q = 0; q < rv.queryCount; q++) {
        const query = rv.queries.subarray(q * dims, (q + 1) * dims);
        const ref = await filteredSearch(exact, query, 10, f);
        const t = performance.now();
        const r = await overFetch((v, n) => searcher.search(v, n), count, query, Math.min(10, passing.length), f);
        ms.push(performance.now() - t);
        searches += r.searches;
        hits += r.rows.filter((x) => ref.rows.includes(x)).length;
        want += ref.rows.length;
      }
      row.push(num(hits / want, 3), num(searches / rv.queryCount, 2), num(median(ms), 3));
    }
    rows.push(row);
  }
  await exact.close();
  for (const a of approx) await a.close();
  return {
    title: `hnsw under filters: recall@10 against exact filtered search (${count.toLocaleString("en-US")} × ${dims})`,
    columns: ["rows passing", "count", ...graphs.flatMap((ef) => [`ef ${ef} recall@10`, "searches per query", "p50 ms"])], rows,
    note: "over-fetch: ask hnsw for k × 2 ÷ share + k results, keep the passing ones, ask for 4× more until k pass or every row was asked for; " +
      "vectors as in the index suite (the use-lite corpus and copies perturbed to their median neighbour distance, so many near-ties); 100 % = no filter",
  };
}

/** Building `lexical.json` from docs.jsonl, as every build_index does. */
function lexicalCost(ctx: BenchContext): Table {
  const docs = generateCorpus();
  const rows: Table["rows"] = [];
  for (const count of ctx.quick ? [1000, 10_000] : [1000, 10_000, 100_000]) {
    const bytes = docsJsonl(docs, count);
    const t = performance.now();
    const out = buildLexical(bytes);
    rows.push([count.toLocaleString("en-US"), num((performance.now() - t) / 1000, 2), num(out.byteLength / 1e6, 1), num(bytes.byteLength / 1e6, 1)]);
  }
  return { title: "Lexical index build (every version)", columns: ["documents", "build s", "lexical.json MB", "docs.jsonl MB"], rows, note: "one thread; incremental runs rebuild it from the version's docs.jsonl too" };
}
