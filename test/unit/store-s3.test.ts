import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import s3, { type S3Options } from "../../plugins/store/s3.ts";
import type { Store } from "../../runtime/contracts.ts";
import { errorMessage, isApfaError } from "../../runtime/errors.ts";
import { createLogger, silentLogger } from "../../runtime/log.ts";
import { collect } from "../../runtime/streams.ts";
import { testStore } from "../conformance/store.ts";
import { startS3 } from "../helpers/s3.ts";

const srv = await startS3();
afterAll(() => srv.cleanup());

const ctx = (env: Record<string, string | undefined> = srv.env, log = silentLogger) => ({ baseDir: "/", log, env });
// The s3 store's create() is synchronous (it only validates credentials and builds the client).
const make = (o: Partial<Record<keyof S3Options, unknown>> = {}, env?: Record<string, string | undefined>, log = silentLogger) =>
  s3.create(s3.options.parse({ endpoint: srv.endpoint, bucket: srv.bucket, ...o }), ctx(env, log)) as Store;
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

testStore("s3", async () => make());
testStore("s3 with prefix", async () => make({ prefix: "tenant-a/apfa/" }));

describe("s3 store", () => {
  it("creates a missing bucket on first use", async () => {
    const bucket = `${srv.bucket}-auto`;
    const store = make({ bucket });
    await store.put("runs/r1.json", bytes("{}"));
    expect((await fsp.stat(path.join(srv.dir, bucket))).isDirectory()).toBe(true);
    expect(text(await store.get("runs/r1.json"))).toBe("{}");
    await store.close?.();
  });

  it("with create_bucket: false, a missing bucket is a config error naming the option", async () => {
    const store = make({ bucket: `${srv.bucket}-none`, create_bucket: false });
    const err = await store.put("a", bytes("x")).catch((e) => e);
    expect(isApfaError(err, "config")).toBe(true);
    expect(err.message).toMatch(/does not exist.*create_bucket/);
    await store.close?.();
  });

  it("keeps objects under the prefix and strips it when listing", async () => {
    const plain = make();
    const scoped = make({ prefix: "p-list" });
    await scoped.put("indexes/v1/main.usearch", bytes("m"));
    expect(await plain.stat("p-list/indexes/v1/main.usearch")).not.toBeNull();
    const keys: string[] = [];
    for await (const st of scoped.list("indexes/")) keys.push(st.key);
    expect(keys).toEqual(["indexes/v1/main.usearch"]);
  });

  it("lists keys containing + and = exactly", async () => {
    const store = make({ prefix: "p-chars" });
    await store.put("k/a+b=c.bin", bytes("1"));
    const keys: string[] = [];
    for await (const st of store.list("k/")) keys.push(st.key);
    expect(keys).toEqual(["k/a+b=c.bin"]);
    expect(text(await store.get(keys[0]))).toBe("1");
  });

  it("lists past the 1000-key page size, in key order", async () => {
    const store = make({ prefix: "p-page" });
    const keys = Array.from({ length: 1001 }, (_, i) => `b/${String(i).padStart(5, "0")}.npy`);
    for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => store.put(k, bytes("x"))));
    srv.requests.length = 0;
    const listed: string[] = [];
    for await (const st of store.list("b/")) listed.push(st.key);
    expect(listed).toEqual(keys);
    await srv.settle();
    expect(srv.requests.filter((r) => r.includes("list-type=2")).length).toBe(2);
  });

  it("puts a stream larger than part_size as a multipart upload", async () => {
    const store = make({ part_size: 5 * 1024 * 1024, prefix: "p-multi" });
    const chunk = new Uint8Array(700_000).map((_, i) => (i * 7) % 256);
    async function* gen() {
      for (let i = 0; i < 18; i++) yield chunk; // 12.6 MB: parts of 5 MiB, 5 MiB, rest
    }
    srv.requests.length = 0;
    await store.put("big.bin", gen());
    await srv.settle();
    expect(srv.requests.filter((r) => r.startsWith("POST /") && r.includes("uploads")).length).toBe(1);
    expect(srv.requests.filter((r) => r.startsWith("PUT /") && r.includes("partNumber=")).length).toBe(3);
    const back = await collect(await store.getStream("big.bin"));
    expect(back.byteLength).toBe(18 * 700_000);
    expect(back.subarray(17 * 700_000, 17 * 700_000 + 100)).toEqual(chunk.subarray(0, 100));
    expect((await store.stat("big.bin"))?.size).toBe(18 * 700_000);
  });

  it("retries a put while the server is down and succeeds once it is back", async () => {
    const lines: string[] = [];
    // Backoff ~250 ms, 500 ms, 1 s, 2 s, 4 s, 8 s: the server restarts after the first retry is logged (the
    // put has really failed once), and the restarted server (a new process) is up long before the last.
    let retried!: () => void;
    const firstRetry = new Promise<void>((r) => (retried = r));
    const store = make({ prefix: "p-retry", retries: 6 }, undefined, createLogger({}, { write: (l) => (lines.push(l), l.includes("retrying") && retried()) }));
    await store.put("warmup", bytes("w")); // bucket exists, connection pooled
    await srv.stop();
    const put = store.put("after-restart.bin", bytes("survived"));
    await firstRetry;
    await srv.restart();
    await put;
    expect(text(await store.get("after-restart.bin"))).toBe("survived");
  });

  it("gives up after `retries` with an error naming the endpoint", async () => {
    const store = make({ prefix: "p-down", retries: 1 });
    await store.put("warmup", bytes("w"));
    await srv.stop();
    try {
      const err = await store.put("x", bytes("x")).catch((e) => e);
      expect(isApfaError(err, "store")).toBe(true);
      expect(err.message).toContain(`cannot reach ${srv.endpoint}`);
      expect(err.message).toMatch(/2 attempt/);
    } finally {
      await srv.restart();
    }
  });

  it("never shows credentials in describe() or errors", async () => {
    const good = make({ prefix: "p-creds" });
    expect(good.describe()).toBe(`s3:${srv.endpoint}/${srv.bucket}/p-creds/`);
    // An unknown access key id: S3 (and s3rver) echo it back in the error body, which minio copies onto its
    // error object; the store must not pass that object on. (s3rver does not check V4 signatures, so a wrong
    // secret cannot be provoked here.)
    const env = { AWS_ACCESS_KEY_ID: `${srv.accessKey}X`, AWS_SECRET_ACCESS_KEY: `${srv.secretKey}y` };
    const bad = make({}, env);
    for (const s of [srv.accessKey, srv.secretKey]) {
      expect(good.describe()).not.toContain(s);
      expect(bad.describe()).not.toContain(s);
    }
    const err = await bad.put("x", bytes("x")).catch((e) => e);
    expect(isApfaError(err, "access_denied")).toBe(true);
    expect(err.message).toMatch(/InvalidAccessKeyId.*check the credentials in \$AWS_ACCESS_KEY_ID/);
    const shown = [errorMessage(err), JSON.stringify(err), JSON.stringify(err.cause), String(err.stack), String(err.cause?.stack)].join("\n");
    for (const s of Object.values(env)) expect(shown).not.toContain(s);
  });

  it("names the env var when credentials are missing", () => {
    expect(() => make({ access_key_env: "MY_S3_KEY" }, { AWS_SECRET_ACCESS_KEY: "x" })).toThrow(/MY_S3_KEY is not set.*access_key_env/);
  });

  it("rejects unsafe options", () => {
    const parse = (o: Record<string, unknown>) => s3.options.safeParse({ endpoint: srv.endpoint, bucket: srv.bucket, ...o });
    expect(parse({ prefix: "../etc" }).success).toBe(false);
    expect(parse({ prefix: "/abs" }).success).toBe(false);
    expect(parse({ endpoint: "http://AK:SECRET@127.0.0.1:9000" }).success).toBe(false);
    expect(parse({ endpoint: "ftp://x" }).success).toBe(false);
    expect(parse({ bucket: "Bad_Bucket" }).success).toBe(false);
    expect(parse({ part_size: 1024 }).success).toBe(false);
    expect(parse({ extra: 1 }).success).toBe(false);
    expect(parse({ prefix: "ok/p/" }).data?.prefix).toBe("ok/p");
  });
});
