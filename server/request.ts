/**
 * The request body of `/search` and `/generate-advice`, validated by zod and described by the same schema in the
 * OpenAPI document, and the filter it may carry.
 * @module
 */
import { z } from "zod";
import { compileFilter, FilterError, filterKey } from "../runtime/filter.ts";
import { HttpError } from "./http.ts";
import type { CompiledFilter } from "./retrieval.ts";

/** The request body of `/search` and `/generate-advice` (also the OpenAPI document's schema). */
export function requestBody(limits: { max_query_chars: number; max_k: number }) {
  return z.strictObject({
    query: z.string().refine((q) => q.trim().length > 0, "must not be empty").refine((q) => q.length <= limits.max_query_chars, `must be at most ${limits.max_query_chars} characters`)
      .describe("The question or search text"),
    k: z.int().min(1).max(limits.max_k).default(5).describe("How many documents to retrieve"),
    filter: z.record(z.string(), z.unknown()).optional()
      .describe("Metadata filter (docs/retrieval.md): {\"type\": \"loan_product\", \"min_credit_score\": {\"lte\": 650}}; equality, eq/ne/gt/gte/lt/lte/in/nin/exists, and/or/not"),
    mode: z.enum(["vector", "hybrid"]).optional().describe("Retrieval mode; default server.retrieval.mode"),
  });
}

/** Compiles a request's filter; a filter off the grammar is a 400 naming its path. */
export function compiled(filter: unknown): CompiledFilter | undefined {
  if (filter === undefined) return undefined;
  try {
    return { key: filterKey(filter), test: compileFilter(filter, "filter") };
  } catch (err) {
    if (err instanceof FilterError) throw new HttpError(400, "invalid_filter", err.message, err.path);
    throw err;
  }
}

