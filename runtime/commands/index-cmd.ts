/**
 * `apfa index list`, `apfa index rollback <version>` (the work is in runtime/index-versions.ts, which the
 * dashboard's `/api` shares) and `apfa index queries <file>`, which seeds the build's recall check with example
 * questions before servers have logged any (runtime/query-samples.ts).
 * @module
 */
import * as fsp from "node:fs/promises";
import { listVersions, rollbackVersion, RollbackError } from "../index-versions.ts";
import { openPipeline } from "../pipeline.ts";
import { storeQuerySamples } from "../query-samples.ts";
import { embedderKey } from "../stages/identity.ts";
import type { Manifest } from "../versions.ts";
import { cliLogger, loadOrFail, type Command } from "./common.ts";

/** `recall 0.981 ≥ 0.95 ef 128`, `exact (hnsw 0.62 < 0.95)`, `exact` for flat, `recall unmeasured` otherwise. */
export function recallText(r: Manifest["recall"] | null | undefined, engine: string): string {
  if (!r) return engine === "flat" ? "exact" : "recall unmeasured";
  if (r.fallback) return `exact (${r.engine} ${r.measured.toFixed(2)} < ${r.target})`;
  const params = Object.entries(r.params).map(([k, v]) => `${k === "expansion_search" ? "ef" : k} ${v}`).join(" ");
  return `recall ${r.measured.toFixed(3)} ${r.met ? "≥" : "<"} ${r.target}${params ? ` ${params}` : ""}`;
}

/**
 * The questions in a file of example queries: a `.jsonl` file holds one JSON object with a string `text` per
 * line; any other file one question per line, `#` starting a comment line. Blank lines are skipped. Throws an
 * Error naming the file and line of the first bad one.
 */
export function parseQuestions(file: string, content: string): string[] {
  const jsonl = /\.jsonl$/i.test(file);
  const out: string[] = [];
  content.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || (!jsonl && line.startsWith("#"))) return;
    if (!jsonl) return void out.push(line);
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (err) {
      throw new Error(`${file}:${i + 1}: not JSON (${(err as Error).message})`);
    }
    const text = v && typeof v === "object" && !Array.isArray(v) ? (v as { text?: unknown }).text : undefined;
    if (typeof text !== "string" || !text.trim()) throw new Error(`${file}:${i + 1}: expected an object with a non-empty string "text"`);
    out.push(text.trim());
  });
  if (!out.length) throw new Error(`${file} holds no questions (one per line, or {"text": ...} per line in a .jsonl file)`);
  return out;
}

/** Questions embedded per call of the embedder. */
const EMBED_BATCH = 64;

const when = (d: Date | null) => (d ? d.toISOString().replace(/\.\d+Z$/, "Z") : "-");

export const indexCmd: Command = {
  summary: "List index versions, roll back (re-publish an existing version so every server hot-swaps to it), or seed the recall check with example questions.",
  usage: [
    "apfa index list [--json]",
    "apfa index rollback <version> [--json]   version: the 64-hex id from `apfa index list`",
    "apfa index queries <file> [--json]       example questions, one per line (or {\"text\": ...} per line in a .jsonl file)",
    "Rollback refuses (exit 1) versions unknown to the database, deleted by cleanup, or with files missing from the store.",
    "Queries embeds the questions with the pipeline's embedder and stores their vectors (never the text) as query samples,",
    "as servers do for the questions they answer: the next build's recall check measures on them besides corpus rows.",
  ].join("\n"),
  options: { json: { type: "boolean" } },
  async run({ values, positionals }) {
    const [sub, arg, ...extra] = positionals;
    const ok = (sub === "list" && arg === undefined) || ((sub === "rollback" || sub === "queries") && arg !== undefined && !extra.length);
    if (!ok) {
      console.error(`apfa index: expected \`list\`, \`rollback <version>\` or \`queries <file>\`${sub ? ` (got ${positionals.join(" ")})` : ""}\n\n${indexCmd.usage}`);
      return 2;
    }
    if (sub === "queries") return seedQueries(values.config as string, arg, !!values.json);
    if (sub === "rollback" && !/^[0-9a-f]{64}$/.test(arg)) {
      console.error(`apfa index rollback: "${arg.slice(0, 80)}" is not an index version (64 lowercase hex characters); \`apfa index list\` shows them`);
      return 2;
    }
    const config = await loadOrFail(values.config as string);
    const p = await openPipeline(config, cliLogger({ cmd: "index" }));
    try {
      if (sub === "list") {
        const { current, versions } = await listVersions(p.db.pool, p.store, config.name);
        if (values.json) console.log(JSON.stringify({ current, versions }, null, 2));
        else if (!versions.length) console.log(`no index versions of pipeline "${config.name}" yet; build one with apfa run`);
        else {
          for (const v of versions) {
            const mark = v.current ? "*" : v.deleted_at ? "x" : " ";
            console.log(`${mark} ${v.version}  ${String(v.count).padStart(8)} docs  ${v.dims}d  ${v.engine.padEnd(6)} ${recallText(v.recall, v.engine).padEnd(24)} created ${when(v.created_at)}  published ${when(v.published_at)}${v.deleted_at ? "  (deleted)" : ""}`);
          }
          console.log(`\n* current (indexes/latest)${versions.some((v) => v.deleted_at) ? "   x deleted" : ""}${current && !versions.some((v) => v.current) ? `\nlatest points at ${current}, which is not in apfa.index_versions` : ""}`);
        }
        return 0;
      }
      try {
        const r = await rollbackVersion(p, arg);
        if (values.json) console.log(JSON.stringify(r));
        else console.log(r.previous === r.version ? `${r.version} was already current; re-published it` : `rolled back: latest is now ${r.version} (was ${r.previous ?? "none"}); servers swap on the event or their next check`);
        return 0;
      } catch (err) {
        if (!(err instanceof RollbackError)) throw err;
        if (values.json) console.log(JSON.stringify({ error: err.reason, message: err.message }));
        console.error(`apfa index rollback: refused: ${err.message.replace(/^\[apfa\] \[rollback\] /, "")}`);
        return 1;
      }
    } finally {
      await p.close();
    }
  },
};

/** `apfa index queries <file>`: embeds the file's questions and stores their vectors as query samples. */
async function seedQueries(configFile: string, file: string, json: boolean): Promise<number> {
  let questions: string[];
  try {
    questions = parseQuestions(file, await fsp.readFile(file, "utf8"));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    console.error(`apfa index queries: ${e.code ? `cannot read ${file}: ${e.code}` : e.message}`);
    return 2;
  }
  const config = await loadOrFail(configFile);
  const qs = config.server.query_samples;
  const p = await openPipeline(config, cliLogger({ cmd: "index" }));
  try {
    const embedder = await p.embedder();
    const vectors: Float32Array[] = [];
    for (let i = 0; i < questions.length; i += EMBED_BATCH) {
      const batch = questions.slice(i, i + EMBED_BATCH);
      const m = await embedder.embed(batch);
      for (let j = 0; j < batch.length; j++) vectors.push(m.slice(j * embedder.dims, (j + 1) * embedder.dims));
    }
    const modelKey = await embedderKey(config);
    const stored = await storeQuerySamples(p.db.pool, modelKey, embedder.dims, vectors, qs.keep);
    const used = Math.min(stored, qs.build_sample);
    if (json) console.log(JSON.stringify({ questions: questions.length, stored, model_key: modelKey, dims: embedder.dims, build_sample: qs.build_sample }));
    else {
      console.log(`stored ${stored} question vector${stored === 1 ? "" : "s"} for embedder ${modelKey.slice(0, 12)}… (${embedder.dims}-d)` +
        `${stored < questions.length ? `: the newest ${qs.keep} of ${questions.length} (server.query_samples.keep)` : ""}`);
      console.log(qs.build_sample > 0
        ? `the next build's recall check measures on this embedder's newest ${qs.build_sample} query samples (server.query_samples.build_sample), ${used} of them these, besides corpus rows`
        : "server.query_samples.build_sample is 0, so builds do not read them; raise it for the recall check to measure on them");
    }
    return 0;
  } finally {
    await p.close();
  }
}
