/** The load suite's report: scaling and per-process memory ratios across process counts, and swaps superseded under --processes N. */
import { describe, expect, it } from "vitest";
import type { LoadGenResult } from "../../bench/child/load-gen.ts";
import { loadCellTables, scalingRatios, type Cell } from "../../bench/suites/load-report.ts";

const MiB = 2 ** 20;
const result = (ok: number): LoadGenResult => ({ durationS: 10, total: ok, errors: 0, timeouts: 0, errorCodes: {}, statuses: { 200: ok }, okMs: Array.from({ length: ok }, () => 5), rejectedMs: [] });
const cell = (server: Cell["server"], processes: number, ok: number, mem: { rss: number; pss: number }, extra: Partial<Cell> = {}): Cell => ({
  server, processes, conns: 1000, swaps: 0, result: result(ok), counted503: 0, cacheHits: 9, cacheMisses: 1, rssMiB: mem.rss, pssMiB: mem.pss, treeSize: processes > 1 ? processes + 1 : 1, cores: 1, ...extra,
});
const byId = (rs: { id: string; value: number; goal?: number }[]) => Object.fromEntries(rs.map((r) => [r.id, r]));

describe("load report", () => {
  const cells = [
    cell("raw", 1, 1000, { rss: 100, pss: 80 }),
    cell("apfa", 1, 500, { rss: 200, pss: 150 }),
    cell("raw", 2, 1800, { rss: 210, pss: 170 }),
    cell("apfa", 2, 900, { rss: 420, pss: 180 }),
    cell("apfa", 2, 100, { rss: 999, pss: 999 }, { swapsPublished: 3, swaps: 1, swapsSuperseded: 2 }),
  ];

  it("divides N processes' 2xx answers/s by N × one process's, for apfa (with the goal) and raw (without), ignoring runs with swaps", () => {
    const r = byId(scalingRatios(cells, { indexBytes: 150 * MiB }));
    expect(r["load/c1000/scaling_2p"].value).toBeCloseTo(900 / (2 * 500));
    expect(r["load/c1000/scaling_2p"].goal).toBe(0.8);
    expect(r["load/c1000/raw_scaling_2p"].value).toBeCloseTo(1800 / (2 * 1000));
    expect(r["load/c1000/raw_scaling_2p"].goal).toBeUndefined();
  });

  it("measures each extra process's memory as a share of the index, from PSS sums when there are any, else RSS", () => {
    expect(byId(scalingRatios(cells, { indexBytes: 150 * MiB }))["load/c1000/extra_process_rss_share"].value).toBeCloseTo(30 / 150);
    const noPss = cells.map((c) => ({ ...c, pssMiB: NaN }));
    expect(byId(scalingRatios(noPss, { indexBytes: 150 * MiB }))["load/c1000/extra_process_rss_share"].value).toBeCloseTo(220 / 150);
  });

  it("splits out the mapped index files' share of each extra process, and leaves it out when nothing was mapped", () => {
    const mapped = cells.map((c) => (c.server === "apfa" ? { ...c, filesPssMiB: c.processes === 1 ? 146 : 148 } : c));
    const r = byId(scalingRatios(mapped, { indexBytes: 146 * MiB }));
    expect(r["load/c1000/extra_process_index_share"].value).toBeCloseTo(2 / 146);
    expect(r["load/c1000/extra_process_index_share"].goal).toBe(0.1);
    // Read into each heap (no native helper): no mapped files, so no index share to report; the total above still counts it.
    const read = cells.map((c) => (c.server === "apfa" ? { ...c, filesPssMiB: 0 } : c));
    expect(byId(scalingRatios(read, { indexBytes: 146 * MiB }))["load/c1000/extra_process_index_share"]).toBeUndefined();
    expect(byId(scalingRatios(cells, { indexBytes: 146 * MiB }))["load/c1000/extra_process_index_share"]).toBeUndefined();
  });

  it("has no scaling ratios with one process count", () => {
    expect(scalingRatios(cells.filter((c) => c.processes === 1), { indexBytes: MiB })).toEqual([]);
  });

  it("counts a swap superseded by a newer version as not missed", () => {
    const out = loadCellTables(cells, { n: 100_000, durationS: 10, queries: 10_000, zipfS: 1.1, swaps: 3, indexBytes: 150 * MiB });
    expect(byId(out.ratios)["load/p2/c1000/swaps/swaps_missed"].value).toBe(0);
    expect(out.tables[0].rows.at(-1)).toContain("1 of 3 (? during the run, 2 superseded)");
  });
});
