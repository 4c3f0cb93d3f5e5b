/** How `server.processes` / `--processes` become a process count: the default `auto` follows the cores. */
import * as os from "node:os";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../runtime/config/load.ts";
import { resolveProcesses } from "../../server/cluster.ts";

describe("server processes", () => {
  it("default to auto, which is one per core", async () => {
    const { config, problems } = await loadConfig(undefined, { env: {}, checkPlugins: false });
    expect(problems).toEqual([]);
    expect(config!.server.processes).toBe("auto");
    expect(resolveProcesses("auto", 2)).toBe(2);
    expect(resolveProcesses(0, 8)).toBe(8);
    expect(resolveProcesses("auto")).toBe(os.availableParallelism());
  });

  it("stay one on a 1-core machine, so no supervisor runs there", () => {
    expect(resolveProcesses("auto", 1)).toBe(1);
    expect(resolveProcesses(0, 1)).toBe(1);
  });

  it("take an explicit count as asked, whatever the cores", () => {
    expect(resolveProcesses(1, 8)).toBe(1);
    expect(resolveProcesses(3, 1)).toBe(3);
  });
});
