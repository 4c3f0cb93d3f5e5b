/**
 * The lexical side of hybrid retrieval: a BM25 index (MiniSearch) over each document's id, name, text and string
 * metadata, built into every index version as `lexical.json` (listed in the manifest and swapped with the
 * vectors), and the reciprocal-rank fusion that merges it with the vector results. The tokenizer keeps what a
 * weak embedding model blurs: ids (`loan-0042` and its parts), numbers as written in text (`$15,000` → `15000`,
 * `15k` → `15000`) and names.
 * @module
 */
import MiniSearch from "minisearch";

/** The file every version holds the lexical index in. */
export const LEXICAL_FILE = "lexical.json";

/** Words too common in questions to rank anything (the, i, want…); BM25 would weigh them little anyway. */
const STOP = new Set(("a an and are as at be but by can do for from get go had has have i i'm im in is it its me my need of on or " +
  "our so than that the their them then there these this to too up us want was we what when where which who will with would you your").split(" "));

/** Splits text into terms: whole compound tokens (`loan-0042`, `6.99`) and their parts; numbers lose thousands commas. */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  for (const m of text.normalize("NFKC").matchAll(/[\p{L}\p{N}]+(?:[-_.,'/][\p{L}\p{N}]+)*/gu)) {
    const t = m[0];
    if (/^\d{1,3}(,\d{3})+(\.\d+)?$/.test(t)) {
      out.push(t.replace(/,/g, ""));
      continue;
    }
    const parts = t.split(/[-_.,'/]/);
    if (parts.length > 1 && !t.includes(",")) out.push(t);
    out.push(...parts);
  }
  return out;
}

/** The query side: compound tokens stay whole (`loan-0042` must not also ask for every "loan"). */
export function tokenizeQuery(text: string): string[] {
  return [...text.normalize("NFKC").matchAll(/[\p{L}\p{N}]+(?:[-_.,'/][\p{L}\p{N}]+)*/gu)]
    .map((m) => (/^\d{1,3}(,\d{3})+(\.\d+)?$/.test(m[0]) ? m[0].replace(/,/g, "") : m[0]));
}

/** Lower-cases, drops stop words and spells `15k` as `15000`. */
export function processTerm(term: string): string | null {
  const t = term.toLowerCase();
  if (STOP.has(t)) return null;
  const k = /^(\d+)k$/.exec(t);
  return k ? `${k[1]}000` : t;
}

interface LexDoc {
  row: number;
  id: string;
  name: string;
  text: string;
  meta: string;
}

const OPTIONS = {
  idField: "row",
  fields: ["id", "name", "text", "meta"],
  storeFields: [] as string[],
  tokenize,
  processTerm,
  searchOptions: { boost: { id: 3, name: 2 }, combineWith: "OR" as const, tokenize: tokenizeQuery, processTerm },
};

/** String metadata values except the name, flattened (lender, category, features…). */
function metaText(m: Record<string, unknown>): string {
  const out: string[] = [];
  const walk = (v: unknown) => {
    if (typeof v === "string") out.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") Object.values(v).forEach(walk);
  };
  for (const [k, v] of Object.entries(m)) if (k !== "name" && k !== "title") walk(v);
  return out.join(" ");
}

/**
 * Terms in more than this share of the documents are left out of queries: their BM25 weight is near zero, and
 * scoring their postings made a question take over a second at 100k documents ("credit", "loan").
 */
const COMMON_SHARE = 0.1;

/**
 * Builds `lexical.json` from a version's `docs.jsonl` bytes (row `r` is line `r`). The whole index is one
 * MiniSearch in this process's heap and one JSON text (~650 bytes a document on the sample corpus), so past a
 * few hundred thousand documents it throws a RangeError (string too long); the build stops earlier, at
 * `server.retrieval.lexical_max_docs`.
 */
export function buildLexical(docs: Uint8Array): Uint8Array {
  const ms = new MiniSearch<LexDoc>(OPTIONS);
  const df = new Map<string, number>();
  // Line by line: a large version's docs.jsonl is longer than the longest string V8 can hold (~512M chars).
  const dec = new TextDecoder();
  let row = 0;
  for (let at = 0; at < docs.length;) {
    const nl = docs.indexOf(10, at);
    const end = nl < 0 ? docs.length : nl;
    const line = dec.decode(docs.subarray(at, end));
    at = end + 1;
    if (!line.trim()) continue;
    const d = JSON.parse(line) as { id: string; text: string; metadata?: Record<string, unknown> };
    const m = d.metadata ?? {};
    const name = m.name ?? m.title;
    const doc = { row: row++, id: d.id, name: typeof name === "string" ? name : "", text: d.text, meta: metaText(m) };
    ms.add(doc);
    const terms = new Set(tokenize(`${doc.id} ${doc.name} ${doc.text} ${doc.meta}`).map(processTerm));
    for (const t of terms) if (t) df.set(t, (df.get(t) ?? 0) + 1);
  }
  const common = [...df].filter(([, n]) => n > row * COMMON_SHARE).map(([t]) => t).sort();
  return new TextEncoder().encode(JSON.stringify({ format: 1, common, index: ms }));
}

/** A loaded lexical index. */
export interface Lexical {
  /** Best-first rows for `query` (BM25), at most `k`, only rows `pass` accepts when given. */
  search(query: string, k: number, pass?: (row: number) => boolean): number[];
  /** As `search`, with the BM25 scores. */
  scored(query: string, k: number, pass?: (row: number) => boolean): Array<{ row: number; score: number }>;
}

/** Opens `lexical.json` (its text). */
export function loadLexical(json: string): Lexical {
  const file = JSON.parse(json) as { format: number; common: string[]; index: unknown };
  const ms = MiniSearch.loadJS<LexDoc>(file.index as Parameters<typeof MiniSearch.loadJS>[0], OPTIONS);
  const common = new Set(file.common);
  const lexical: Lexical = {
    search: (query, k, pass) => lexical.scored(query, k, pass).map((h) => h.row),
    scored(query, k, pass) {
      const terms = tokenizeQuery(query).map(processTerm).filter((t): t is string => Boolean(t));
      // Only common words ("loan credit"): keep them, a rare-word-free query still deserves an answer.
      const rare = terms.filter((t) => !common.has(t));
      const q = (rare.length ? rare : terms).join(" ");
      if (!q) return [];
      const hits = ms.search(q, { ...(pass ? { filter: (r) => pass(r.id as number) } : {}), tokenize: (s) => s.split(" "), processTerm: (t) => t });
      return hits.slice(0, k).map((h) => ({ row: h.id as number, score: h.score }));
    },
  };
  return lexical;
}

/**
 * Reciprocal-rank fusion: each list adds `1 / (c + rank)` (rank from 1) to its rows' scores; best first.
 * `c` = 60 as in Cormack et al. (2009), so neither list's top hit can be outvoted by one list alone. Equal scores
 * (two lists' top hits, each found by one list only) go to the better single rank, then to the earlier list:
 * the server passes the lexical list first, so an exact id or name beats an equally ranked vector neighbour.
 */
export function fuseRanks(lists: number[][], k: number, c = 60): Array<{ row: number; score: number }> {
  const acc = new Map<number, { score: number; rank: number; list: number }>();
  lists.forEach((list, li) => list.forEach((row, i) => {
    const a = acc.get(row);
    if (!a) acc.set(row, { score: 1 / (c + i + 1), rank: i, list: li });
    else {
      a.score += 1 / (c + i + 1);
      if (i < a.rank) Object.assign(a, { rank: i, list: li });
    }
  }));
  return [...acc].sort(([ra, a], [rb, b]) => b.score - a.score || a.rank - b.rank || a.list - b.list || ra - rb)
    .slice(0, k).map(([row, a]) => ({ row, score: a.score }));
}
