/**
 * Retrieval behind `/search` and `/generate-advice`: vector search, restricted to the rows a metadata filter lets
 * through (runtime/filter.ts, runtime/filtered-search.ts) and, in hybrid mode, fused by reciprocal rank with the
 * version's lexical index (runtime/lexical.ts). Per served version it keeps, built on first use: every row's
 * metadata (one parse of docs.jsonl), the passing rows of recent filters, and the loaded lexical index; they go
 * with the version when it is swapped out.
 * @module
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import type { Logger, RowFilter } from "../runtime/contracts.ts";
import { errorMessage } from "../runtime/errors.ts";
import type { MetaPredicate } from "../runtime/filter.ts";
import { filteredSearch, rowFilter } from "../runtime/filtered-search.ts";
import { fuseRanks, LEXICAL_FILE, loadLexical, type Lexical } from "../runtime/lexical.ts";
import type { LoadedIndex } from "./index-holder.ts";

/** `server.retrieval` in pipeline.yaml. */
export interface RetrievalConfig {
  /** `vector`, or `hybrid` (vector + lexical, fused); a request's `mode` overrides it. */
  mode: "vector" | "hybrid";
  /** Results taken from each side before fusing. */
  candidates: number;
  /** The `c` of reciprocal-rank fusion. */
  rrf_k: number;
  /** `/generate-advice` retrieves the products that fit the constraints a question states first. */
  question_filters: boolean;
}

/** A filter as the retriever takes it: compiled, with a key that names it in the per-version cache. */
export interface CompiledFilter {
  key: string;
  test: MetaPredicate;
}

export interface Ranked {
  row: number;
  score: number;
}

interface Extras {
  meta?: Promise<Array<Record<string, unknown>>>;
  filters: Map<string, RowFilter>;
  filterBytes: number;
  lexical?: Promise<Lexical | undefined>;
}

/** Rows whose documents are read together when the metadata is gathered. */
const META_RUN = 4096;

/**
 * Passing-row sets kept per version; each is a bit per row plus the passing rows. Advice questions bring a filter
 * per distinct set of stated facts (363 in the load suite's 10k questions), so 64 were recomputed over every row
 * again and again.
 */
const FILTERS_KEPT = 512;
/** And at most this many bytes of them per version (bits and rows), whatever their count. */
const FILTER_BYTES_KEPT = 64 * 1024 * 1024;

const filterBytes = (rf: RowFilter, count: number) => Math.ceil(count / 8) + rf.rows.byteLength;

export function createRetriever(cfg: RetrievalConfig, log: Logger) {
  const extras = new WeakMap<LoadedIndex, Extras>();
  const of = (ix: LoadedIndex): Extras => {
    let e = extras.get(ix);
    if (!e) extras.set(ix, (e = { filters: new Map(), filterBytes: 0 }));
    return e;
  };

  /** Every row's metadata, read through the document file once (in runs of rows, one read each). */
  function metadata(ix: LoadedIndex): Promise<Array<Record<string, unknown>>> {
    const e = of(ix);
    if (e.meta) return e.meta;
    const gathering = (async () => {
      const meta: Array<Record<string, unknown>> = [];
      for (let from = 0; from < ix.docs.count; from += META_RUN) {
        const rows = Array.from({ length: Math.min(META_RUN, ix.docs.count - from) }, (_, i) => from + i);
        for (const line of await ix.docs.getMany(rows)) meta.push((JSON.parse(line) as { metadata?: Record<string, unknown> }).metadata ?? {});
      }
      return meta;
    })();
    gathering.catch(() => {
      if (e.meta === gathering) e.meta = undefined; // a failed read is tried again by the next filtered request
    });
    return (e.meta = gathering);
  }

  /** The rows `f` lets through in this version, computed once per filter while it stays among the recent ones. */
  async function passing(ix: LoadedIndex, f: CompiledFilter): Promise<RowFilter> {
    const e = of(ix);
    let rf = e.filters.get(f.key);
    if (!rf) {
      const meta = await metadata(ix);
      rf = e.filters.get(f.key); // another request may have computed it while this one waited
      if (!rf) {
        const rows: number[] = [];
        for (let r = 0; r < meta.length; r++) if (f.test(meta[r])) rows.push(r);
        rf = rowFilter(Uint32Array.from(rows), meta.length);
        e.filterBytes += filterBytes(rf, meta.length);
        while (e.filters.size >= FILTERS_KEPT || (e.filters.size > 0 && e.filterBytes > FILTER_BYTES_KEPT)) {
          const [oldest, old] = e.filters.entries().next().value!;
          e.filters.delete(oldest);
          e.filterBytes -= filterBytes(old, meta.length);
        }
      }
    }
    e.filters.delete(f.key); // re-inserted: Map order is recency
    e.filters.set(f.key, rf);
    return rf;
  }

  function lexical(ix: LoadedIndex): Promise<Lexical | undefined> {
    const e = of(ix);
    e.lexical ??= (async () => {
      if (!ix.manifest.files[LEXICAL_FILE]) {
        log.warn("hybrid retrieval asked for, but this index version has no lexical index (built before versions had one, or above server.retrieval.lexical_max_docs); answering with vectors only", { version: ix.version });
        return undefined;
      }
      try {
        return loadLexical(await fsp.readFile(path.join(ix.dir, LEXICAL_FILE), "utf8"));
      } catch (err) {
        log.error("cannot load the lexical index; answering with vectors only", { version: ix.version, error: errorMessage(err) });
        return undefined;
      }
    })();
    return e.lexical;
  }

  return {
    /**
     * The best `k` rows for a query: vector scores (inner product) in vector mode, fused reciprocal-rank scores in
     * hybrid mode; only rows passing `filter` when given (never fewer than k when k pass, on the exact engine).
     */
    async search(ix: LoadedIndex, q: { vector: Float32Array; text: string; k: number; filter?: CompiledFilter; mode?: "vector" | "hybrid" }): Promise<Ranked[]> {
      const rf = q.filter ? await passing(ix, q.filter) : undefined;
      const mode = q.mode ?? cfg.mode;
      const lex = mode === "hybrid" ? await lexical(ix) : undefined;
      const n = lex ? Math.max(q.k, cfg.candidates) : q.k;
      const count = ix.manifest.count;
      const vec = rf ? await filteredSearch(ix.searcher, q.vector, n, rf) : await ix.searcher.search(q.vector, Math.min(n, count));
      if (!lex) return vec.rows.map((row, i) => ({ row, score: vec.scores[i] }));
      const words = lex.search(q.text, n, rf?.has);
      return fuseRanks([words, vec.rows], q.k, cfg.rrf_k);
    },
  };
}

export type Retriever = ReturnType<typeof createRetriever>;
