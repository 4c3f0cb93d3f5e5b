/**
 * Million suite: a 1M-document version built by a real run, then served. A catalogue-like corpus
 * (examples/corpus.ts: loan products and customer profiles from a few templates, so near-duplicate-heavy) goes
 * through `apfa`'s own path — a jsonl source, the `bench-hash` 384-d embedder (no model can embed 1M documents
 * here in useful time: use-lite does ~12 a CPU-second), embed_batch jobs on a worker process, build_index with
 * the `hnsw` engine and its default recall check — and the published version is served by `apfa serve` with one
 * and with two processes, `/search` at 10 connections (unique queries, so nothing is a cache hit). A second run
 * with the `flat` engine reuses the vectors (nothing is embedded again) and serves the same corpus exactly, for
 * the comparison. A third run, when faiss-node is installed, builds an IVF index with the `faiss` engine after the
 * servers have logged query vectors, so its recall check measures on real queries too (the hnsw build came before
 * any), and serves it with one and two processes (its inverted lists memory-mapped). Reports the run's phases,
 * the manifest's measured recall and the recall of queries from outside the corpus, `/search` latency per
 * engine, and the peak memory (PSS summed over the server's processes) of two processes against one.
 * Quick (CI) runs the same path at 20k documents; a full run (1M) took 26 minutes here, most of it the hnsw
 * graph build (13 min) and the IVF build (6 min).
 * @module
 */
import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import pg from "pg";
import { generateCorpus } from "../../examples/corpus.ts";
import faissEngine, { faissNodeInstalled } from "../../plugins/index/faiss.ts";
import hnswEngine from "../../plugins/index/hnsw.ts";
import { queryProbe } from "../../plugins/index/_recall.ts";
import { loadOrFail } from "../../runtime/commands/common.ts";
import { silentLogger } from "../../runtime/log.ts";
import { migrate } from "../../runtime/migrate.ts";
import { followRun } from "../../runtime/progress.ts";
import { createRun } from "../../runtime/runs.ts";
import type { Manifest } from "../../runtime/versions.ts";
import { mintToken, type AuthConfig } from "../../server/auth.ts";
import {
  benchFile, buildWait, createBenchDatabase, NO_SCHEDULES, num, ROOT, spawnNode, spawnTs, stopChild, tempDir, waitMessage, writePipeline,
  type BenchContext, type Ratio, type SuiteOutput, type Table,
} from "../lib.ts";
import { hashEmbed } from "../fixtures/hash-embedder.ts";
import { memorySampler } from "./load.ts";
import { allProcessesReady, freePort } from "./serve.ts";
import { loadTest, type LoadStats } from "./serve-load.ts";

const DIMS = 384;
const CONNS = 10;
/** Queries from outside the corpus the served version's recall is measured with. */
const HELD_OUT = 200;
/** Example questions stored before the first build (`apfa index queries`), as many as a build reads. */
const EXAMPLES = 500;

/** Whether the optional faiss-node addon is here (scripts/build-faiss-node.sh; .ci/run builds it). */
const faissInstalled = faissNodeInstalled();

interface Built {
  engine: string;
  runId: string;
  manifest: Manifest;
  /** Seconds: the whole run, and its phases (apfa.runs timestamps). */
  wall: number; enumerate: number; embed: number; wait: number; build: number;
  embedded: number; reused: number;
  stats: Record<string, number>;
}

interface Served extends LoadStats {
  engine: string;
  processes: number;
  rssMiB: number;
  pssMiB: number;
  startS: number;
}

/**
 * Recall@10 of a served approximate version for queries from outside the corpus: `HELD_OUT` questions shaped like
 * the load's (other documents' opening words), embedded as the server embeds them, searched as the server opens
 * the version (with the check's expansion_search or nprobe), against exact top-10 over the version's own vectors.
 * The manifest's figure is measured on corpus rows (held out of an hnsw graph while it is measured; leave-one-out
 * for faiss) and, once servers have logged some, real queries (docs/index-engines.md).
 */
async function heldOutRecall(versionDir: string, m: Manifest, indexOptions: Record<string, unknown>): Promise<number> {
  const where = m.reuse?.vectors;
  if (!where) throw new Error(`[apfa] [bench:million] version ${m.version} says nowhere where its vectors are`);
  const base = new Float32Array(m.count * m.dims);
  const fh = await fs.promises.open(path.join(versionDir, where.file), "r");
  try {
    const bytes = new Uint8Array(base.buffer);
    for (let at = 0; at < bytes.length;) {
      const { bytesRead } = await fh.read(bytes, at, Math.min(1 << 30, bytes.length - at), where.offset + at);
      if (!bytesRead) throw new Error(`[apfa] [bench:million] ${where.file} ends before its vectors do`);
      at += bytesRead;
    }
  } finally {
    await fh.close();
  }
  const texts = generateCorpus({ count: HELD_OUT, seed: 23 }).map((d) => d.text.slice(0, 90));
  const queries = new Float32Array(HELD_OUT * m.dims);
  texts.forEach((t, i) => hashEmbed(t, m.dims, queries.subarray(i * m.dims, (i + 1) * m.dims)));
  // The recall check's own scoring for outside queries: a returned row whose true score ties the 10th counts.
  const probe = queryProbe(base, m.dims, 10, queries);
  const pctx = { baseDir: "/", log: silentLogger, env: {} };
  const engine = m.engine === "faiss"
    ? await faissEngine.create(faissEngine.options.parse(indexOptions), pctx)
    : await hnswEngine.create(hnswEngine.options.parse(indexOptions), pctx);
  const s = await engine.open(versionDir, { dims: m.dims, count: m.count });
  try {
    const answers: number[][] = [];
    for (let i = 0; i < HELD_OUT; i++) answers.push((await s.search(queries.subarray(i * m.dims, (i + 1) * m.dims), 10)).rows);
    return probe.score(answers);
  } finally {
    await s.close();
  }
}

/** Writes the corpus as jsonl in chunks (1M documents are ~670 MB of text). */
function writeCorpus(file: string, n: number): void {
  const fd = fs.openSync(file, "w");
  try {
    let lines: string[] = [];
    for (const d of generateCorpus({ count: n })) {
      lines.push(JSON.stringify(d));
      if (lines.length === 10_000) (fs.writeSync(fd, lines.join("\n") + "\n"), (lines = []));
    }
    if (lines.length) fs.writeSync(fd, lines.join("\n") + "\n");
  } finally {
    fs.closeSync(fd);
  }
}

export async function millionSuite(ctx: BenchContext): Promise<SuiteOutput> {
  const n = ctx.quick ? 20_000 : 1_000_000;
  const durationS = ctx.quick ? 5 : 20;
  const label = n >= 1e6 ? `${n / 1e6}M` : `${n / 1e3}k`;
  const db = await createBenchDatabase();
  const dir = tempDir("million");
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  pool.on("error", () => {}); // sessions end when the database is dropped
  pool.on("connect", (client) => client.on("error", () => {}));
  const secret = crypto.randomBytes(24).toString("hex");
  // At 1M, ~4·√n lists rounded down to FAISS's usual 1024 (the ann suite's IVF setting); fewer for the quick form.
  // hnsw: published whatever its recall check measures (`accept`, recorded in the manifest), so the suite serves
  // the graph and sets the manifest's figure beside outside queries'; one graph (`max_connectivity` 16), since on
  // this corpus each doubling is another 1M build of 10+ minutes here.
  const indexOptions: Record<string, Record<string, unknown>> = {
    hnsw: { max_connectivity: 16, on_recall_miss: "accept" },
    flat: {},
    faiss: { factory: n >= 1e6 ? "IVF1024,Flat" : "IVF128,Flat" },
  };
  const yaml = (engine: string, port = 0) => writePipeline(dir, {
    name: "million",
    database: { url: db.url },
    store: { plugin: "fs", options: { dir: path.join(dir, "store") } },
    queues: { embedding: 2, indexing: 1, maintenance: 1 },
    stages: {
      source: { plugin: "jsonl", options: { path: path.join(dir, "corpus.jsonl") } },
      embedder: { plugin: benchFile("fixtures/hash-embedder.ts"), options: { dims: DIMS } },
      index: { plugin: engine, options: indexOptions[engine] },
      notifier: { plugin: "postgres", options: { url: db.url } },
      generator: { plugin: "template" },
    },
    batch_size: 5000,
    run: { timeout: "3h" },
    schedules: NO_SCHEDULES,
    server: { host: "127.0.0.1", port, auth: { jwt_secret: secret }, cache_dir: path.join(dir, "cache"), retrieval: { mode: "vector" } },
  }, `${engine}${port ? "-serve" : ""}.yaml`);
  try {
    await migrate(pool, silentLogger);
    ctx.log(`writing a ${label}-document corpus`);
    writeCorpus(path.join(dir, "corpus.jsonl"), n);
    const token = await mintToken({ jwt_secret: secret } as AuthConfig, { sub: "bench", ttl_s: 86_400 });

    /** One run with `engine` on a worker process of its own (the engine is the worker's pipeline's). */
    const run = async (engine: string): Promise<Built> => {
      const file = yaml(engine);
      // The source through tsx, as the incremental suite does: the worker is not part of the compiled dist/.
      const worker = spawnTs(path.join(ROOT, "bench/child/worker.ts"), [file], { log: ctx.logFile });
      try {
        await waitMessage(worker, (m) => (m && typeof m === "object" && "ready" in m ? true : undefined));
        const runId = await createRun(pool, await loadOrFail(file), "bench");
        ctx.log(`run ${runId} (${engine})`);
        let lastLog = 0;
        const r = await followRun(pool, runId, {
          tty: false, intervalMs: 500,
          write: (s) => {
            if (performance.now() - lastLog < 30_000) return;
            lastLog = performance.now();
            ctx.log(s.trim());
          },
        });
        if (r.status !== "succeeded") throw new Error(`[apfa] [bench:million] run ${runId} (${engine}) ${r.status}: ${r.error}`);
        const t = (await pool.query<{ wall: number; enumerate: number; embed: number; build: number }>(
          `select extract(epoch from finished_at - created_at)::float8 as wall, extract(epoch from enumerated_at - started_at)::float8 as enumerate,
                  extract(epoch from embedded_at - enumerated_at)::float8 as embed, extract(epoch from finished_at - embedded_at)::float8 as build
             from apfa.runs where id = $1`,
          [runId],
        )).rows[0];
        const wait = await buildWait(pool, runId);
        const store = path.join(dir, "store", "indexes");
        const version = (JSON.parse(fs.readFileSync(path.join(store, "latest"), "utf8")) as { version: string }).version;
        const manifest = JSON.parse(fs.readFileSync(path.join(store, version, "manifest.json"), "utf8")) as Manifest;
        return { engine, runId, manifest, ...t, wait, build: t.build - wait, embedded: Number(r.docs_embedded), reused: Number(r.docs_reused), stats: (r.stats ?? {}) as Record<string, number> };
      } finally {
        await stopChild(worker);
      }
    };

    /** `apfa serve --processes N` on the latest version; /search at CONNS connections; memory of its process tree. */
    const serve = async (engine: string, version: string, processes: number): Promise<Served> => {
      const port = await freePort();
      const base = `http://127.0.0.1:${port}`;
      const t0 = performance.now();
      const child = spawnNode(["bin/apfa.mjs", "serve", "-c", yaml(engine, port), "--port", String(port), "--processes", String(processes), "--no-sync-build"], { log: ctx.logFile, env: { APFA_LOG_LEVEL: "info" } });
      try {
        await allProcessesReady(base, processes, t0, 1_200_000);
        const startS = (performance.now() - t0) / 1000;
        const ready = (await (await fetch(`${base}/ready`)).json()) as { version?: string };
        if (ready.version !== version) throw new Error(`[apfa] [bench:million] the server serves ${ready.version}, not the run's ${version}`);
        const headers = { authorization: `Bearer ${token}` };
        ctx.log(`${engine}, ${processes} process${processes > 1 ? "es" : ""}: warm-up, then /search at ${CONNS} connections for ${durationS} s`);
        await loadTest(base, "/search", CONNS, Math.max(2, durationS / 4), headers);
        const use = memorySampler(child.pid);
        const r = await loadTest(base, "/search", CONNS, durationS, headers);
        const m = use.stop();
        return { engine, processes, ...r, rssMiB: m.rssMiB, pssMiB: m.pssMiB, startS };
      } finally {
        await stopChild(child, 60_000);
      }
    };

    // Example questions for the first build's recall check, stored as a user would (`apfa index queries`), so the
    // hnsw check measures on questions as well as corpus rows: the held-out rows alone said 0.998 where these
    // questions get ~0.64 (docs/index-engines.md). Another seed than the questions measured below.
    const examples = path.join(dir, "example-questions.txt");
    fs.writeFileSync(examples, generateCorpus({ count: EXAMPLES, seed: 29 }).map((d) => d.text.slice(0, 90).replace(/\s+/g, " ")).join("\n") + "\n");
    const seeded = spawnSync(process.execPath, ["bin/apfa.mjs", "index", "queries", examples, "-c", yaml("hnsw"), "--json"], { cwd: ROOT, encoding: "utf8", env: { ...process.env, APFA_LOG_LEVEL: "warn" } });
    if (seeded.status !== 0) throw new Error(`[apfa] [bench:million] apfa index queries exited ${seeded.status}: ${seeded.stderr.trim()}`);
    ctx.log(`example questions stored: ${seeded.stdout.trim()}`);
    const hnsw = await run("hnsw");
    ctx.log(`outside queries' recall of the hnsw version (${HELD_OUT} queries, exact top-10 truth)`);
    const heldOut = await heldOutRecall(path.join(dir, "store", "indexes", hnsw.manifest.version), hnsw.manifest, indexOptions.hnsw);
    const served: Served[] = [];
    for (const processes of [1, 2]) served.push(await serve("hnsw", hnsw.manifest.version, processes));
    const flat = await run("flat");
    served.push(await serve("flat", flat.manifest.version, 1));
    // An IVF index through the faiss engine, built after the servers above have logged real queries, so its recall
    // check measures on those as well as on corpus rows (the hnsw build came before any were logged).
    let faiss: Built | undefined;
    let faissHeldOut = NaN;
    if (faissInstalled) {
      faiss = await run("faiss");
      if (faiss.manifest.engine === "faiss") {
        ctx.log(`outside queries' recall of the faiss version (${HELD_OUT} queries, exact top-10 truth)`);
        faissHeldOut = await heldOutRecall(path.join(dir, "store", "indexes", faiss.manifest.version), faiss.manifest, indexOptions.faiss);
      }
      // Both process counts: the IVF lists are memory-mapped (the engine's `mmap`), so two processes share them.
      for (const processes of [1, 2]) served.push(await serve("faiss", faiss.manifest.version, processes));
    } else {
      ctx.log("faiss-node is not installed (scripts/build-faiss-node.sh): no faiss run");
    }

    const mib = (b: number) => b / 2 ** 20;
    const main = (b: Built) => b.manifest.files[b.manifest.main].bytes;
    const builds: Table = {
      title: `Runs: ${n.toLocaleString("en-US")} corpus documents, bench-hash ${DIMS}-d, batch_size 5000, embedding concurrency 2, one worker process`,
      columns: ["engine", "index_build", "embedded", "reused", "wall s", "enumerate s", "embed s", "build_index s", "engine ms", "lexical ms", "index file MiB", "docs.jsonl MiB", "recall@10 (target)", "check", "params", `outside queries' recall@10 (${HELD_OUT})`],
      rows: [hnsw, flat, ...(faiss ? [faiss] : [])].map((b) => {
        const rc = b.manifest.recall;
        return [b.engine === b.manifest.engine ? b.engine : `${b.engine} → ${b.manifest.engine}`, b.manifest.index_build ?? "full", b.embedded, b.reused, num(b.wall, 1), num(b.enumerate, 1), num(b.embed, 1), num(b.build, 1),
          num(b.stats.build_engine_ms ?? NaN, 0), num(b.stats.build_lexical_ms ?? NaN, 0), num(mib(main(b)), 0), num(mib(b.manifest.files["docs.jsonl"].bytes), 0),
          rc ? `${rc.measured.toFixed(3)} (${rc.target})` : "exact", rc ? `${rc.method}, ${rc.sample} rows${rc.queries ? ` + ${rc.queries.sample} logged queries (${rc.corpus!.measured.toFixed(3)} / ${rc.queries.measured.toFixed(3)})` : ""}${rc.met ? ", met" : rc.fallback ? `, missed: ${rc.fallback} fallback` : ", missed"}` : "–",
          rc ? Object.entries(rc.params).map(([k, v]) => `${k} ${v}`).join(", ") : "–", b === hnsw ? num(heldOut, 3) : b === faiss && b.manifest.engine === "faiss" ? num(faissHeldOut, 3) : "1 (exact)"];
      }),
      note: `outside queries = questions from outside the corpus (other documents' first 90 characters, as the load sends), embedded as the server does, searched as the server opens the version, against exact top-10 over the version's vectors; a hit whose true score ties the 10th counts; the hnsw run comes after ${EXAMPLES} example questions (other documents' opening words, not the ${HELD_OUT} measured) were stored with apfa index queries, so its check measures on them as well as held-out corpus rows; wall = apfa.runs created_at → finished_at; the flat run re-reads and hashes the corpus, reuses every vector of the hnsw version (its embedder and texts are unchanged) and builds the exact index from them; the faiss run (IVF, when faiss-node is installed) comes after the servers above have logged query vectors (5 % of them), so its recall check measures on those too, corpus / logged figures in brackets; engine ms includes the recall check and any rebuild it asked for`,
    };
    const serveTable: Table = {
      title: `Serving the ${label} version: /search at ${CONNS} connections, ${durationS} s, unique queries (no cache hits)`,
      columns: ["engine", "processes", "start → all ready s", "req/s", "p50 ms", "p95 ms", "p99 ms", "non-2xx and errors", "peak RSS MiB (sum)", "peak PSS MiB (sum)"],
      rows: served.map((s) => [s.engine, s.processes, num(s.startS, 1), num(s.rps, 0), num(s.p50, 1), num(s.p95, 1), num(s.p99, 1), s.errors, num(s.rssMiB, 0), num(s.pssMiB, 0)]),
      note: "apfa serve with its defaults (admission gate 64 active, 0.5 s wait; flat scans in one search worker per process); with 2 processes a supervisor that serves nothing is in the sums; PSS splits the pages processes share (the memory-mapped hnsw file, the faiss version's memory-mapped inverted lists) among them, so its sum is what the server holds; docs.jsonl is read through the page cache, which neither figure counts",
    };
    const ratios: Ratio[] = [];
    const rc = hnsw.manifest.recall;
    if (rc) ratios.push({ id: `million/${label}/measured_recall`, label: `${label}: the hnsw version's measured recall@10 (its manifest)`, value: rc.measured, better: "higher", goal: 0.95 });
    ratios.push({ id: `million/${label}/held_out_recall`, label: `${label}: the hnsw version's recall@10 on ${HELD_OUT} queries from outside the corpus`, value: heldOut, better: "higher", goal: 0.95 });
    const [h1, h2, f1] = served;
    ratios.push({ id: `million/${label}/search_p95_vs_exact`, label: `${label}: /search p95 at ${CONNS} connections, hnsw ÷ flat`, value: h1.p95 / f1.p95, better: "lower", goal: 0.1 });
    const both = Number.isFinite(h1.pssMiB) && Number.isFinite(h2.pssMiB);
    ratios.push({ id: `million/${label}/memory_2_vs_1_process`, label: `${label}: peak ${both ? "PSS" : "RSS"} of 2 server processes ÷ 1 (hnsw)`, value: both ? h2.pssMiB / h1.pssMiB : h2.rssMiB / h1.rssMiB, better: "lower", goal: 1.3 });
    const notes = [
      `hnsw version ${hnsw.manifest.version.slice(0, 12)}: ${n.toLocaleString("en-US")} vectors, ${rc ? `recall@${rc.k} ${rc.measured.toFixed(3)} measured on ${rc.sample} rows against exact search (${rc.met ? "met" : "missed"} target ${rc.target}; tried ${rc.tried.map((x) => `${Object.entries(x.params).map(([k, v]) => `${k} ${v}`).join("/")}: ${x.recall.toFixed(3)}`).join(", ")})` : "no recall check"}.`,
    ];
    if (faiss) {
      const fr = faiss.manifest.recall;
      const f = served.find((x) => x.engine === "faiss" && x.processes === 1)!;
      const f2 = served.find((x) => x.engine === "faiss" && x.processes === 2)!;
      if (fr) ratios.push({ id: `million/${label}/faiss_measured_recall`, label: `${label}: the faiss (IVF) version's measured recall@10 (its manifest)`, value: fr.measured, better: "higher", goal: 0.95 });
      if (Number.isFinite(faissHeldOut)) ratios.push({ id: `million/${label}/faiss_held_out_recall`, label: `${label}: the faiss (IVF) version's recall@10 on ${HELD_OUT} queries from outside the corpus`, value: faissHeldOut, better: "higher", goal: 0.95 });
      ratios.push({ id: `million/${label}/faiss_search_p95_vs_exact`, label: `${label}: /search p95 at ${CONNS} connections, faiss (IVF) ÷ flat`, value: f.p95 / f1.p95, better: "lower", goal: 0.1 });
      const fBoth = Number.isFinite(f.pssMiB) && Number.isFinite(f2.pssMiB);
      ratios.push({ id: `million/${label}/faiss_memory_2_vs_1_process`, label: `${label}: peak ${fBoth ? "PSS" : "RSS"} of 2 server processes ÷ 1 (faiss IVF)`, value: fBoth ? f2.pssMiB / f.pssMiB : f2.rssMiB / f.rssMiB, better: "lower", goal: 1.3 });
      if (fr) {
        notes.push(`faiss version ${faiss.manifest.version.slice(0, 12)} (served as ${faiss.manifest.engine}): recall@${fr.k} ${fr.measured.toFixed(3)} (${fr.met ? "met" : "missed"} target ${fr.target}; tried ${fr.tried.map((x) => `${Object.entries(x.params).map(([k, v]) => `${k} ${v}`).join("/") || "as built"}: ${x.recall.toFixed(3)}${x.corpus !== undefined ? ` (corpus ${x.corpus.toFixed(3)}, logged ${x.queries!.toFixed(3)})` : ""}`).join(", ")}).`);
      }
    }
    return { tables: [builds, serveTable], ratios, charts: [], notes };
  } finally {
    await pool.end().catch(() => {});
    await db.drop().catch((err) => ctx.log(`dropping ${db.name} failed: ${(err as Error).message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
