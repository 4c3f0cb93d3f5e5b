/**
 * `apfa index list` and `apfa index rollback <version>` (the work is in runtime/index-versions.ts, which the
 * dashboard's `/api` shares).
 * @module
 */
import { listVersions, rollbackVersion, RollbackError } from "../index-versions.ts";
import { openPipeline } from "../pipeline.ts";
import type { Manifest } from "../versions.ts";
import { cliLogger, loadOrFail, type Command } from "./common.ts";

/** `recall 0.981 ≥ 0.95 ef 128`, `exact (hnsw 0.62 < 0.95)`, `exact` for flat, `recall unmeasured` otherwise. */
export function recallText(r: Manifest["recall"] | null | undefined, engine: string): string {
  if (!r) return engine === "flat" ? "exact" : "recall unmeasured";
  if (r.fallback) return `exact (${r.engine} ${r.measured.toFixed(2)} < ${r.target})`;
  const params = Object.entries(r.params).map(([k, v]) => `${k === "expansion_search" ? "ef" : k} ${v}`).join(" ");
  return `recall ${r.measured.toFixed(3)} ${r.met ? "≥" : "<"} ${r.target}${params ? ` ${params}` : ""}`;
}

const when = (d: Date | null) => (d ? d.toISOString().replace(/\.\d+Z$/, "Z") : "-");

export const indexCmd: Command = {
  summary: "List index versions, or roll back: re-publish an existing version so every server hot-swaps to it.",
  usage: [
    "apfa index list [--json]",
    "apfa index rollback <version> [--json]   version: the 64-hex id from `apfa index list`",
    "Rollback refuses (exit 1) versions unknown to the database, deleted by cleanup, or with files missing from the store.",
  ].join("\n"),
  options: { json: { type: "boolean" } },
  async run({ values, positionals }) {
    const [sub, arg, ...extra] = positionals;
    const ok = (sub === "list" && arg === undefined) || (sub === "rollback" && arg !== undefined && !extra.length);
    if (!ok) {
      console.error(`apfa index: expected \`list\` or \`rollback <version>\`${sub ? ` (got ${positionals.join(" ")})` : ""}\n\n${indexCmd.usage}`);
      return 2;
    }
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
