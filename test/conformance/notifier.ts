/**
 * Notifier conformance suite: `testNotifier("redis", make, { injectRaw })`. `make` returns a new instance on
 * the same (test-unique) channel each call; `injectRaw` puts a raw payload on that channel behind the
 * notifier's back, for the malformed-payload test (skipped without it).
 * @module
 */
import { afterEach, describe, expect, it } from "vitest";
import type { Notifier, SwapEvent } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";

export interface NotifierSuiteOptions {
  injectRaw?: (payload: string) => Promise<void>;
}

/** Polls `pred` until it holds; fails the test with `what` after `ms`. */
export async function waitFor(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function swapEvent(version: string): SwapEvent {
  return { version, engine: "usearch", dims: 384, count: 1234, created_at: new Date().toISOString() };
}

const tcpHandles = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length;

export function testNotifier(name: string, make: () => Promise<Notifier>, opts: NotifierSuiteOptions = {}): void {
  describe(`notifier conformance: ${name}`, () => {
    const opened: Notifier[] = [];
    const fresh = async () => {
      const n = await make();
      opened.push(n);
      return n;
    };
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((n) => n.close()));
    });

    it("delivers a published event, exactly, to every subscriber", async () => {
      const [a, b, pub] = [await fresh(), await fresh(), await fresh()];
      const gotA: SwapEvent[] = [];
      const gotB: SwapEvent[] = [];
      await a.subscribe((e) => gotA.push(e));
      await b.subscribe((e) => gotB.push(e));
      const e1 = swapEvent("sha256-aaaa");
      const e2 = { ...swapEvent("sha256-bbbb"), dims: 768, count: 0 };
      await pub.publish(e1);
      await pub.publish(e2);
      await waitFor(() => gotA.length >= 2 && gotB.length >= 2, "both subscribers to get both events");
      expect(gotA).toEqual([e1, e2]);
      expect(gotB).toEqual([e1, e2]);
    });

    it("stops delivering after unsubscribe", async () => {
      const [n, control, pub] = [await fresh(), await fresh(), await fresh()];
      const got: SwapEvent[] = [];
      const seen: SwapEvent[] = [];
      const unsubscribe = await n.subscribe((e) => got.push(e));
      await control.subscribe((e) => seen.push(e));
      await pub.publish(swapEvent("v1"));
      await waitFor(() => got.length === 1 && seen.length === 1, "first event");
      await unsubscribe();
      await pub.publish(swapEvent("v2"));
      // The control subscriber hearing v2 means it was delivered wherever it was going to be.
      await waitFor(() => seen.length === 2, "second event at the control subscriber");
      expect(got.map((e) => e.version)).toEqual(["v1"]);
    });

    it.skipIf(!opts.injectRaw)("skips malformed payloads and keeps delivering", async () => {
      const [n, pub] = [await fresh(), await fresh()];
      const got: SwapEvent[] = [];
      await n.subscribe((e) => got.push(e));
      for (const raw of ["{not json", "[]", "null", JSON.stringify({ ...swapEvent("x"), dims: "384" }), JSON.stringify({ version: "v" })]) {
        await opts.injectRaw!(raw);
      }
      const good = swapEvent("after-garbage");
      await pub.publish(good);
      await waitFor(() => got.length >= 1, "the valid event after the malformed ones");
      await new Promise((r) => setTimeout(r, 50));
      expect(got).toEqual([good]);
    });

    it("rejects an invalid event on publish instead of sending it", async () => {
      const pub = await fresh();
      const err = await pub.publish({ ...swapEvent("v"), dims: -1 }).catch((e) => e);
      expect(isApfaError(err, "invalid_input")).toBe(true);
      expect(err.message).toMatch(/dims/);
    });

    it("a throwing handler does not stop later deliveries", async () => {
      const [n, pub] = [await fresh(), await fresh()];
      const got: string[] = [];
      await n.subscribe((e) => {
        got.push(e.version);
        if (e.version === "boom") throw new Error("handler bug");
      });
      await pub.publish(swapEvent("boom"));
      await pub.publish(swapEvent("fine"));
      await waitFor(() => got.length === 2, "both events");
      expect(got).toEqual(["boom", "fine"]);
    });

    it("close() releases its connections", async () => {
      const before = tcpHandles();
      const n = await make();
      await n.subscribe(() => {});
      await n.subscribe(() => {});
      await n.publish(swapEvent("v"));
      expect(tcpHandles()).toBeGreaterThan(before);
      await n.close();
      await waitFor(() => tcpHandles() <= before, "sockets to close");
    });
  });
}
