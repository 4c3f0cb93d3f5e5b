/**
 * `apfa serve` with no `--processes` and no `server.processes`: the default `auto` starts one process per core
 * (os.availableParallelism()), each answering /ready with its own pid; on a 1-core machine, one process and no
 * supervisor.
 */
import * as http from "node:http";
import * as os from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openServerFixture, until, type ChildServer, type ServerFixture } from "../helpers/server.ts";

const CORES = os.availableParallelism();
let fx: ServerFixture;
let srv: ChildServer;

/** GET /ready on a fresh connection: cluster hands out connections, not requests. */
function ready(): Promise<{ status: number; pid: number; process?: number }> {
  return new Promise((resolve, reject) => {
    http.get(srv.url + "/ready", { agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c)).on("end", () => resolve({ status: res.statusCode!, ...JSON.parse(text) }));
    }).on("error", reject);
  });
}

beforeAll(async () => {
  fx = await openServerFixture();
  await fx.publish({ count: 300, tag: "v1" });
  srv = await fx.spawn({ processes: "config" });
}, 180_000);
afterAll(async () => {
  await srv?.stop();
  await fx?.close();
});

describe("apfa serve without --processes", () => {
  it(`starts one process per core (${CORES} here), each answering /ready`, async () => {
    const line = srv.logs.find((r) => r.msg === "server ready")!;
    expect(line.processes).toBe(CORES);
    if (CORES === 1) {
      // Nothing to share the port with: no supervisor, no forked process.
      expect(srv.logs.some((r) => r.msg === "server process ready")).toBe(false);
      expect((await ready()).status).toBe(200);
      return;
    }
    const pids = line.pids as number[];
    expect(new Set(pids).size).toBe(CORES);
    expect(pids).not.toContain(srv.child.pid);
    const seen = new Set<number>();
    await until(`/ready answered by all ${CORES} processes`, async () => {
      const r = await ready();
      expect(r.status).toBe(200);
      seen.add(r.pid);
      return seen.size === CORES;
    }, 60_000);
    expect([...seen].sort()).toEqual([...pids].sort());
  }, 120_000);
});
