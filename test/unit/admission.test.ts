/** The admission gate: slots, a bounded FIFO queue, refusal past it, and queued requests that give up. */
import { afterEach, describe, expect, it, vi } from "vitest";
import { createAdmission, QueueWaitExceeded, type Release } from "../../server/admission.ts";

describe("admission", () => {
  it("grants max_active slots at once, queues max_queued more in order, and refuses the next", async () => {
    const gate = createAdmission({ max_active: 2, max_queued: 2, max_wait_ms: 60_000 });
    const a = await gate.enter()!;
    const b = await gate.enter()!;
    const order: string[] = [];
    const c = gate.enter()!.then((r) => (order.push("c"), r));
    const d = gate.enter()!.then((r) => (order.push("d"), r));
    expect(gate.stats()).toEqual({ active: 2, queued: 2 });
    expect(gate.enter()).toBeUndefined();

    a();
    a(); // a second call must not free a second slot
    const rc = await c;
    expect(order).toEqual(["c"]);
    expect(gate.stats()).toEqual({ active: 2, queued: 1 });
    b();
    const rd = await d;
    expect(order).toEqual(["c", "d"]);
    expect(gate.stats()).toEqual({ active: 2, queued: 0 });
    rc();
    rd();
    expect(gate.stats()).toEqual({ active: 0, queued: 0 });
  });

  it("drops a queued request whose client went away, and hands its turn to the next", async () => {
    const gate = createAdmission({ max_active: 1, max_queued: 2, max_wait_ms: 60_000 });
    const a = await gate.enter()!;
    const gone = new AbortController();
    const b = gate.enter(gone.signal)!;
    const c = gate.enter()!;
    gone.abort(new Error("client closed"));
    await expect(b).rejects.toThrow("client closed");
    expect(gate.stats()).toEqual({ active: 1, queued: 1 });
    a();
    const rc: Release = await c;
    expect(gate.stats()).toEqual({ active: 1, queued: 0 });
    rc();
    expect(gate.stats()).toEqual({ active: 0, queued: 0 });
  });

  it("keeps FIFO order and its counts through many more requests than slots", async () => {
    const gate = createAdmission({ max_active: 3, max_queued: 5000, max_wait_ms: 60_000 });
    const served: number[] = [];
    await Promise.all(Array.from({ length: 4000 }, async (_, i) => {
      const release = await gate.enter()!;
      served.push(i);
      await Promise.resolve();
      release();
    }));
    expect(served).toEqual(Array.from({ length: 4000 }, (_, i) => i));
    expect(gate.stats()).toEqual({ active: 0, queued: 0 });
  });

  describe("with a fake clock", () => {
    afterEach(() => vi.useRealTimers());

    it("refuses a request that waited max_wait_ms, and keeps serving the ones behind it", async () => {
      vi.useFakeTimers();
      const gate = createAdmission({ max_active: 1, max_queued: 5, max_wait_ms: 1000 });
      const a = await gate.enter()!;
      const b = gate.enter()!;
      const bFailed = expect(b).rejects.toBeInstanceOf(QueueWaitExceeded);
      await vi.advanceTimersByTimeAsync(600);
      const c = gate.enter()!; // queued 600 ms after b: its own 1000 ms
      await vi.advanceTimersByTimeAsync(399);
      expect(gate.stats()).toEqual({ active: 1, queued: 2 });
      await vi.advanceTimersByTimeAsync(1);
      await bFailed;
      expect(gate.stats()).toEqual({ active: 1, queued: 1 });
      a();
      const rc = await c; // granted before its own deadline: no timeout fires for it later
      await vi.advanceTimersByTimeAsync(5000);
      expect(gate.stats()).toEqual({ active: 1, queued: 0 });
      rc();
      expect(gate.stats()).toEqual({ active: 0, queued: 0 });
    });

    it("waits at most the budget a caller has left, and refuses at once when none is", async () => {
      vi.useFakeTimers();
      const gate = createAdmission({ max_active: 1, max_queued: 5, max_wait_ms: 1000 });
      const a = await gate.enter()!;
      await expect(gate.enter(undefined, 0)!).rejects.toBeInstanceOf(QueueWaitExceeded);
      const b = gate.enter(undefined, 300)!;
      const bFailed = expect(b).rejects.toBeInstanceOf(QueueWaitExceeded);
      await vi.advanceTimersByTimeAsync(299);
      expect(gate.stats()).toEqual({ active: 1, queued: 1 });
      await vi.advanceTimersByTimeAsync(1);
      await bFailed;
      expect(gate.stats()).toEqual({ active: 1, queued: 0 });
      a();
      const c = await gate.enter(undefined, 0)!; // a free slot is taken whatever the budget
      c();
      expect(gate.stats()).toEqual({ active: 0, queued: 0 });
    });
  });
});
