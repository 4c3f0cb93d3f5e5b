/**
 * Incremental runs against a real Postgres and the fs store: a rerun of an unchanged corpus embeds nothing and
 * keeps the version; edits, inserts and deletes embed exactly the changed documents and the result equals a
 * `--full` rebuild (same version hash on `flat`); a new embedder identity or a damaged base means a full run.
 * Each "did not embed" is proven by the embedder's own call counter and the run's counters.
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { layout } from "../../runtime/keys.ts";
import { LEXICAL_FILE, loadLexical } from "../../runtime/lexical.ts";
import { followRun } from "../../runtime/progress.ts";
import { createRun, type RunRow } from "../../runtime/runs.ts";
import { readLatest, readManifest, servingFiles, type Manifest } from "../../runtime/versions.ts";
import { startWorker, type WorkerHandle } from "../../runtime/worker.ts";
import type { HashEmbedder } from "../fixtures/plugins/hash-embedder.ts";
import { openTestPipeline, type TestPipeline } from "../helpers/pg.ts";

const N = 300;
const id = (i: number) => `doc-${String(i).padStart(4, "0")}`;
type Doc = { id: string; text: string; tier?: string };

function corpus(): Doc[] {
  return Array.from({ length: N }, (_, i) => ({ id: id(i), text: `document ${i} about loans, savings and rate ${i % 17}`, tier: i % 2 ? "a" : "b" }));
}

async function runOnce(tp: TestPipeline, docs: Doc[], opts: { full?: boolean } = {}): Promise<RunRow> {
  // Written in a shuffled order: the version must not depend on the order a source yields documents in.
  const shuffled = [...docs].sort((a, b) => (a.text.length % 3) - (b.text.length % 3) || (a.id < b.id ? 1 : -1));
  await fsp.writeFile(path.join(tp.dir, "docs.jsonl"), shuffled.map((d) => JSON.stringify({ id: d.id, text: d.text, metadata: { tier: d.tier } })).join("\n") + "\n");
  const runId = await createRun(tp.db.pool, tp.config, "test", opts);
  return followRun(tp.db.pool, runId, { tty: false, write: () => {}, intervalMs: 50 });
}

async function servedDocs(tp: TestPipeline, version: string): Promise<Array<{ id: string; text: string; metadata: Record<string, unknown> }>> {
  const text = new TextDecoder().decode(await tp.pipeline.store.get(layout.indexFile(version, "docs.jsonl")));
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

async function versionFiles(tp: TestPipeline, m: Manifest): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const f of Object.keys(m.files)) out[f] = await tp.pipeline.store.get(layout.indexFile(m.version, f));
  return out;
}

/** Rows' own vectors find those rows first, through the engine as the server opens it. */
async function expectSelfMatches(tp: TestPipeline, m: Manifest): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(tp.dir, "open-"));
  const files = await versionFiles(tp, m);
  for (const [name, bytes] of Object.entries(files)) await fsp.writeFile(path.join(dir, name), bytes);
  const searcher = await (await tp.pipeline.engine()).open(dir, { dims: m.dims, count: m.count });
  const raw = files[m.reuse!.vectors.file].slice(m.reuse!.vectors.offset);
  const vectors = new Float32Array(raw.buffer, raw.byteOffset, m.count * m.dims);
  const ids = (await servedDocs(tp, m.version)).map((d) => d.id);
  const found = [];
  for (let r = 0; r < m.count; r += 7) found.push(ids[(await searcher.search(vectors.slice(r * m.dims, (r + 1) * m.dims), 1)).rows[0]] === ids[r]);
  await searcher.close();
  // A wrong key map sends most rows elsewhere; the graph search itself may miss the odd one.
  expect(found.filter(Boolean).length / found.length).toBeGreaterThanOrEqual(0.95);
}

for (const engine of ["flat", "hnsw"] as const) {
  describe(`incremental runs (${engine})`, () => {
    let tp: TestPipeline;
    let worker: WorkerHandle;
    let embedder: HashEmbedder;
    let first: RunRow;
    let docs = corpus();

    beforeAll(async () => {
      tp = await openTestPipeline({ batch_size: 40, stages: { index: { plugin: engine }, embedder: { options: { dims: 32 } } } });
      worker = await startWorker(tp.pipeline, { cron: false });
      embedder = (await tp.pipeline.embedder()) as HashEmbedder;
      first = await runOnce(tp, docs);
    }, 120_000);
    afterAll(async () => {
      await worker?.stop("test done");
      await tp?.close();
    });

    it("the first run embeds everything and records what later runs reuse", async () => {
      expect(first.status).toBe("succeeded");
      expect([Number(first.docs_embedded), Number(first.docs_reused), Number(first.docs_removed)]).toEqual([N, 0, 0]);
      expect(first.base_version).toBeNull();
      expect(first.base_reason).toBe("no previous version");
      // hnsw reported its insertions while it built (the run's progress line shows them); flat does not report.
      expect([first.build_done, first.build_total]).toEqual(engine === "hnsw" ? [String(N), String(N)] : [null, null]);
      const m = await readManifest(tp.pipeline.store, first.index_version!);
      expect(m.reuse?.rows).toBe("rows.jsonl");
      expect(m.reuse?.vectors.file).toBe(engine === "flat" ? "index.faiss" : "vectors.npy");
      // Servers download what they serve (the lexical index of hybrid retrieval too); the rows file and an added
      // vector copy are for later runs only. hnsw.json carries the expansion_search the build's recall check chose.
      expect(servingFiles(m).map(([f]) => f).sort()).toEqual(engine === "flat" ? ["docs.jsonl", "index.faiss", "lexical.json"] : ["docs.jsonl", "hnsw.json", "index.usearch", "lexical.json"]);
      if (engine === "hnsw") expect(m.recall).toMatchObject({ engine: "hnsw", k: 10, target: 0.95, met: true });
      else expect(m.recall).toBeUndefined();
      // Canonical order: by id, whatever order the source gave.
      expect((await servedDocs(tp, m.version)).map((d) => d.id)).toEqual(corpus().map((d) => d.id));
    });

    it("an unchanged corpus embeds nothing, reuses every document and keeps the version", async () => {
      const texts = embedder.stats.texts;
      const r = await runOnce(tp, docs);
      expect(r.status).toBe("succeeded");
      expect(embedder.stats.texts).toBe(texts);
      expect([Number(r.docs_embedded), Number(r.docs_reused), Number(r.docs_removed), r.batches_total]).toEqual([0, N, 0, 0]);
      expect(r.base_version).toBe(first.index_version);
      expect(r.index_version).toBe(first.index_version);
      const versions = await tp.db.pool.query("select count(*)::int as n from apfa.index_versions");
      expect(versions.rows[0].n).toBe(1);
      const batches = await tp.db.pool.query("select count(*)::int as n from apfa.batches where run_id = $1", [r.id]);
      expect(batches.rows[0].n).toBe(0);
    });

    it("edits, inserts and deletes embed exactly the changed documents; the result equals a --full rebuild", async () => {
      const texts = embedder.stats.texts;
      docs = corpus();
      for (const i of [3, 50, 120, 121, 299]) docs[i] = { ...docs[i], text: `${docs[i].text} (edited)` };
      docs[7] = { ...docs[7], tier: "platinum" }; // metadata only: the vector stays, the served document changes
      const gone = [docs[10].id, docs[200].id];
      docs = docs.filter((d) => !gone.includes(d.id));
      docs.push({ id: "new-1", text: "a brand new loan product" }, { id: "new-2", text: "another new one" }, { id: "doc-0000a", text: "sorts between" });

      const r = await runOnce(tp, docs);
      expect(r.status).toBe("succeeded");
      expect([Number(r.docs_embedded), Number(r.docs_changed), Number(r.docs_removed), Number(r.docs_reused)]).toEqual([8, 5, 2, N - 7]);
      expect(embedder.stats.texts - texts).toBe(8);
      const m = await readManifest(tp.pipeline.store, r.index_version!);
      expect(m.built_from).toBe(first.index_version);
      expect(m.count).toBe(N + 1);
      const served = await servedDocs(tp, m.version);
      const byId = new Map(served.map((d) => [d.id, d]));
      expect(gone.some((g) => byId.has(g))).toBe(false);
      expect(byId.get(docs.find((d) => d.id === id(3))!.id)?.text).toMatch(/\(edited\)$/);
      expect(byId.get("new-1")?.text).toBe("a brand new loan product");
      expect(byId.get(id(7))?.metadata).toEqual({ tier: "platinum" });
      expect(served.map((d) => d.id)).toEqual(docs.map((d) => d.id).sort());
      // The incremental version carries a lexical index of its own documents: the new one is found, a deleted one is not.
      const lexical = loadLexical(new TextDecoder().decode(await tp.pipeline.store.get(layout.indexFile(m.version, LEXICAL_FILE))));
      expect(served[lexical.search("new-2", 1)[0]]?.id).toBe("new-2");
      expect(lexical.search(gone[0], 5).map((row) => served[row].id)).not.toContain(gone[0]);

      if (engine === "hnsw") {
        // The graph was changed in place (7 of 300 vectors removed, 8 added), and its keys still find the rows.
        expect(m.index_build).toBe("update");
        await expectSelfMatches(tp, m);
      }

      const full = await runOnce(tp, docs, { full: true });
      expect(full.status).toBe("succeeded");
      expect([Number(full.docs_embedded), Number(full.docs_reused), full.base_reason]).toEqual([N + 1, 0, "full run requested"]);
      const fm = await readManifest(tp.pipeline.store, full.index_version!);
      const a = await versionFiles(tp, m);
      const b = await versionFiles(tp, fm);
      expect(new TextDecoder().decode(b["docs.jsonl"])).toBe(new TextDecoder().decode(a["docs.jsonl"]));
      expect(b["rows.jsonl"]).toEqual(a["rows.jsonl"]);
      const va = a[m.reuse!.vectors.file].subarray(m.reuse!.vectors.offset);
      const vb = b[fm.reuse!.vectors.file].subarray(fm.reuse!.vectors.offset);
      expect(Buffer.compare(Buffer.from(va), Buffer.from(vb))).toBe(0);
      if (engine === "flat") expect(full.index_version).toBe(r.index_version);
    });

    it.runIf(engine === "flat")("two runs started at once each diff against their own base and agree", async () => {
      docs = docs.map((d, i) => (i % 50 === 1 ? { ...d, text: `${d.text} (twice)` } : d));
      await fsp.writeFile(path.join(tp.dir, "docs.jsonl"), docs.map((d) => JSON.stringify({ id: d.id, text: d.text, metadata: { tier: d.tier } })).join("\n") + "\n");
      const ids = await Promise.all([createRun(tp.db.pool, tp.config, "schedule"), createRun(tp.db.pool, tp.config, "manual")]);
      const [a, b] = await Promise.all(ids.map((x) => followRun(tp.db.pool, x, { tty: false, write: () => {}, intervalMs: 50 })));
      expect([a.status, b.status]).toEqual(["succeeded", "succeeded"]);
      expect(a.base_version).toBe(b.base_version);
      const edited = docs.filter((d) => d.text.endsWith("(twice)")).length;
      expect([Number(a.docs_embedded), Number(b.docs_embedded)]).toEqual([edited, edited]);
      expect(a.index_version).toBe(b.index_version);
      expect((await servedDocs(tp, a.index_version!)).filter((d) => d.text.endsWith("(twice)"))).toHaveLength(edited);
    });

    it.runIf(engine === "flat")("a base whose files fail their checksum means a full run, with the reason", async () => {
      const latest = (await readLatest(tp.pipeline.store))!.version;
      const m = await readManifest(tp.pipeline.store, latest);
      const file = path.join(tp.dir, "store", layout.indexFile(latest, m.reuse!.vectors.file));
      const bytes = await fsp.readFile(file);
      bytes[bytes.length - 1] ^= 0xff;
      await fsp.writeFile(file, bytes);
      const r = await runOnce(tp, docs);
      expect(r.status).toBe("succeeded");
      expect([Number(r.docs_embedded), Number(r.docs_reused)]).toEqual([docs.length, 0]);
      expect(r.base_reason).toMatch(/unusable as a base.*fails its checksum/);
      // The rebuilt version is the same corpus: it repairs the damaged files under the same hash.
      expect(r.index_version).toBe(latest);
    });
    it.runIf(engine === "flat")("a changed embedder option re-embeds everything without being told", async () => {
      const opts = tp.config.stages.embedder.options as Record<string, unknown>;
      const before = opts.max_chars;
      opts.max_chars = 4000;
      try {
        const r = await runOnce(tp, docs);
        expect(r.status).toBe("succeeded");
        expect([Number(r.docs_embedded), Number(r.docs_reused)]).toEqual([docs.length, 0]);
        expect(r.base_version).toBeNull();
        expect(r.base_reason).toMatch(/embedder or an option that changes its vectors changed/);
      } finally {
        opts.max_chars = before;
      }
    });

  });
}

describe("incremental runs from a postgres source with a watermark column", () => {
  let tp: TestPipeline;
  let worker: WorkerHandle;
  const run = async (opts: { full?: boolean } = {}) =>
    followRun(tp.db.pool, await createRun(tp.db.pool, tp.config, "test", opts), { tty: false, write: () => {}, intervalMs: 50 });

  beforeAll(async () => {
    tp = await openTestPipeline({
      batch_size: 40,
      stages: {
        embedder: { options: { dims: 32 } },
        // The source reads the pipeline's own database (DATABASE_URL); `path` is the default jsonl option, dropped.
        source: { plugin: "postgres", options: { path: undefined, query: "select id, body as text, tier, updated_at from docs order by id", watermark_column: "updated_at" } },
      },
    });
    await tp.db.pool.query("create table docs (id text primary key, body text, tier text, updated_at timestamptz not null default clock_timestamp())");
    // Distinct watermarks, one millisecond apart: clock_timestamp() per row can repeat a microsecond on a fast
    // machine, and a tie at the high-water mark would make the next run re-read two rows instead of one.
    await tp.db.pool.query("insert into docs (id, body, tier, updated_at) select 'd' || lpad(i::text, 4, '0'), 'loan text ' || i, 'a', timestamptz '2020-01-01' + i * interval '1 millisecond' from generate_series(1, 200) i");
    worker = await startWorker(tp.pipeline, { cron: false });
  }, 60_000);
  afterAll(async () => {
    await worker?.stop("test done");
    await tp?.close();
  });

  it("reads only the changed rows and every id, and ends where a full read ends", async () => {
    const first = await run();
    expect(first.status, first.error ?? "").toBe("succeeded");
    expect(first.source_read).toBe("full");
    expect(first.source_cursor).toBeTruthy();

    await tp.db.pool.query("update docs set body = body || ' (new rate)', updated_at = clock_timestamp() where id in ('d0003', 'd0050', 'd0100')");
    await tp.db.pool.query("update docs set tier = 'gold', updated_at = clock_timestamp() where id = 'd0007'");
    await tp.db.pool.query("delete from docs where id in ('d0010', 'd0011')");
    await tp.db.pool.query("insert into docs (id, body, tier) values ('n1', 'new product one', 'b'), ('n2', 'new product two', 'b')");
    // A row written with an old watermark: invisible to the changes read, found through the id list.
    await tp.db.pool.query("insert into docs (id, body, tier, updated_at) values ('old1', 'backdated row', 'c', '2000-01-01')");

    const r = await run();
    expect(r.status, r.error ?? "").toBe("succeeded");
    expect(r.source_read).toBe(`changes since ${first.source_cursor}`);
    // 3 edits + 1 metadata change + 2 inserts read by watermark, the row at the old high-water mark read again
    // (another transaction may have committed at that very value), and 1 backdated row fetched by id.
    expect(Number(r.docs_read)).toBe(8);
    expect([Number(r.docs_embedded), Number(r.docs_changed), Number(r.docs_removed), Number(r.docs_reused)]).toEqual([6, 3, 2, 195]);
    const served = await servedDocs(tp, r.index_version!);
    expect(served.find((d) => d.id === "d0007")?.metadata).toMatchObject({ tier: "gold" });
    expect(served.some((d) => d.id === "d0010")).toBe(false);

    const full = await run({ full: true });
    expect(full.source_read).toBe("full");
    expect(full.index_version).toBe(r.index_version);
  });
});
