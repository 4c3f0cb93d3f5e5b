/** The admission gate: slots, a bounded FIFO queue, refusal past it, and queued requests that give up. */
import { describe, expect, it } from "vitest";
import { createAdmission, type Release } from "../../server/admission.ts";

describe("admission", () => {
  it("grants max_active slots at once, queues max_queued more in order, and refuses the next", async () => {
    const gate = createAdmission({ max_active: 2, max_queued: 2 });
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
    const gate = createAdmission({ max_active: 1, max_queued: 2 });
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
    const gate = createAdmission({ max_active: 3, max_queued: 5000 });
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
});
