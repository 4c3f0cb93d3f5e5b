import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import delta, { loadSnapshot, localTable } from "../../plugins/source/delta.ts";
import fsStore from "../../plugins/store/fs.ts";
import type { SourceItem } from "../../runtime/contracts.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { testSource } from "../conformance/source.ts";
import { DeltaWriter, type Row } from "../fixtures/delta.ts";

const root = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-delta-"));
const store = await fsStore.create({ dir: root }, { baseDir: root, log: silentLogger, env: {} });
const ctx = { baseDir: root, log: silentLogger, env: {}, store };
const docs = (from: number, to: number): Row[] => Array.from({ length: to - from }, (_, k) => ({ id: `d${from + k}`, text: `doc ${from + k}`, n: BigInt(from + k) }));
const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => `d${from + k}`);

/**
 * v0: add f1 (d0-d4, kind=loan)   v1: add f2 (d5-d9, kind=card)   v2: remove f1, add f3 (d10-d12, kind=loan)
 * Live at v2: f2, f3. Partition column `kind` is only in the log, not in the files.
 */
async function buildTable(dir: string): Promise<DeltaWriter> {
  const w = new DeltaWriter(dir, { partitionColumns: ["kind"] });
  const f1 = await w.addFile("kind=loan/part-00001.parquet", docs(0, 5), { kind: "loan" });
  await w.commit([{ add: f1 }]);
  await w.commit([{ add: await w.addFile("kind=card/part-00002.parquet", docs(5, 10), { kind: "card" }, { rowGroupSize: 2 }) }]);
  await w.commit([w.remove(f1), { add: await w.addFile("kind=loan/part-00003.parquet", docs(10, 13), { kind: "loan" }) }]);
  return w;
}

const plain = await buildTable(path.join(root, "plain"));
// Same history, checkpointed at v2, one more commit, then the commits behind the checkpoint cleaned up:
// a reader that ignores the checkpoint cannot build the table.
const cp = await buildTable(path.join(root, "cp"));
await cp.checkpoint();
await cp.commit([{ add: await cp.addFile("kind=card/part-00004.parquet", docs(13, 15), { kind: "card" }) }]);
await cp.cleanupLog(2);
const multi = await buildTable(path.join(root, "multi"));
await multi.checkpoint({ parts: 3 });

const make = (o: Record<string, unknown>) => async () => delta.create(delta.options.parse(o), ctx);
testSource("delta (log replay)", make({ path: "plain" }), { ids: ids(5, 13) });
testSource("delta (checkpoint + later commit)", make({ path: "cp" }), { ids: ids(5, 15) });
testSource("delta (store prefix)", make({ key: "cp/" }), { ids: ids(5, 15) });

async function readAll(o: Record<string, unknown>): Promise<SourceItem[]> {
  const out: SourceItem[] = [];
  for await (const p of (await delta.create(delta.options.parse(o), ctx)).pages({ pageSize: 4 })) out.push(...p);
  return out;
}
const idsOf = (items: SourceItem[]) => items.map((i) => (i as { id: unknown }).id);

describe("delta source", () => {
  it("reports what changed since a read from the commit log: rows of files added since, and every live id", async () => {
    const w = await buildTable(path.join(root, "changes"));
    const src = await delta.create(delta.options.parse({ path: "changes" }), ctx);
    for await (const _ of src.pages({ pageSize: 100 })) void _;
    expect(src.cursor!()).toBe("2");
    // v3: rewrite the card file with d5 edited and d9 deleted; v4: a new file with d20.
    const f2 = { path: "kind=card/part-00002.parquet" } as Parameters<typeof w.remove>[0];
    const rewritten = docs(5, 9).map((r) => (r.id === "d5" ? { ...r, text: "doc 5, edited" } : r));
    await w.commit([w.remove(f2), { add: await w.addFile("kind=card/part-00005.parquet", rewritten, { kind: "card" }) }]);
    await w.commit([{ add: await w.addFile("kind=loan/part-00006.parquet", docs(20, 21), { kind: "loan" }) }]);

    const ch = (await src.changes!("2", { pageSize: 3 }))!;
    const changed: SourceItem[] = [];
    for await (const p of ch.pages) changed.push(...p);
    expect(idsOf(changed)).toEqual([...ids(5, 9), "d20"]);
    expect(changed[0]).toMatchObject({ text: "doc 5, edited" });
    const live: unknown[] = [];
    for await (const p of ch.ids()) live.push(...p);
    expect(live.map(String).sort()).toEqual([...ids(5, 9), ...ids(10, 13), "d20"].sort());
    expect(idsOf(await ch.get(["d11", "nope"]))).toEqual(["d11"]);
    expect(src.cursor!()).toBe("4");
    // A cursor the log cannot reach (or that is not a version) means a full read.
    expect(await src.changes!("not-a-version", { pageSize: 3 })).toBeUndefined();
    expect(await src.changes!("99", { pageSize: 3 })).toBeUndefined();
  });

  it("leaves out the rows of a removed file and adds partition values to metadata", async () => {
    const items = await readAll({ path: "plain" });
    expect(idsOf(items)).not.toContain("d0");
    expect(items[0]).toEqual({ id: "d5", text: "doc 5", metadata: { n: 5, kind: "card" }, location: "plain/kind=card/part-00002.parquet:row 1" });
    expect(items.at(-1)).toMatchObject({ id: "d12", metadata: { kind: "loan" } });
  });

  it("time-travels with `version`", async () => {
    expect(idsOf(await readAll({ path: "plain", version: 0 }))).toEqual(ids(0, 5));
    expect(idsOf(await readAll({ path: "plain", version: 1 }))).toEqual(ids(0, 10));
    const err = await readAll({ path: "plain", version: 7 }).catch((e) => e);
    expect(isApfaError(err, "config")).toBe(true);
    expect(err.message).toMatch(/plain has no version 7: the latest is 2/);
  });

  it("starts from the checkpoint, and refuses a version the cleaned-up log no longer covers", async () => {
    const snap = await loadSnapshot(localTable(path.join(root, "cp"), "cp"));
    expect(snap).toMatchObject({ version: 3, checkpoint: 2 });
    expect(snap.metaData).toMatchObject({ partitionColumns: ["kind"] });
    expect(snap.protocol).toEqual({ minReaderVersion: 1, minWriterVersion: 2 });
    // Partition values come out of the checkpoint's map column too.
    expect((await readAll({ path: "cp" }))[0]).toMatchObject({ id: "d5", metadata: { kind: "card" } });
    expect(idsOf(await readAll({ path: "cp", version: 2 }))).toEqual(ids(5, 13));
    const err = await readAll({ path: "cp", version: 1 }).catch((e) => e);
    expect(isApfaError(err, "not_found")).toBe(true);
    expect(err.message).toMatch(/_delta_log\/00000000000000000000\.json is missing and no checkpoint covers it/);
  });

  it("reads a multi-part checkpoint and ignores one with a missing part", async () => {
    const snap = await loadSnapshot(localTable(path.join(root, "multi"), "multi"));
    expect(snap.checkpoint).toBe(2);
    expect(snap.files.map((f) => f.path)).toEqual(["kind=card/part-00002.parquet", "kind=loan/part-00003.parquet"]);
    await fsp.rm(path.join(root, "multi/_delta_log/00000000000000000002.checkpoint.0000000002.0000000003.parquet"));
    const again = await loadSnapshot(localTable(path.join(root, "multi"), "multi"));
    expect(again.checkpoint).toBeUndefined();
    expect(again.files).toEqual(snap.files);
  });

  it("count() sums numRecords from the add stats", async () => {
    expect(await (await delta.create(delta.options.parse({ path: "cp" }), ctx)).count!()).toBe(10);
    expect(await (await delta.create(delta.options.parse({ path: "plain", version: 1 }), ctx)).count!()).toBe(10);
  });

  it("names the log file and line of malformed JSON", async () => {
    const w = new DeltaWriter(path.join(root, "badjson"));
    await w.commit([{ add: await w.addFile("a.parquet", docs(0, 1)) }]);
    await w.commit([], '{"commitInfo":{}}\n{"add": {"path": "b.parquet",\n');
    const err = await readAll({ path: "badjson" }).catch((e) => e);
    expect(isApfaError(err, "invalid_input")).toBe(true);
    expect(err.message).toMatch(/badjson\/_delta_log\/00000000000000000001\.json:2: malformed JSON in the Delta log/);
  });

  it("refuses deletion vectors, column mapping and unknown reader features instead of misreading", async () => {
    const dv = new DeltaWriter(path.join(root, "dv"));
    const add = await dv.addFile("a.parquet", docs(0, 2));
    await dv.commit([{ add: { ...add, deletionVector: { storageType: "i", pathOrInlineDv: "wi5b=000010000siXQKl0rr91000f", offset: 1, sizeInBytes: 36, cardinality: 1 } } }]);
    expect((await readAll({ path: "dv" }).catch((e) => e)).message).toMatch(/dv\/a\.parquet has a deletion vector/);

    const cm = new DeltaWriter(path.join(root, "cm"));
    cm.metaData = { ...cm.metaData, configuration: { "delta.columnMapping.mode": "name" } };
    await cm.commit([{ add: await cm.addFile("a.parquet", docs(0, 2)) }]);
    expect((await readAll({ path: "cm" }).catch((e) => e)).message).toMatch(/uses column mapping \(mode name\)/);

    const rf = new DeltaWriter(path.join(root, "rf"));
    rf.protocol = { minReaderVersion: 3, minWriterVersion: 7, readerFeatures: ["deletionVectors", "futureThing"], writerFeatures: [] };
    await rf.commit([{ add: await rf.addFile("a.parquet", docs(0, 2)) }]);
    expect((await readAll({ path: "rf" }).catch((e) => e)).message).toMatch(/needs Delta reader feature\(s\) futureThing/);
  });

  it("reports a directory without a Delta log as not_found", async () => {
    await fsp.mkdir(path.join(root, "empty"), { recursive: true });
    const err = await readAll({ path: "empty" }).catch((e) => e);
    expect(isApfaError(err, "not_found")).toBe(true);
    expect(err.message).toMatch(/no Delta table at empty/);
  });
});
