import { expect, it } from "vitest";
import { createRateLimiter } from "../../server/rate-limit.ts";

it("allows a burst, then the sustained rate, per client", () => {
  const rl = createRateLimiter({ rps: 10, burst: 3 });
  const t = 1_000_000;
  expect([rl.take("a", t), rl.take("a", t), rl.take("a", t)]).toEqual([0, 0, 0]);
  expect(rl.take("a", t)).toBeGreaterThan(0);
  expect(rl.take("b", t)).toBe(0);
  expect(rl.take("a", t + 100)).toBe(0);
  expect(rl.take("a", t + 100)).toBeGreaterThan(0);
});

it("rps 0 turns it off", () => {
  const rl = createRateLimiter({ rps: 0, burst: 1 });
  for (let i = 0; i < 100; i++) expect(rl.take("a")).toBe(0);
});

it("forgets idle clients", () => {
  const rl = createRateLimiter({ rps: 10, burst: 10 });
  for (let i = 0; i < 50; i++) rl.take(`c${i}`, 0);
  expect(rl.size()).toBe(50);
  rl.take("late", 60_000);
  expect(rl.size()).toBe(1);
});
