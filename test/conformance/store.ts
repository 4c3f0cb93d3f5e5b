/**
 * Store conformance suite. Any store plugin, built-in or a user's, passes it:
 * `testStore("s3", async () => s3.create(opts, ctx))`.
 * @module
 */
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Store } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { collect } from "../../runtime/streams.ts";

export function testStore(name: string, make: () => Promise<Store>, cleanup?: () => Promise<void>): void {
  describe(`store conformance: ${name}`, () => {
    let store: Store;
    const prefix = `conf-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    beforeAll(async () => {
      store = await make();
    });
    afterAll(async () => {
      for await (const st of store.list(`${prefix}/`)) await store.delete(st.key);
      await store.close?.();
      await cleanup?.();
    });

    it("round-trips bytes and reports size", async () => {
      const data = new Uint8Array([0, 1, 2, 255, 128]);
      await store.put(`${prefix}/a/b.bin`, data);
      expect(await store.get(`${prefix}/a/b.bin`)).toEqual(data);
      const st = await store.stat(`${prefix}/a/b.bin`);
      expect(st?.size).toBe(5);
      expect(st?.mtime).toBeInstanceOf(Date);
    });

    it("streams puts and gets of several MB", async () => {
      const chunk = new Uint8Array(1 << 20).map((_, i) => i % 251);
      async function* gen() {
        for (let i = 0; i < 6; i++) yield chunk;
      }
      await store.put(`${prefix}/big.bin`, gen());
      const back = await collect(await store.getStream(`${prefix}/big.bin`));
      expect(back.byteLength).toBe(6 << 20);
      expect(back.subarray(5 << 20, (5 << 20) + 10)).toEqual(chunk.subarray(0, 10));
    });

    it("overwrites atomically: a put replaces the whole object", async () => {
      await store.put(`${prefix}/latest`, new TextEncoder().encode("v1-long-content"));
      await store.put(`${prefix}/latest`, new TextEncoder().encode("v2"));
      expect(new TextDecoder().decode(await store.get(`${prefix}/latest`))).toBe("v2");
    });

    it("lists by prefix in key order, and only under the prefix", async () => {
      for (const k of ["l/2", "l/1", "l/10", "lx/1"]) await store.put(`${prefix}/${k}`, new Uint8Array([1]));
      const keys: string[] = [];
      for await (const st of store.list(`${prefix}/l/`)) keys.push(st.key);
      expect(keys).toEqual([`${prefix}/l/1`, `${prefix}/l/10`, `${prefix}/l/2`]);
    });

    it("stat of a missing key is null; get of one is not_found", async () => {
      expect(await store.stat(`${prefix}/missing`)).toBeNull();
      const err = await store.get(`${prefix}/missing`).catch((e) => e);
      expect(isApfaError(err, "not_found")).toBe(true);
      const err2 = await store.getStream(`${prefix}/missing`).catch((e) => e);
      expect(isApfaError(err2, "not_found")).toBe(true);
    });

    it("deletes, and deleting a missing key is fine", async () => {
      await store.put(`${prefix}/d`, new Uint8Array([1]));
      await store.delete(`${prefix}/d`);
      expect(await store.stat(`${prefix}/d`)).toBeNull();
      await store.delete(`${prefix}/d`);
    });

    it("copyToFile, where offered, writes the object to a local file that a later put leaves as it was", async (t) => {
      if (!store.copyToFile) return t.skip();
      const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-store-copy-"));
      try {
        await store.put(`${prefix}/c`, new Uint8Array([1, 2, 3]));
        await store.copyToFile(`${prefix}/c`, path.join(dir, "c"));
        await store.put(`${prefix}/c`, new Uint8Array([9]));
        expect(new Uint8Array(await fsp.readFile(path.join(dir, "c")))).toEqual(new Uint8Array([1, 2, 3]));
        const err = await store.copyToFile(`${prefix}/missing`, path.join(dir, "m")).catch((e) => e);
        expect(isApfaError(err, "not_found")).toBe(true);
      } finally {
        await fsp.rm(dir, { recursive: true, force: true });
      }
    });

    it("rejects keys that escape the root", async () => {
      for (const bad of ["../x", "/etc/passwd", "a/../../b", "a//b", "a\\b", ""]) {
        const err = await store.get(bad).catch((e) => e);
        expect(isApfaError(err, "invalid_key"), bad).toBe(true);
      }
    });
  });
}
