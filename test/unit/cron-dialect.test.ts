/**
 * One cron dialect: `apfa lint` (runtime/config/cron.ts) accepts exactly the expressions graphile-worker's
 * crontab parser accepts, so a schedule that lints clean never stops `apfa worker`, and `apfa plan` can show
 * the next fires of every one. Checked on hand-picked edge cases and on random expressions over cron's alphabet.
 */
import fc from "fast-check";
import { parseCronItems } from "graphile-worker";
import { describe, expect, it } from "vitest";
import { cronProblem, nextFires } from "../../runtime/config/cron.ts";

/** graphile-worker's verdict: undefined when it accepts `expr`, else its message. */
function workerProblem(expr: string): string | undefined {
  try {
    parseCronItems([{ task: "t", identifier: "t", match: expr }]);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

const agree = (expr: string) => {
  const lint = cronProblem(expr);
  const worker = workerProblem(expr);
  expect({ expr, lintAccepts: lint === undefined, workerAccepts: worker === undefined }).toEqual({ expr, lintAccepts: worker === undefined, workerAccepts: worker === undefined });
  if (lint === undefined) expect(nextFires(expr, 2, new Date("2026-01-01T00:00:00Z"))).toHaveLength(2);
};

describe("cron dialect", () => {
  it.each([
    "0 * * * *", "*/5 * * * *", "*/100 * * * *", "0 2 * * *", "1-1 * * * *", "2-1 * * * *", "0-59 * * * *",
    "0 0 * * 7", "0 0 * * 6-7", "0 0 * * 8", "0 0 31 12 *", "0 0 0 * *", "0 24 * * *", "60 * * * *", "*/0 * * * *",
    "1,2,3-5 * * * *", "1,,2 * * * *", "* * * *", "* * * * * *", "MON * * * *", "0 0 * * MON", "5/2 * * * *", "1-5/2 * * * *",
  ])("lint and worker agree on %j", (expr) => agree(expr));

  it("agrees on random expressions over cron's alphabet", () => {
    const part = fc.stringMatching(/^[0-9*/,-]{1,6}$/);
    fc.assert(fc.property(fc.array(part, { minLength: 5, maxLength: 5 }), (fields) => agree(fields.join(" "))), { numRuns: 2000 });
  });

  it("still names the field that is wrong", () => {
    expect(cronProblem("1-1 * * * *")).toBe("minute: range 1-1 has one value; write 1");
    expect(cronProblem("0 25 * * *")).toBe("hour: 25 is out of range 0-23");
  });
});
