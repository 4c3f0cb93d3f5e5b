/**
 * `apfa serve` under Deno 2 (runtime/main.ts, the deno.json entry, on the npm-installed node_modules): it
 * loads the published index and answers an authenticated /search, in one process (the default `auto` means 1
 * there; asking for more is refused). Skipped only where the `deno` binary (the
 * devDependency) is absent.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, openServerFixture, post, ROOT, type Published, type ServerFixture } from "../helpers/server.ts";

const DENO = path.join(ROOT, "node_modules", ".bin", "deno");
const hasDeno = fs.existsSync(DENO);

describe.skipIf(!hasDeno)("apfa serve under Deno", () => {
  let fx: ServerFixture;
  let pub: Published;
  beforeAll(async () => {
    fx = await openServerFixture();
    pub = await fx.publish({ count: 300, tag: "deno" });
  });
  afterAll(() => fx?.close());

  it("runs one process by default, loads the index and answers /search", async () => {
    // No --processes: the default `auto` means one process under Deno, said in an info line.
    const srv = await fx.spawn({ command: [DENO, "run", "-A", "runtime/main.ts"], processes: "config" });
    try {
      expect(srv.logs.find((l) => l.msg === "server ready")).toMatchObject({ processes: 1, index_version: pub.version, index_source: "store", auth: "jwt" });
      expect(srv.logs.find((l) => l.level === "info" && /under Deno `auto` means 1/.test(l.msg))).toBeDefined();
      const r = await post(srv.url, "/search", { query: "savings account offer", k: 3 }, { token: await fx.token() });
      expect(r.status).toBe(200);
      expect(r.json.index_version).toBe(pub.version);
      expect(r.json.hits).toHaveLength(3);
      expect(r.json.hits[0].text).toMatch(/savings account offer \d+ for customers \(deno\)/);
      const bad = await post(srv.url, "/search", { query: "x", k: 3 });
      expect(bad.status).toBe(401);
      expect((await getJson(srv.url, "/ready")).json).toMatchObject({ ready: true, version: pub.version });
    } finally {
      await srv.stop();
    }
    expect(srv.child.exitCode ?? srv.child.signalCode).not.toBeNull();
  }, 90_000);

  it("refuses several processes with a clear error rather than forking processes that cannot serve", () => {
    const r = spawnSync(DENO, ["run", "-A", "runtime/main.ts", "serve", "-c", fx.file, "--processes", "2"], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain("--processes 2 needs Node (node:cluster)");
  }, 90_000);
});
