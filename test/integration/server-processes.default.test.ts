/**
 * `apfa serve` with no `--processes` and no `server.processes`, as a new user starts it: the default `auto`
 * starts one process per core (os.availableParallelism()), each answering /ready with its own pid; on a 1-core
 * machine, one process and no supervisor. Nothing is published yet, so the first process builds the index from
 * the source, and the others start on that build from the local cache without refusing it.
 */
import * as fsp from "node:fs/promises";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeDocs, openServerFixture, until, type ChildServer, type ServerFixture } from "../helpers/server.ts";

const CORES = os.availableParallelism();
let fx: ServerFixture;
let srv: ChildServer;

/** GET /ready on a fresh connection: cluster hands out connections, not requests. */
function ready(): Promise<{ status: number; pid: number; version: string }> {
  return new Promise((resolve, reject) => {
    http.get(srv.url + "/ready", { agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c)).on("end", () => resolve({ status: res.statusCode!, ...JSON.parse(text) }));
    }).on("error", reject);
  });
}

beforeAll(async () => {
  fx = await openServerFixture();
  await fsp.writeFile(path.join(fx.dir, "corpus.jsonl"), makeDocs(40, "corpus").map((d) => JSON.stringify(d)).join("\n") + "\n");
  srv = await fx.spawn({ processes: "config" });
}, 180_000);
afterAll(async () => {
  await srv?.stop();
  await fx?.close();
});

describe("apfa serve without --processes", () => {
  it(`starts one process per core (${CORES} here), each answering /ready on the first process's build`, async () => {
    const line = srv.logs.find((r) => r.msg === "server ready")!;
    expect(line.processes).toBe(CORES);
    expect(line.count).toBe(40);
    expect(srv.logs.filter((r) => r.msg === "swap refused; previous version keeps serving")).toEqual([]);
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
      expect(r.version).toBe(line.index_version);
      seen.add(r.pid);
      return seen.size === CORES;
    }, 60_000);
    expect([...seen].sort()).toEqual([...pids].sort());
  }, 120_000);
});
