/** Each server process's share of the cores under `apfa serve --processes N` (runtime/cores.ts). */
import { describe, expect, it } from "vitest";
import { CORE_SHARE_ENV, coreShare, coreShareEnv } from "../../runtime/cores.ts";

describe("core share", () => {
  it("splits the cores among the processes, at least one each, and tells OpenMP unless the environment does", () => {
    expect(coreShareEnv(2, {}, 2)).toEqual({ [CORE_SHARE_ENV]: "1", OMP_NUM_THREADS: "1" });
    expect(coreShareEnv(2, {}, 8)).toEqual({ [CORE_SHARE_ENV]: "4", OMP_NUM_THREADS: "4" });
    expect(coreShareEnv(3, {}, 2)).toEqual({ [CORE_SHARE_ENV]: "1", OMP_NUM_THREADS: "1" });
    expect(coreShareEnv(2, { OMP_NUM_THREADS: "6" }, 8)).toEqual({ [CORE_SHARE_ENV]: "4" });
  });

  it("reads the share a supervisor set, and 0 (every core) without one or with nonsense", () => {
    expect(coreShare({ [CORE_SHARE_ENV]: "3" })).toBe(3);
    for (const v of [undefined, "", "0", "-2", "1.5", "x"]) expect(coreShare({ [CORE_SHARE_ENV]: v })).toBe(0);
  });
});
