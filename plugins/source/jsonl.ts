/**
 * `jsonl` source: one JSON object per line, from a local file or an object in the configured store.
 * A line that is not a JSON object is reported as malformed with `file:line`, and reading goes on.
 * @module
 */
import { createReadStream } from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { definePlugin, type Source, type SourceItem, type SourceRecord } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { lines } from "../../runtime/streams.ts";

export const NAME = "jsonl";

export interface JsonlOptions {
  /** Local file, relative to pipeline.yaml. Exactly one of `path` or `key`. */
  path?: string;
  /** Object key in the configured store. */
  key?: string;
  /** Field holding the document id. @default "id" */
  id_field: string;
  /** Field holding the text to embed. @default "text" */
  text_field: string;
}

export const fileSourceOptions = z
  .strictObject({
    path: z.string().min(1).optional().describe("Local file, relative to pipeline.yaml"),
    key: z.string().min(1).optional().describe("Object key in the configured store"),
    id_field: z.string().min(1).default("id"),
    text_field: z.string().min(1).default("text"),
  })
  .refine((o) => (o.path === undefined) !== (o.key === undefined), {
    message: "set exactly one of `path` (local file) or `key` (object in the store)",
  });

/** Opens the file a file-based source reads, locally or from the store. */
export async function openInput(
  opts: { path?: string; key?: string },
  ctx: { baseDir: string; store?: import("../../runtime/contracts.ts").Store },
): Promise<{ name: string; stream: AsyncIterable<Uint8Array> }> {
  if (opts.path !== undefined) {
    const file = path.resolve(ctx.baseDir, opts.path);
    const stream = createReadStream(file);
    await new Promise<void>((resolve, reject) => {
      stream.once("open", () => resolve());
      stream.once("error", (err) =>
        reject(new ApfaError("not_found", `cannot read ${opts.path}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err })));
    });
    return { name: opts.path, stream: stream as AsyncIterable<Uint8Array> };
  }
  if (!ctx.store) throw new ApfaError("config", "source option `key` needs a configured store");
  return { name: opts.key!, stream: await ctx.store.getStream(opts.key!) };
}

/** Maps a parsed object to a record using the configured field names; other fields become metadata. */
export function toRecord(obj: Record<string, unknown>, idField: string, textField: string, location: string): SourceRecord {
  const { [idField]: id, [textField]: text, metadata, ...rest } = obj;
  const meta = metadata && typeof metadata === "object" && !Array.isArray(metadata)
    ? { ...rest, ...(metadata as Record<string, unknown>) }
    : metadata === undefined ? rest : { ...rest, metadata };
  return { id, text, metadata: meta, location };
}

export default definePlugin({
  kind: "source",
  name: NAME,
  description: "JSON Lines file (local path or store key)",
  options: fileSourceOptions,
  create(opts: JsonlOptions, ctx): Source {
    return {
      async *pages({ pageSize, signal }) {
        const { name, stream } = await openInput(opts, ctx);
        let page: SourceItem[] = [];
        for await (const { line, n } of lines(stream)) {
          if (signal?.aborted) break;
          if (line.trim() === "") continue;
          const location = `${name}:${n}`;
          let obj: unknown;
          try {
            obj = JSON.parse(line);
          } catch (err) {
            page.push({ malformed: `invalid JSON: ${(err as Error).message}`, location });
            obj = undefined;
          }
          if (obj !== undefined) {
            if (obj && typeof obj === "object" && !Array.isArray(obj)) {
              page.push(toRecord(obj as Record<string, unknown>, opts.id_field, opts.text_field, location));
            } else {
              page.push({ malformed: `expected a JSON object, got ${obj === null ? "null" : Array.isArray(obj) ? "array" : typeof obj}`, location });
            }
          }
          if (page.length >= pageSize) {
            yield page;
            page = [];
          }
        }
        if (page.length) yield page;
      },
    };
  },
});
