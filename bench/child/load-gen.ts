/**
 * One load-generator process for the load suite: autocannon with `connections` sockets against argv's URL,
 * each request's body a query drawn by Zipf rank from the bodies file. Several of these run side by side,
 * because one Node process cannot open and drive thousands of sockets on its own. Sends the status counts
 * and every response's time (2xx and 503 apart) to the parent over IPC.
 * argv[2]: JSON of {@link LoadGenArgs}.
 * @module
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import { zipfSampler } from "../zipf.ts";

/** What the parent asks of one generator. */
export interface LoadGenArgs {
  url: string;
  route: string;
  connections: number;
  durationS: number;
  headers: Record<string, string>;
  /** A JSON array of request bodies, most popular first. */
  bodiesFile: string;
  zipfS: number;
  seed: number;
}

/** What one generator reports back. */
export interface LoadGenResult {
  durationS: number;
  total: number;
  /** Requests that failed without a response, timeouts included (autocannon's count). */
  errors: number;
  /** Of `errors`, requests with no answer within 30 s. */
  timeouts: number;
  /** `errors` by error code (ECONNRESET, ...; "timeout" for timeouts). */
  errorCodes: Record<string, number>;
  statuses: Record<string, number>;
  okMs: number[];
  rejectedMs: number[];
}

interface Instance extends PromiseLike<{ duration: number; errors: number; timeouts: number; requests: { total: number } }> {
  on(event: "response", fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  on(event: "reqError", fn: (err: Error & { code?: string }) => void): void;
}
const autocannon = createRequire(import.meta.url)("autocannon") as (opts: Record<string, unknown>) => Instance;

const a = JSON.parse(process.argv[2]) as LoadGenArgs;
const bodies = JSON.parse(fs.readFileSync(a.bodiesFile, "utf8")) as string[];
const draw = zipfSampler(bodies.length, a.zipfS, a.seed);
const statuses: Record<string, number> = {};
const errorCodes: Record<string, number> = {};
const okMs: number[] = [];
const rejectedMs: number[] = [];
const inst = autocannon({
  url: a.url,
  connections: a.connections,
  duration: a.durationS,
  // A request the server holds longer than this counts as a timeout: a hang is an error, not a slow answer.
  timeout: 30,
  requests: [{ method: "POST", path: a.route, headers: { "content-type": "application/json", ...a.headers }, setupRequest: (req: Record<string, unknown>) => ({ ...req, body: bodies[draw()] }) }],
});
inst.on("response", (_c, status, _b, ms) => {
  statuses[status] = (statuses[status] ?? 0) + 1;
  if (status >= 200 && status < 300) okMs.push(Math.round(ms * 10) / 10);
  else if (status === 503) rejectedMs.push(Math.round(ms * 10) / 10);
});
inst.on("reqError", (err) => {
  const code = err.code ?? (/timeout/i.test(err.message) ? "timeout" : err.message.slice(0, 40));
  errorCodes[code] = (errorCodes[code] ?? 0) + 1;
});
const r = await inst;
const result: LoadGenResult = { durationS: r.duration, total: r.requests.total, errors: r.errors, timeouts: r.timeouts, errorCodes, statuses, okMs, rejectedMs };
process.send!(result, () => process.exit(0));
