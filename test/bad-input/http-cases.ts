/**
 * Bad HTTP requests. Each names the status and error code the API must answer with; none may be a 5xx.
 * `token` is replaced by a valid bearer token, `expired` by an expired one.
 */
export interface HttpCase {
  name: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  status: number;
  error?: string;
  field?: string;
}

const J = { "content-type": "application/json", authorization: "token" };
const big = (n: number) => JSON.stringify({ query: "x".repeat(n) });

export const httpCases: HttpCase[] = [
  { name: "no token", method: "POST", path: "/search", headers: { "content-type": "application/json" }, body: '{"query":"loan"}', status: 401, error: "unauthorized" },
  { name: "basic auth instead of bearer", method: "POST", path: "/search", headers: { "content-type": "application/json", authorization: "Basic dXNlcjpwYXNz" }, body: '{"query":"loan"}', status: 401 },
  { name: "bearer garbage", method: "POST", path: "/search", headers: { "content-type": "application/json", authorization: "Bearer not.a.jwt" }, body: '{"query":"loan"}', status: 401 },
  { name: "bearer alg none", method: "POST", path: "/search", headers: { "content-type": "application/json", authorization: "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0." }, body: '{"query":"loan"}', status: 401 },
  { name: "expired token", method: "POST", path: "/search", headers: { "content-type": "application/json", authorization: "expired" }, body: '{"query":"loan"}', status: 401 },
  { name: "huge authorization header", method: "POST", path: "/search", headers: { "content-type": "application/json", authorization: "Bearer " + "a".repeat(20_000) }, body: '{"query":"loan"}', status: 401 },
  { name: "invalid JSON", method: "POST", path: "/search", headers: J, body: '{"query": "loan",', status: 400, error: "invalid_json" },
  { name: "empty body", method: "POST", path: "/search", headers: J, body: "", status: 400, error: "invalid_json" },
  { name: "JSON array body", method: "POST", path: "/search", headers: J, body: '["loan"]', status: 400, error: "invalid_body" },
  { name: "JSON string body", method: "POST", path: "/search", headers: J, body: '"loan"', status: 400, error: "invalid_body" },
  { name: "JSON null body", method: "POST", path: "/search", headers: J, body: "null", status: 400, error: "invalid_body" },
  { name: "wrong content type", method: "POST", path: "/search", headers: { ...J, "content-type": "text/plain" }, body: '{"query":"loan"}', status: 415, error: "unsupported_media_type" },
  { name: "form content type", method: "POST", path: "/generate-advice", headers: { ...J, "content-type": "application/x-www-form-urlencoded" }, body: "query=loan", status: 415 },
  { name: "missing content type", method: "POST", path: "/search", headers: { authorization: "token" }, body: '{"query":"loan"}', status: 415 },
  { name: "missing query", method: "POST", path: "/search", headers: J, body: '{"k": 3}', status: 400, error: "invalid_request", field: "query" },
  { name: "empty query", method: "POST", path: "/search", headers: J, body: '{"query": "   "}', status: 400, field: "query" },
  { name: "query not a string", method: "POST", path: "/generate-advice", headers: J, body: '{"query": {"$ne": 1}}', status: 400, field: "query" },
  { name: "oversized query", method: "POST", path: "/search", headers: J, body: big(5000), status: 400, field: "query" },
  { name: "oversized body", method: "POST", path: "/search", headers: J, body: big(200_000), status: 413, error: "payload_too_large" },
  { name: "lying content-length", method: "POST", path: "/search", headers: { ...J, "content-length": "999999999" }, body: '{"query":"loan"}', status: 413 },
  { name: "k zero", method: "POST", path: "/search", headers: J, body: '{"query":"loan","k":0}', status: 400, field: "k" },
  { name: "k negative", method: "POST", path: "/search", headers: J, body: '{"query":"loan","k":-5}', status: 400, field: "k" },
  { name: "k too large", method: "POST", path: "/search", headers: J, body: '{"query":"loan","k":100000}', status: 400, field: "k" },
  { name: "k float", method: "POST", path: "/search", headers: J, body: '{"query":"loan","k":2.5}', status: 400, field: "k" },
  { name: "k string", method: "POST", path: "/search", headers: J, body: '{"query":"loan","k":"5"}', status: 400, field: "k" },
  { name: "unknown field", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filters":{}}', status: 400, field: "filters" },
  { name: "filter not an object", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":"x"}', status: 400, field: "filter" },
  { name: "filter an array", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":[{"type":"loan_product"}]}', status: 400, field: "filter" },
  { name: "filter empty", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":{}}', status: 400, error: "invalid_filter", field: "filter" },
  { name: "filter unknown operator", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":{"min_credit_score":{"between":[1,2]}}}', status: 400, error: "invalid_filter", field: "filter.min_credit_score.between" },
  { name: "filter range on a boolean", method: "POST", path: "/generate-advice", headers: J, body: '{"query":"loan","filter":{"apr":{"lt":true}}}', status: 400, error: "invalid_filter", field: "filter.apr.lt" },
  { name: "filter in without a list", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":{"category":{"in":"auto"}}}', status: 400, error: "invalid_filter", field: "filter.category.in" },
  { name: "filter nested value in a list", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":{"category":{"in":["auto",{"$ne":1}]}}}', status: 400, error: "invalid_filter", field: "filter.category.in.1" },
  { name: "filter or not a list", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":{"or":{"type":"x"}}}', status: 400, error: "invalid_filter", field: "filter.or" },
  { name: "filter bad path", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":{"a..b":1}}', status: 400, error: "invalid_filter", field: "filter.a..b" },
  { name: "filter proto path", method: "POST", path: "/search", headers: J, body: '{"query":"loan","filter":{"constructor.prototype":1}}', status: 400, error: "invalid_filter" },
  { name: "filter nested too deep", method: "POST", path: "/search", headers: J, body: JSON.stringify({ query: "loan", filter: JSON.parse('{"not":'.repeat(20) + '{"a":1}' + "}".repeat(20)) }), status: 400, error: "invalid_filter" },
  { name: "mode unknown", method: "POST", path: "/search", headers: J, body: '{"query":"loan","mode":"magic"}', status: 400, field: "mode" },
  { name: "proto pollution key", method: "POST", path: "/search", headers: J, body: '{"query":"loan","__proto__":{"admin":true}}', status: 400 },
  { name: "invalid UTF-8 body", method: "POST", path: "/search", headers: J, body: new Uint8Array([0x7b, 0x22, 0x71, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), status: 400, error: "invalid_encoding" },
  { name: "deeply nested JSON", method: "POST", path: "/search", headers: J, body: "[".repeat(5000) + "]".repeat(5000), status: 400 },
  { name: "GET on a POST route", method: "GET", path: "/search", status: 405 },
  { name: "DELETE on health", method: "DELETE", path: "/health", status: 405 },
  { name: "unknown route", method: "GET", path: "/admin", status: 404, error: "not_found" },
  { name: "path traversal", method: "GET", path: "/../../etc/passwd", status: 404 },
  { name: "encoded path traversal", method: "GET", path: "/%2e%2e/%2e%2e/pipeline.yaml", status: 404 },
  { name: "malformed percent-encoding", method: "GET", path: "/index%", status: 400 },
  { name: "traversal in index route", method: "GET", path: "/index/..%2F..%2Fpipeline.yaml", status: 404 },
];
