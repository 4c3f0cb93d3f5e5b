/**
 * The OpenAPI 3.1 document the server serves at `GET /openapi.json`. The request body's schema is generated from
 * the same zod schema that validates requests (`requestBody`), so the two cannot drift; the filter grammar,
 * which zod checks only as "an object" before runtime/filter.ts parses it, is spelled out here as JSON Schema.
 * @module
 */
import { z } from "zod";
import { FILTER_OPERATORS } from "../runtime/filter.ts";
import { requestBody } from "./request.ts";

const scalar = { type: ["string", "number", "boolean", "null"] };

/** The filter grammar of runtime/filter.ts as JSON Schema. */
export const FILTER_SCHEMA = {
  type: "object",
  description: "Every clause must hold. A key is `and`/`or` (a list of filters), `not` (a filter) or a dotted metadata path " +
    "whose value is a scalar (equality; an array field matches when any element does) or an object of operators " +
    `(${FILTER_OPERATORS.join(", ")}). A malformed filter is a 400 whose \`field\` names the offending path.`,
  examples: [{ type: "loan_product", min_credit_score: { lte: 650 } }, { or: [{ category: "auto" }, { apr: { lt: 0.08 } }] }],
  minProperties: 1,
  properties: {
    and: { type: "array", minItems: 1, items: { $ref: "#/components/schemas/Filter" } },
    or: { type: "array", minItems: 1, items: { $ref: "#/components/schemas/Filter" } },
    not: { $ref: "#/components/schemas/Filter" },
  },
  additionalProperties: {
    anyOf: [scalar, {
      type: "object",
      minProperties: 1,
      additionalProperties: false,
      properties: {
        eq: scalar, ne: scalar, gt: { type: ["number", "string"] }, gte: { type: ["number", "string"] }, lt: { type: ["number", "string"] },
        lte: { type: ["number", "string"] }, in: { type: "array", items: scalar, maxItems: 1000 }, nin: { type: "array", items: scalar, maxItems: 1000 },
        exists: { type: "boolean" },
      },
    }],
  },
};

const error = {
  type: "object",
  required: ["error", "message"],
  properties: { error: { type: "string" }, message: { type: "string" }, field: { type: "string", description: "The request field at fault, e.g. filter.min_credit_score.lte" } },
};

const hit = {
  type: "object",
  properties: {
    id: { type: "string" },
    score: { type: "number", description: "Inner product with the query (vector mode) or the reciprocal-rank-fusion score (hybrid)" },
    text: { type: "string" },
    metadata: { type: "object" },
  },
};

/** The OpenAPI document for these limits (max_k and max_query_chars appear in the schema). */
export function openapiDocument(limits: { max_query_chars: number; max_k: number }): Record<string, unknown> {
  const { $schema: _, ...body } = z.toJSONSchema(requestBody(limits), { io: "input" }) as Record<string, unknown> & { properties: Record<string, unknown> };
  body.properties.filter = { $ref: "#/components/schemas/Filter" };
  const responses = (ok: Record<string, unknown>) => ({
    200: { description: "OK", content: { "application/json": { schema: ok } } },
    400: { description: "Malformed request or filter", content: { "application/json": { schema: error } } },
    401: { description: "Missing or invalid bearer token" },
    429: { description: "Rate limited" },
    503: { description: "No index loaded yet" },
  });
  const post = (summary: string, ok: Record<string, unknown>) => ({
    post: { summary, security: [{ bearer: [] }], requestBody: { required: true, content: { "application/json": { schema: { $ref: "#/components/schemas/Query" } } } }, responses: responses(ok) },
  });
  return {
    openapi: "3.1.0",
    info: { title: "apfa", version: "1", description: "Retrieval and advice over the served index version (docs/retrieval.md)." },
    paths: {
      "/search": post("Documents nearest the query, optionally filtered on metadata", {
        type: "object", properties: { hits: { type: "array", items: hit }, index_version: { type: "string" }, cached: { type: "boolean" } },
      }),
      "/generate-advice": post("Advice grounded in retrieved documents; stated constraints pick the products open to the person first", {
        type: "object",
        properties: {
          advice: { type: "string" }, sources: { type: "array", items: hit }, index_version: { type: "string" }, cached: { type: "boolean" }, generator: { type: "string" },
          stated: { type: "object", description: "Constraints read from the question: credit_score, amount, term_months, max_apr (percent), category" },
          fallback_reason: { type: "string" },
        },
      }),
      "/health": { get: { summary: "Liveness", responses: { 200: { description: "OK" } } } },
      "/ready": { get: { summary: "Readiness: an index is loaded", responses: { 200: { description: "Ready" }, 503: { description: "Not ready" } } } },
      "/index": { get: { summary: "The served version's manifest", responses: { 200: { description: "OK" }, 503: { description: "No index loaded yet" } } } },
      "/metrics": { get: { summary: "Prometheus metrics", responses: { 200: { description: "OK" } } } },
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
      schemas: { Query: body, Filter: FILTER_SCHEMA },
    },
  };
}
