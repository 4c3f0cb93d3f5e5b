/**
 * The metadata filter grammar of `/search` and `/generate-advice` (docs/retrieval.md):
 *
 * ```
 * filter    := { clause, ... }                       every clause must hold (an implicit and)
 * clause    := "and": [filter, ...] | "or": [filter, ...] | "not": filter
 *            | <path>: scalar                        equality (an array field: any element equals)
 *            | <path>: { op: value, ... }            every operator must hold
 * op        := eq | ne | gt | gte | lt | lte         scalar operand; ranges compare numbers with numbers,
 *            | in | nin                              strings with strings; a list of scalars
 *            | exists                                true / false
 * path      := name ("." name)*                      a field of the document's metadata, dotted for nesting
 * ```
 *
 * `{"type": "loan_product", "min_credit_score": {"lte": 650}}` keeps loan products open to a 650 score. A value of
 * another type than the operand never matches (a range on a missing field is false; `ne`/`nin` on one is true).
 * Parsing collects the first problem as a {@link FilterError} naming its path (`filter.min_credit_score.lte`).
 * @module
 */

export type Scalar = string | number | boolean | null;

/** A filter as JSON; see the module comment for the grammar. */
export type Filter = { [key: string]: unknown };

/** A compiled filter: true when a document's metadata passes. */
export type MetaPredicate = (metadata: Record<string, unknown>) => boolean;

/** A filter that does not follow the grammar; `path` names the offending part (`filter.apr.lt`). */
export class FilterError extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = "FilterError";
    this.path = path;
  }
}

const OPS = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists"] as const;
type Op = (typeof OPS)[number];
const PATH = /^[A-Za-z_][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9_-]{1,64}){0,7}$/;
/** Bounds that keep one filter cheap to check per document. */
const MAX_DEPTH = 8;
const MAX_NODES = 256;
const MAX_LIST = 1000;
const MAX_STRING = 1000;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
const describe = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "an array" : typeof v);

function scalar(v: unknown, at: string): Scalar {
  if (typeof v === "number" && !Number.isFinite(v)) throw new FilterError(at, "must be a finite number");
  if (typeof v === "string" && v.length > MAX_STRING) throw new FilterError(at, `must be at most ${MAX_STRING} characters`);
  if (v === null || typeof v === "string" || typeof v === "number" || typeof v === "boolean") return v;
  throw new FilterError(at, `expected a string, number, boolean or null, got ${describe(v)}`);
}

function get(meta: Record<string, unknown>, path: string[]): unknown {
  let v: unknown = meta;
  for (const p of path) {
    if (!isObject(v) || !Object.hasOwn(v, p)) return undefined;
    v = v[p];
  }
  return v;
}

const same = (a: unknown, b: Scalar) => a === b || (b === null && a === undefined);
const anyOf = (v: unknown, test: (x: unknown) => boolean) => (Array.isArray(v) ? v.some(test) : test(v));

function compare(v: unknown, op: "gt" | "gte" | "lt" | "lte", b: Scalar): boolean {
  if (!((typeof v === "number" && typeof b === "number") || (typeof v === "string" && typeof b === "string"))) return false;
  return op === "gt" ? v > b : op === "gte" ? v >= b : op === "lt" ? v < b : v <= b;
}

function condition(path: string[], spec: Record<string, unknown>, at: string): MetaPredicate {
  const keys = Object.keys(spec);
  if (!keys.length) throw new FilterError(at, `an empty condition; use one of ${OPS.join(", ")}`);
  const tests: Array<(v: unknown) => boolean> = [];
  for (const key of keys) {
    const here = `${at}.${key}`;
    if (!(OPS as readonly string[]).includes(key)) throw new FilterError(here, `unknown operator; allowed: ${OPS.join(", ")}`);
    const op = key as Op;
    const arg = spec[key];
    if (op === "in" || op === "nin") {
      if (!Array.isArray(arg)) throw new FilterError(here, `expected a list of values, got ${describe(arg)}`);
      if (arg.length > MAX_LIST) throw new FilterError(here, `at most ${MAX_LIST} values`);
      const set = new Set(arg.map((x, i) => scalar(x, `${here}.${i}`)));
      const hit = (v: unknown) => anyOf(v, (x) => set.has(x as Scalar) || (x === undefined && set.has(null)));
      tests.push(op === "in" ? hit : (v) => !hit(v));
    } else if (op === "exists") {
      if (typeof arg !== "boolean") throw new FilterError(here, `expected true or false, got ${describe(arg)}`);
      tests.push((v) => (v !== undefined && v !== null) === arg);
    } else {
      const b = scalar(arg, here);
      if (op === "eq") tests.push((v) => anyOf(v, (x) => same(x, b)));
      else if (op === "ne") tests.push((v) => !anyOf(v, (x) => same(x, b)));
      else {
        if (b === null || typeof b === "boolean") throw new FilterError(here, `a range needs a number or a string, got ${describe(b)}`);
        tests.push((v) => anyOf(v, (x) => compare(x, op, b)));
      }
    }
  }
  return (meta) => {
    const v = get(meta, path);
    return tests.every((t) => t(v));
  };
}

/**
 * Checks a filter against the grammar and compiles it. Throws {@link FilterError} naming the path of the first
 * problem, with `root` as the path's first part (the request field, `filter`).
 */
export function compileFilter(filter: unknown, root = "filter"): MetaPredicate {
  let nodes = 0;
  const node = (f: unknown, at: string, depth: number): MetaPredicate => {
    if (++nodes > MAX_NODES) throw new FilterError(at, `too many clauses (at most ${MAX_NODES})`);
    if (depth > MAX_DEPTH) throw new FilterError(at, `nested deeper than ${MAX_DEPTH} levels`);
    if (!isObject(f)) throw new FilterError(at, `expected an object of conditions, got ${describe(f)}`);
    const parts: MetaPredicate[] = [];
    for (const [key, v] of Object.entries(f)) {
      const here = `${at}.${key}`;
      if (key === "and" || key === "or") {
        if (!Array.isArray(v) || !v.length) throw new FilterError(here, `expected a non-empty list of filters, got ${Array.isArray(v) ? "an empty list" : describe(v)}`);
        const subs = v.map((x, i) => node(x, `${here}.${i}`, depth + 1));
        parts.push(key === "and" ? (m) => subs.every((s) => s(m)) : (m) => subs.some((s) => s(m)));
      } else if (key === "not") {
        const sub = node(v, here, depth + 1);
        parts.push((m) => !sub(m));
      } else {
        if (!PATH.test(key)) throw new FilterError(here, "not a field path: names of letters, digits, _ or -, joined by dots (at most 8)");
        const path = key.split(".");
        if (path.some((p) => p === "__proto__" || p === "constructor" || p === "prototype")) throw new FilterError(here, "not a field path");
        if (isObject(v)) parts.push(condition(path, v, here));
        else {
          const b = scalar(v, here);
          parts.push((m) => anyOf(get(m, path), (x) => same(x, b)));
        }
      }
    }
    if (!parts.length) throw new FilterError(at, "an empty filter; leave it out to match every document");
    return (m) => parts.every((p) => p(m));
  };
  return node(filter, root, 0);
}

/** The filter's JSON with object keys sorted: equal filters get equal keys (for caches). */
export function filterKey(filter: unknown): string {
  return JSON.stringify(filter, (_k, v: unknown) => (isObject(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v));
}

/** The operators a condition may use (for the OpenAPI document). */
export const FILTER_OPERATORS: readonly string[] = OPS;
