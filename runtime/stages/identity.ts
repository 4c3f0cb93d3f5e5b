/**
 * Identities that decide what a run may reuse. The embedder key is the plugin name plus the part of its
 * options that changes the vectors (`PluginDefinition.identity`, else every option), hashed: stored vectors are
 * reused only under the same key, so editing the model or `max_chars` in pipeline.yaml re-embeds everything by
 * itself. The engine key does the same for the index stage (an unchanged corpus under the same engine keeps its
 * version as it is). Neither loads a model.
 * @module
 */
import * as crypto from "node:crypto";
import type { PipelineConfig } from "../config/schema.ts";
import type { PluginKind } from "../contracts.ts";
import { stageError } from "../errors.ts";
import { loadPlugin } from "../plugins.ts";

/** JSON with object keys sorted at every level, so equal values always give equal text. */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v).sort().filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(v ?? null);
}

/** SHA-256 of bytes or text, base64url (43 characters). */
export function digest(data: string | Uint8Array): string {
  return crypto.createHash("sha256").update(data).digest("base64url");
}

async function stageKey(kind: PluginKind, ref: { plugin: string; options: Record<string, unknown> }, baseDir: string): Promise<string> {
  try {
    const def = await loadPlugin(kind, ref.plugin, baseDir);
    const opts = def.options.parse(ref.options ?? {});
    const identity = def.identity ? def.identity(opts) : opts;
    return digest(stableJson({ plugin: ref.plugin, identity }));
  } catch (err) {
    throw stageError(kind, ref.plugin, err);
  }
}

/** The identity of the vectors this pipeline's embedder produces. */
export function embedderKey(config: PipelineConfig): Promise<string> {
  return stageKey("embedder", config.stages.embedder, config.baseDir);
}

/** The identity of the source settings (a cursor from one query means nothing to another). */
export function sourceKey(config: PipelineConfig): Promise<string> {
  return stageKey("source", config.stages.source, config.baseDir);
}

/** The identity of the index this pipeline's engine builds from given vectors. */
export function engineKey(config: PipelineConfig): Promise<string> {
  return stageKey("index", config.stages.index, config.baseDir);
}
