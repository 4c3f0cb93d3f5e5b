/**
 * `apfa serve --processes 2` swaps in rounds: a version is served by both processes or by neither. A good
 * version reaches both; a version that only process 1 cannot open (the failing-open-index fixture) is aborted in
 * both, though process 0 had opened it, and `/ready` and `/metrics` say so; a process killed in the middle of
 * a round aborts it, and comes back on the version the other serves, not on `latest`. Every wait polls for a
 * condition.
 */
import * as http from "node:http";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openServerFixture, ROOT, until, type ChildServer, type ServerFixture } from "../helpers/server.ts";

const FAILING_ENGINE = path.join(ROOT, "test/fixtures/plugins/failing-open-index.ts");
const FAIL_COUNT = 250;
const HANG_COUNT = 260;

let fx: ServerFixture;
let srv: ChildServer;

/** GET on a fresh connection: cluster hands out connections, not requests. */
function get(route: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(srv.url + route, { agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c)).on("end", () => resolve(text));
    }).on("error", reject);
  });
}

interface Ready { pid: number; version: string; last_abort?: { version: string; reason: string; at: string } }

/** Polls /ready until every process has answered one that satisfies `pred`; returns the last answer of each. */
async function everyProcess(what: string, pred: (r: Ready) => boolean): Promise<Ready[]> {
  const seen = new Map<number, Ready>();
  await until(what, async () => {
    const r = JSON.parse(await get("/ready")) as Ready;
    if (pred(r)) seen.set(r.pid, r);
    return seen.size === 2;
  }, 60_000);
  return [...seen.values()];
}

beforeAll(async () => {
  fx = await openServerFixture({
    overrides: { stages: { index: { plugin: FAILING_ENGINE, options: { fail_count: FAIL_COUNT, hang_count: HANG_COUNT, only_process: 1 } } }, server: { swap_poll_s: 3600 } },
  });
  await fx.publish({ count: 300, tag: "v1" });
  srv = await fx.spawn({ args: ["--processes", "2"] });
}, 180_000);
afterAll(async () => {
  await srv?.stop();
  await fx?.close();
});

describe("apfa serve --processes 2: coordinated swaps", () => {
  it("commits a good version in both processes", async () => {
    const v2 = await fx.publish({ count: 300, tag: "v2" });
    await srv.waitForLog((r) => r.msg === "swap committed in every process" && r.version === v2.version, "the round to commit", 60_000);
    const answers = await everyProcess("both processes on the new version", (r) => r.version === v2.version);
    expect(answers.map((r) => r.last_abort)).toEqual([undefined, undefined]);
  }, 120_000);

  it("aborts in both processes a version one of them cannot open; both keep the previous one", async () => {
    const before = JSON.parse(await get("/ready")) as Ready;
    const bad = await fx.publish({ count: FAIL_COUNT, tag: "v3" });
    const aborted = await srv.waitForLog((r) => r.msg === "swap aborted in every process" && r.version === bad.version, "the round to abort", 60_000);
    expect(aborted.reason).toMatch(/process 1: .*refusing to open a version of 250 documents/);
    // Process 0 opened the version (it prepared it) but never served it.
    expect(srv.logs.some((r) => r.msg === "index version serving" && r.version === bad.version)).toBe(false);
    const answers = await everyProcess("both processes to report the abort", (r) => r.last_abort?.version === bad.version);
    for (const r of answers) expect(r.version).toBe(before.version);
    // Both processes relayed the event; the aborted version is not tried again at once.
    expect(srv.logs.filter((r) => r.msg === "swap round started" && r.version === bad.version)).toHaveLength(1);
    const metrics = await get("/metrics");
    for (const p of ["0", "1"]) {
      const line = metrics.split("\n").find((l) => l.startsWith("apfa_swap_total{") && l.includes('outcome="aborted"') && l.includes(`process="${p}"`));
      expect(line, `process ${p}'s aborted swaps in /metrics`).toMatch(/ 1$/);
    }
  }, 120_000);

  it("aborts the round when a process dies in it; the restarted process serves what the other serves", async () => {
    const serving = JSON.parse(await get("/ready")) as Ready;
    const stuck = await fx.publish({ count: HANG_COUNT, tag: "v4" });
    await srv.waitForLog((r) => r.msg === "swap round started" && r.version === stuck.version, "the round to start", 60_000);
    // Process 1's open of this version never returns: the round waits on it until it is killed.
    const victim = srv.logs.find((r) => r.msg === "server ready")!.pids as number[];
    process.kill(victim[1], "SIGKILL");
    const aborted = await srv.waitForLog((r) => r.msg === "swap aborted in every process" && r.version === stuck.version, "the round to abort", 60_000);
    expect(aborted.code).toBe("exited");
    const back = await srv.waitForLog((r) => r.msg === "server process ready" && r.process === 1 && r.pid !== victim[1], "process 1 to come back", 60_000);
    // `latest` is the stuck version; the new process starts on the committed one instead.
    expect(back.index_version).toBe(serving.version);
    const answers = await everyProcess("both processes on the previous version", (r) => r.pid !== victim[1]);
    for (const r of answers) expect(r.version).toBe(serving.version);
    expect(answers.find((r) => r.pid === back.pid)?.last_abort).toBeUndefined();
    expect(answers.find((r) => r.pid !== back.pid)?.last_abort?.version).toBe(stuck.version);
  }, 120_000);
});
