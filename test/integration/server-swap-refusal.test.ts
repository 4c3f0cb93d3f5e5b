/**
 * A bad next version never replaces a good one. Each case publishes a version the server must refuse — bytes
 * flipped or the file cut short on their way into the store (the manifest keeps the good checksum), a file
 * whose own header is damaged (checksum matches, the engine cannot open it), other dims, another model — and
 * checks that the old version keeps answering, `apfa_swap_total{outcome="refused"}` goes up by one with the
 * reason, and /ready's `last_refusal` says why. A good version afterwards still swaps in.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getJson, metric, openServerFixture, post, until, type Published, type ServerFixture, type ServerHandle } from "../helpers/server.ts";

let fx: ServerFixture;
let srv: ServerHandle;
let token: string;
let good: Published;

beforeAll(async () => {
  fx = await openServerFixture();
  good = await fx.publish({ count: 300, tag: "good-1" });
  srv = await fx.start();
  token = await fx.token();
});
afterAll(async () => {
  await srv?.stop();
  await fx?.close();
});

const refused = (reason: string) => metric(srv.url, new RegExp(`^apfa_swap_total\\{outcome="refused",reason="${reason}"\\}$`));
const refusedAll = async () => {
  const text = await (await fetch(srv.url + "/metrics")).text();
  return [...text.matchAll(/^apfa_swap_total\{outcome="refused",reason="[^"]*"\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
};

async function expectRefused(bad: Published, reason: string, message: RegExp): Promise<void> {
  const ready = await until(`the refusal of ${bad.version.slice(0, 12)}`, async () => {
    const r = await getJson(srv.url, "/ready");
    return r.json.last_refusal?.version === bad.version ? r : undefined;
  });
  expect(ready.status).toBe(200);
  expect(ready.json.version).toBe(good.version);
  expect(ready.json.last_refusal).toMatchObject({ version: bad.version, reason });
  expect(ready.json.last_refusal.message).toMatch(message);
  const s = await post(srv.url, "/search", { query: "student loan", k: 3 }, { token });
  expect(s.status).toBe(200);
  expect(s.json.index_version).toBe(good.version);
  expect((await getJson(srv.url, "/index")).json.version).toBe(good.version);
  expect(srv.logs.some((l) => l.msg === "swap refused; previous version keeps serving" && l.version === bad.version && l.serving === good.version)).toBe(true);
}

describe("swap refusal", () => {
  it("serves the first version", async () => {
    const r = await post(srv.url, "/search", { query: "student loan", k: 3 }, { token });
    expect(r.status).toBe(200);
    expect(r.json.index_version).toBe(good.version);
    expect(await refusedAll()).toBe(0);
  });

  it("refuses a version whose index file was corrupted in the store (bytes flipped)", async () => {
    fx.corruptNextPut("/index.faiss", (b) => {
      const c = b.slice();
      for (let i = 1000; i < 1016; i++) c[i] ^= 0xff;
      return c;
    });
    const bad = await fx.publish({ count: 300, tag: "flipped" });
    await expectRefused(bad, "checksum", /index\.faiss: \d+ bytes with sha256 .*corrupt or truncated/);
    expect(await refused("checksum")).toBe(1);
    expect(await refusedAll()).toBe(1);
  });

  it("refuses a truncated index file", async () => {
    fx.corruptNextPut("/index.faiss", (b) => b.slice(0, b.byteLength - 4096));
    const bad = await fx.publish({ count: 300, tag: "truncated" });
    await expectRefused(bad, "checksum", /corrupt or truncated/);
    expect(await refused("checksum")).toBe(2);
    expect(await refusedAll()).toBe(2);
  });

  it("refuses a truncated documents file", async () => {
    fx.corruptNextPut("/docs.jsonl", (b) => b.slice(0, b.byteLength >> 1));
    const bad = await fx.publish({ count: 300, tag: "docs-truncated" });
    await expectRefused(bad, "checksum", /docs\.jsonl: .*corrupt or truncated/);
    expect(await refusedAll()).toBe(3);
  });

  it("refuses a file that matches its checksum but the engine cannot open (damaged header)", async () => {
    const bad = await fx.publish({ count: 300, tag: "header", mutate: (f) => void f["index.faiss"].set([0x58, 0x58, 0x58, 0x58], 0) });
    await expectRefused(bad, "unreadable", /cannot open flat index .*not a FAISS IndexFlatIP file \(fourcc "XXXX"/);
    expect(await refused("unreadable")).toBe(1);
  });

  it("refuses a version whose documents do not match its vector count", async () => {
    const bad = await fx.publish({ count: 300, tag: "short-docs", mutate: (f) => {
      const lines = new TextDecoder().decode(f["docs.jsonl"]).split("\n");
      f["docs.jsonl"] = new TextEncoder().encode(lines.slice(0, 250).join("\n") + "\n");
    } });
    await expectRefused(bad, "count_mismatch", /300 vectors, 250 documents, manifest says 300/);
  });

  it("refuses a version with different dims", async () => {
    const bad = await fx.publish({ count: 300, dims: 32, tag: "dims-32" });
    await expectRefused(bad, "dims_mismatch", /has 32 dims; this server embeds queries with 64/);
    expect(await refused("dims_mismatch")).toBe(1);
  });

  it("refuses a version embedded with another model", async () => {
    const bad = await fx.publish({ count: 300, tag: "other-model", modelId: "text-embedding-3-small" });
    await expectRefused(bad, "model_mismatch", /was embedded with text-embedding-3-small; this server uses hash-trigram-64/);
    expect(await refused("model_mismatch")).toBe(1);
  });

  it("still swaps to a good version after the refusals", async () => {
    const next = await fx.publish({ count: 300, tag: "good-2" });
    await until("the good version to serve", async () => (await getJson(srv.url, "/ready")).json.version === next.version);
    const r = await post(srv.url, "/search", { query: "student loan", k: 3 }, { token });
    expect(r.json.index_version).toBe(next.version);
    expect(await metric(srv.url, /^apfa_swap_total\{outcome="success",reason=""\}$/)).toBeGreaterThanOrEqual(2);
  });
});
