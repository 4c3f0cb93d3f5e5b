/**
 * `apfa serve` under Deno 2 (runtime/main.ts, the deno.json entry, on the npm-installed node_modules): it
 * loads the published index and answers an authenticated /search. Skipped only where the `deno` binary (the
 * devDependency) is absent.
 */
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

  it("loads the index and answers /search", async () => {
    const srv = await fx.spawn({ command: [DENO, "run", "-A", "runtime/main.ts"] });
    try {
      expect(srv.logs.find((l) => l.msg === "server ready")).toMatchObject({ index_version: pub.version, index_source: "store", auth: "jwt" });
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
});
