/**
 * The acceptance check of the load issue, with `wrk` as the load generator: `apfa serve --processes N` over a
 * 100k × 384 flat index, `wrk` at 10k connections for 30 s on `POST /generate-advice` with a Zipf query mix
 * (s = 1.1 over 10k distinct queries, the load suite's), and 10 new versions published during the run. Prints
 * wrk's own report, the status counts its Lua script kept, the socket errors, the server's counted 503s and
 * cache hit rate, and which version each process serves at the end (every process must have applied the last
 * swap). Before it, the same wrk command runs against a trivial node:http server (same process count under
 * node:cluster, a 1.5 kB answer, no work): the socket errors the machine's loopback, accept queue and CPU give
 * any server at that many connections. Exit 0 when apfa's socket errors are no more than that floor's, no 503
 * went uncounted, p95 < 3 s and every process serves the last version.
 *
 *   node --import tsx scripts/wrk-load.ts [--connections 10000] [--duration 30] [--processes auto] [--swaps 10]
 *     [--docs 100000] [--threads 2] [--timeout 2] [--profile DIR (V8 CPU profiles of the server's processes)]
 *
 * Needs `wrk` (Debian's package) and Postgres on 127.0.0.1:5432 (a bench database, dropped at the end). wrk
 * and the server both get their descriptor limit raised to the hard limit; 10k connections need it above 10k.
 * @module
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { stopChild, type BenchContext } from "../bench/lib.ts";
import { metricSum as sum } from "../bench/suites/load.ts";
import { allProcessesReady, publish, startApfa, swapCounts, versionFactory, waitVersion, withServeBench } from "../bench/suites/serve.ts";
import { querySet, zipfSampler } from "../bench/zipf.ts";

const { values: a } = parseArgs({
  options: {
    connections: { type: "string", default: "10000" },
    duration: { type: "string", default: "30" },
    processes: { type: "string", default: "auto" },
    swaps: { type: "string", default: "10" },
    docs: { type: "string", default: "100000" },
    threads: { type: "string", default: "2" },
    timeout: { type: "string", default: "2" },
    profile: { type: "string" },
  },
});
const conns = Number(a.connections);
const durationS = Number(a.duration);
const processes = a.processes === "auto" ? os.availableParallelism() : Number(a.processes);
const swaps = Number(a.swaps);
const n = Number(a.docs);

/** wrk's Lua script: each connection cycles through a Zipf-ordered list of bodies; statuses counted per thread. */
function luaScript(token: string, bodies: string[]): string {
  const quoted = bodies.map((b) => `[==[${b}]==]`).join(",\n");
  return `
local bodies = {
${quoted}
}
local threads = {}
function setup(thread) table.insert(threads, thread) end
local i = 0
counts = {}
function init(args)
  i = math.random(#bodies)
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/json"
  wrk.headers["authorization"] = "Bearer ${token}"
end
function request()
  i = i % #bodies + 1
  return wrk.format(nil, "/generate-advice", nil, bodies[i])
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\\n", k, v)) end
  io.write(string.format("p50_ms %.1f\\np95_ms %.1f\\np99_ms %.1f\\n", latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
  local e = summary.errors
  io.write(string.format("errors connect %d read %d write %d status %d timeout %d\\n", e.connect, e.read, e.write, e.status, e.timeout))
end
`;
}

/** A node:http server that answers every request with 1.5 kB and does nothing else, on `processes` processes. */
const TRIVIAL = `
const cluster = require("node:cluster"), http = require("node:http");
const [port, n] = process.argv.slice(1).map(Number);
if (cluster.isPrimary && n > 1) for (let i = 0; i < n; i++) cluster.fork();
else http.createServer((req, res) => { req.resume(); req.on("end", () => res.end(JSON.stringify({ ok: true, pad: "x".repeat(1500) }))); })
  .listen(port, "127.0.0.1", 4096, () => process.send?.("ready"));
`;

/** Runs wrk and returns its output (the Lua script's lines included). */
async function runWrk(url: string, script?: string): Promise<string> {
  const s = script ? `-s "${script}"` : "";
  const wrk = spawn("bash", ["-c", `ulimit -n "$(ulimit -Hn)"; exec wrk -t${a.threads} -c${conns} -d${durationS}s --timeout ${a.timeout}s --latency ${s} "$0"`, url], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  wrk.stdout.on("data", (d: Buffer) => (out += d));
  const code = await new Promise<number>((r) => wrk.on("exit", (c) => r(c ?? 1)));
  if (code !== 0) throw new Error(`wrk exited with ${code}`);
  return out;
}

/** wrk's socket errors (connect + read + write + timeout) from its report. */
function socketErrors(out: string): number {
  const m = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return m ? Number(m[1]) + Number(m[2]) + Number(m[3]) + Number(m[4]) : 0;
}

/** One GET on a fresh connection (cluster hands connections out round-robin, so repeated calls reach every process). */
function getFresh(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (c: string) => (body += c)).on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

const ctx = { quick: false, profileDir: a.profile ? path.resolve(a.profile) : undefined, log: (m: string) => console.log(`[wrk-load] ${m}`), logFile: path.join(os.tmpdir(), `apfa-wrk-load-${process.pid}.log`) } as unknown as BenchContext;
const ok = await withServeBench(ctx, "wrk-load", async ({ c, dir, p, token }) => {
  ctx.log(`building ${n} × 384 flat versions`);
  const make = await versionFactory(n);
  const first = await make(0);
  await publish(p, first);
  const versions = [];
  for (let i = 1; i <= swaps; i++) versions.push(await make(i));
  const queries = querySet(10_000);
  const draw = zipfSampler(queries.length, 1.1, 7);
  const script = path.join(dir, "zipf.lua");
  fs.writeFileSync(script, luaScript(token, Array.from({ length: 20_000 }, () => JSON.stringify({ query: queries[draw()], k: 5 }))));
  const apfa = await startApfa(c, "wrk", { processes, fdLimit: 65_536 });
  try {
    await allProcessesReady(apfa.base, processes, apfa.t0);
    const m0 = await (await fetch(`${apfa.base}/metrics`)).text();
    const s0 = await swapCounts(apfa.base);
    const port = 20_000 + (process.pid % 20_000);
    const trivial = spawn("bash", ["-c", `ulimit -n "$(ulimit -Hn)"; exec "$0" -e "$1" "$2" "$3"`, process.execPath, TRIVIAL, String(port), String(processes)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    let floor: number;
    try {
      await new Promise((r) => setTimeout(r, 1000));
      ctx.log(`the same wrk against a trivial node:http server (${processes} process(es)): the machine's floor`);
      const t = await runWrk(`http://127.0.0.1:${port}/`);
      floor = socketErrors(t);
      console.log(t.split("\n").filter((l) => /Requests\/sec|Socket errors|Latency /.test(l)).join("\n") || "  (no socket errors)");
    } finally {
      trivial.kill("SIGKILL");
    }
    ctx.log(`wrk -t${a.threads} -c${conns} -d${durationS}s --timeout ${a.timeout}s against ${processes} process(es), ${swaps} swaps during the run`);
    const running = runWrk(apfa.base, script);
    for (const v of versions) {
      await new Promise((r) => setTimeout(r, (durationS * 1000) / (swaps + 1)));
      await publish(p, v);
    }
    const out = await running;
    console.log(out);
    const last = versions.at(-1)?.manifest.version ?? first.manifest.version;
    const settled = s0.success + s0.superseded;
    if (swaps) await waitVersion(apfa.base, last, settled + swaps).catch(() => 0);
    const m1 = await (await fetch(`${apfa.base}/metrics`)).text();
    const hits = sum(m1, "apfa_cache_hits_total") - sum(m0, "apfa_cache_hits_total");
    const misses = sum(m1, "apfa_cache_misses_total") - sum(m0, "apfa_cache_misses_total");
    const coalesced = sum(m1, "apfa_requests_coalesced_total") - sum(m0, "apfa_requests_coalesced_total");
    const counted503 = sum(m1, "apfa_overload_rejected_total") - sum(m0, "apfa_overload_rejected_total");
    const serving = new Map<number, string>();
    for (let i = 0; i < processes * 20 && serving.size < processes; i++) {
      const r = JSON.parse((await getFresh(`${apfa.base}/ready`)).body) as { process?: number; version?: string };
      serving.set(r.process ?? 0, r.version ?? "");
    }
    const statuses = Object.fromEntries([...out.matchAll(/^status (\d+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    const errs = /errors connect (\d+) read (\d+) write (\d+) status (\d+) timeout (\d+)/.exec(out)?.slice(1).map(Number) ?? [NaN];
    const socketErrs = errs[0] + errs[1] + errs[2] + errs[4];
    const p95 = Number(/p95_ms ([\d.]+)/.exec(out)?.[1]);
    const uncounted503 = (statuses["503"] ?? 0) - counted503;
    const allSwapped = [...serving.values()].every((v) => v === last) && serving.size === processes;
    console.log(JSON.stringify({
      processes, connections: conns, duration_s: durationS, statuses, socket_errors: socketErrs, trivial_server_socket_errors: floor, counted_503: counted503, uncounted_503: uncounted503,
      p95_ms: p95, cache_hit_rate: hits / Math.max(1, hits + misses), coalesced, swaps_published: swaps,
      serving: Object.fromEntries([...serving].map(([k, v]) => [k, v.slice(0, 12)])), last: last.slice(0, 12), every_process_on_last: allSwapped,
    }, null, 2));
    return socketErrs <= floor && uncounted503 <= 0 && p95 < 3000 && allSwapped;
  } finally {
    await stopChild(apfa.child);
  }
});
process.exit(ok ? 0 : 1);
