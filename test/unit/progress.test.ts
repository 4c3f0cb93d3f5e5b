import { expect, it } from "vitest";
import { describeProgress } from "../../runtime/progress.ts";
import type { RunRow } from "../../runtime/runs.ts";

const row = (over: Partial<RunRow>): RunRow => ({
  status: "embedding", batches_total: 10, batches_done: 4, batches_failed: 0, docs_embedded: "400", docs_reused: "0", docs_removed: "0",
  started_at: new Date(0), build_done: null, build_total: null, ...over,
}) as RunRow;

it("shows how many vectors the index build has inserted while a run is building, when the engine reports it", () => {
  const building = describeProgress(row({ status: "building", batches_done: 10, build_done: "45000", build_total: "100000" }), 10_000);
  expect(building.line).toMatch(/^building +10\/10 batches .* index 45000\/100000 vectors \(45%\)$/);
  expect(describeProgress(row({ status: "building", batches_done: 10 }), 10_000).line).not.toMatch(/index/); // flat: nothing reported
  expect(describeProgress(row({ build_done: "5", build_total: "9" }), 10_000).line).not.toMatch(/index/); // only while building
});
