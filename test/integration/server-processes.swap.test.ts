/**
 * `apfa serve --processes 2` with the memory-mapped `hnsw` engine: after a swap both processes serve the new
 * version and map the very same file (one inode), so the index's pages are shared, not held once per process.
 */
import * as fs from "node:fs";
import * as http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openServerFixture, until, type ChildServer, type ServerFixture } from "../helpers/server.ts";

let fx: ServerFixture;
let srv: ChildServer;

/** GET /ready on a fresh connection: cluster hands out connections, not requests. */
function ready(): Promise<{ pid: number; version: string }> {
  return new Promise((resolve, reject) => {
    http.get(srv.url + "/ready", { agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c)).on("end", () => resolve(JSON.parse(text)));
    }).on("error", reject);
  });
}

/** Device:inode of the version's index file mapped into `pid`, from /proc/<pid>/maps (dev, inode, path columns). */
function mappedInodes(pid: number, version: string): string[] {
  return [...new Set(fs.readFileSync(`/proc/${pid}/maps`, "utf8").split("\n")
    .filter((l) => l.includes(`/${version}/`) && /\.usearch( \(deleted\))?$/.test(l))
    // A mapping of a file another process's copy replaced reads "… (deleted)": not shared with anyone.
    .map((l) => l.trim().split(/\s+/).slice(3, 5).join(":") + (l.endsWith("(deleted)") ? " deleted" : "")))];
}

beforeAll(async () => {
  fx = await openServerFixture({ overrides: { stages: { index: { plugin: "hnsw" } }, server: { swap_poll_s: 3600 } } });
  await fx.publish({ count: 300, tag: "v1" });
  srv = await fx.spawn({ args: ["--processes", "2"] });
}, 180_000);
afterAll(async () => {
  await srv?.stop();
  await fx?.close();
});

describe.runIf(process.platform === "linux")("apfa serve --processes 2, hnsw", () => {
  it("both processes swap on one publish and map one shared copy of the new index", async () => {
    const pids = srv.logs.find((r) => r.msg === "server ready")!.pids as number[];
    const v2 = await fx.publish({ count: 300, tag: "v2" });
    for (const pid of pids) {
      await srv.waitForLog((r) => r.msg === "index version serving" && r.version === v2.version && r.process === pids.indexOf(pid), `process ${pids.indexOf(pid)} to swap`, 60_000);
    }
    const seen = new Map<number, string>();
    await until("/ready from both processes on the new version", async () => {
      const r = await ready();
      seen.set(r.pid, r.version);
      return seen.size === 2 && [...seen.values()].every((v) => v === v2.version);
    }, 60_000);
    const maps = pids.map((pid) => mappedInodes(pid, v2.version));
    expect(maps[0]).toHaveLength(1);
    expect(maps[1]).toEqual(maps[0]);
  }, 180_000);
});
