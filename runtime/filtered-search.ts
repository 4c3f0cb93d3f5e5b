/**
 * Filtered vector search over any engine. An engine with `searchFiltered` (flat: exact over the passing rows)
 * answers itself; for the others (hnsw, faiss) {@link overFetch} asks the plain search for more results than
 * needed, sized by how selective the filter is, keeps the passing ones and asks again, four times as many each
 * time, until it has k or has asked for every row. Recall under selective filters is measured in
 * docs/index-engines.md.
 * @module
 */
import type { RowFilter, SearchResult, Searcher } from "./contracts.ts";

/** A {@link RowFilter} over `count` rows from the ascending list of passing rows. */
export function rowFilter(rows: Uint32Array, count: number): RowFilter {
  const bits = new Uint32Array(Math.ceil(count / 32)); // a bit per row: 125 KB at a million rows
  for (const r of rows) bits[r >>> 5] |= 1 << (r & 31);
  return { rows, has: (row) => row >= 0 && row < count && (bits[row >>> 5] & (1 << (row & 31))) !== 0 };
}

/** How many results the first over-fetched search asks for: twice what the passing share predicts, plus k. */
export function firstFetch(k: number, passing: number, count: number): number {
  return Math.min(count, Math.ceil((k * count * 2) / Math.max(1, passing)) + k);
}

/**
 * Over-fetch through a plain search until `k` passing rows are found or every row was asked for. On an exact
 * search this is exact (everything scoring above the k-th passing row was seen); on an approximate one it has
 * that search's recall, and the searches it took are counted in `searches`.
 */
export async function overFetch(
  search: (query: Float32Array, k: number) => Promise<SearchResult>,
  count: number,
  query: Float32Array,
  k: number,
  filter: RowFilter,
): Promise<SearchResult & { searches: number }> {
  let fetch = firstFetch(k, filter.rows.length, count);
  for (let searches = 1; ; searches++) {
    const r = await search(query, fetch);
    const rows: number[] = [];
    const scores: number[] = [];
    for (let i = 0; i < r.rows.length && rows.length < k; i++) {
      if (filter.has(r.rows[i])) {
        rows.push(r.rows[i]);
        scores.push(r.scores[i]);
      }
    }
    if (rows.length >= k || fetch >= count) return { rows, scores, searches };
    fetch = Math.min(count, fetch * 4);
  }
}

/** The best `k` rows that pass `filter` (fewer only when fewer pass), by the engine's own filtered search or {@link overFetch}. */
export async function filteredSearch(searcher: Searcher, query: Float32Array, k: number, filter: RowFilter): Promise<SearchResult> {
  const want = Math.min(Math.floor(k), filter.rows.length);
  if (!(want >= 1)) return { rows: [], scores: [] };
  if (searcher.searchFiltered) return searcher.searchFiltered(query, want, filter);
  const { rows, scores } = await overFetch((q, n) => searcher.search(q, n), searcher.count, query, want, filter);
  return { rows, scores };
}
