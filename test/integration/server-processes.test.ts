/**
 * `apfa serve --processes 2`: two server processes behind one port answer searches, a SIGKILLed process is
 * replaced by a new one while requests keep succeeding, and SIGTERM stops the supervisor and both processes
 * with exit code 0. Every wait polls for a condition; nothing is timed.
 */
import * as http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openServerFixture, until, type ChildServer, type LogRecord, type ServerFixture } from "../helpers/server.ts";

let fx: ServerFixture;
let srv: ChildServer;
let token: string;

/** One request on a fresh connection: cluster hands out connections, not requests, round-robin. */
function request(method: string, route: string, body?: unknown): Promise<{ status: number; json: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(srv.url + route, {
      method, agent: false,
      headers: { ...(data ? { "content-type": "application/json", authorization: `Bearer ${token}` } : {}) },
    }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c)).on("end", () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = text;
        }
        resolve({ status: res.statusCode!, json });
      });
    });
    req.on("error", reject);
    req.end(data);
  });
}

const search = () => request("POST", "/search", { query: "car loan", k: 2 });
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const processReady = (r: LogRecord) => r.msg === "server process ready";

beforeAll(async () => {
  fx = await openServerFixture();
  await fx.publish({ count: 300, tag: "v1" });
  token = await fx.token();
  srv = await fx.spawn({ args: ["--processes", "2"] });
}, 180_000);
afterAll(async () => {
  await srv?.stop();
  await fx?.close();
});

describe("apfa serve --processes 2", () => {
  it("answers from both processes on one port, with per-process /ready and /metrics", async () => {
    const ready = srv.logs.find((r) => r.msg === "server ready")!;
    expect(ready.processes).toBe(2);
    const pids = new Set<number>();
    await until("/ready answered by both processes", async () => {
      const r = await request("GET", "/ready");
      expect(r.status).toBe(200);
      expect(r.json.process === 0 || r.json.process === 1).toBe(true);
      pids.add(r.json.pid);
      return pids.size === 2;
    }, 60_000);
    expect([...pids].sort()).toEqual([...(ready.pids as number[])].sort());
    for (let i = 0; i < 10; i++) expect((await search()).status).toBe(200);
    // Any process renders the metrics of both, each series labelled with its process.
    const text = (await request("GET", "/metrics")).json as string;
    for (const p of ["0", "1"]) {
      const m = new RegExp(`apfa_requests_total\\{[^}]*route="search"[^}]*process="${p}"[^}]*\\} (\\d+)|apfa_requests_total\\{[^}]*process="${p}"[^}]*route="search"[^}]*\\} (\\d+)`).exec(text);
      expect(m, `process ${p}'s search count in /metrics`).not.toBeNull();
      expect(Number(m![1] ?? m![2])).toBeGreaterThan(0);
    }
  }, 180_000);

  it("shares computed answers: a question one process answered is a cache hit in the other", async () => {
    const ask = () => request("POST", "/search", { query: "an answer both processes share", k: 3 });
    const fills = async () => {
      const text = (await request("GET", "/metrics")).json as string;
      return text.split("\n").filter((l) => l.startsWith("apfa_cache_peer_fills_total")).reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
    };
    const before = await fills();
    const first = await ask();
    expect(first.status).toBe(200);
    expect(first.json.cached).toBe(false);
    await until("the other process to receive the answer", async () => (await fills()) > before, 30_000);
    // Fresh connections go to the processes in turn: both are asked.
    for (let i = 0; i < 6; i++) {
      const again = await ask();
      expect(again.status).toBe(200);
      expect(again.json.cached, `ask ${i + 2}`).toBe(true);
      expect(again.json.hits).toEqual(first.json.hits);
    }
  }, 60_000);

  it("replaces a SIGKILLed process, and requests keep succeeding", async () => {
    const victim = srv.logs.filter(processReady).at(-1)!;
    const before = srv.logs.length;
    process.kill(victim.pid as number, "SIGKILL");
    // Once the supervisor has seen the exit, cluster hands no more connections to the dead process.
    await srv.waitForLog((r) => r.msg === "server process exited; restarting" && r.pid === victim.pid, "the supervisor to see the kill", 60_000);
    let answered = 0;
    let scrapes = 0;
    const back = await until("a new process in the killed one's slot", async () => {
      const r = await search();
      expect(r.status).toBe(200);
      answered++;
      // /metrics keeps answering while the slot restarts: the supervisor asks only ready processes, so the
      // survivor's series come back even while the new process is still starting.
      const m = await request("GET", "/metrics");
      expect(m.status, "/metrics while a process restarts").toBe(200);
      expect(m.json as string).toContain(`process="${1 - (victim.process as number)}"`);
      scrapes++;
      return srv.logs.slice(before).find((l) => processReady(l) && l.process === victim.process);
    }, 120_000);
    expect(back.pid).not.toBe(victim.pid);
    expect(alive(victim.pid as number)).toBe(false);
    const pids = new Set<number>();
    await until("/ready answered by the new process", async () => {
      const r = await request("GET", "/ready");
      expect(r.status).toBe(200);
      pids.add(r.json.pid);
      return pids.has(back.pid as number);
    }, 60_000);
    expect(pids.has(victim.pid as number)).toBe(false);
    expect(scrapes).toBeGreaterThan(0);
    console.log(`[server-processes] ${answered} searches and ${scrapes} scrapes answered while process ${String(victim.process)} came back as pid ${String(back.pid)}`);
  }, 300_000);

  it("stops both processes and exits 0 on SIGTERM to the supervisor", async () => {
    const workers = srv.logs.filter(processReady).map((r) => r.pid as number);
    const code = new Promise<number | null>((resolve) => srv.child.once("exit", (c) => resolve(c)));
    process.kill(srv.child.pid!, "SIGTERM"); // the supervisor alone, not its process group
    expect(await code).toBe(0);
    for (const pid of workers) expect(alive(pid)).toBe(false);
    expect(srv.logs.some((r) => r.msg === "server stopped")).toBe(true);
  }, 120_000);

  it("stops every process gracefully when the signal reaches the whole group, as a terminal's Ctrl-C does", async () => {
    const s = await fx.spawn({ args: ["--processes", "2"] });
    await s.waitForLog((r) => r.msg === "server ready", "the server to start", 120_000);
    const workers = s.logs.filter(processReady).map((r) => r.pid as number);
    const code = new Promise<number | null>((resolve) => s.child.once("exit", (c) => resolve(c)));
    // Each server process gets this signal and then its supervisor's SIGTERM: the second must not cut its stop short.
    process.kill(-s.child.pid!, "SIGINT");
    expect(await code).toBe(0);
    for (const pid of workers) expect(alive(pid)).toBe(false);
    const stopped = s.logs.filter((r) => r.msg === "server process stopped").map((r) => r.process).sort();
    expect(stopped, "every server process finished its graceful stop").toEqual([0, 1]);
  }, 180_000);
});
