/**
 * `txt-dir` source, a worked example of a user plugin (docs/plugins.md): every `.txt` file under a directory
 * is one document. The id is the file's path relative to `dir` without the extension (`loans/refinance`), the
 * text is its contents, and `metadata` holds the file name and size. Files are read in sorted path order, so
 * two reads give the same pages. A file that is not valid UTF-8 is reported as malformed (`notes/x.txt`) and
 * reading goes on; an empty file is passed on and the runtime skips it as `empty_text`.
 *
 * Load it from pipeline.yaml by path, relative to that file:
 *
 * ```yaml
 * stages:
 *   source:
 *     plugin: ./txt-dir-source.ts
 *     options: { dir: notes }
 * ```
 * @module
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { ApfaError, definePlugin, z, type Source, type SourceItem } from "apfa";

export const NAME = "txt-dir";

export interface TxtDirOptions {
  /** Directory to read, relative to pipeline.yaml. */
  dir: string;
  /** File name endings that count as documents. @default [".txt"] */
  extensions: string[];
  /** Descend into subdirectories. @default true */
  recursive: boolean;
  /** Larger files are reported as malformed instead of read. @default 1048576 */
  max_bytes: number;
}

const options = z.strictObject({
  dir: z.string().min(1).describe("Directory to read, relative to pipeline.yaml"),
  extensions: z.array(z.string().regex(/^\.\w+$/, "an extension like .txt")).min(1).default([".txt"]).describe("File name endings that count as documents"),
  recursive: z.boolean().default(true).describe("Descend into subdirectories"),
  max_bytes: z.int().min(1).default(1_048_576).describe("Larger files are reported as malformed"),
});

/** Relative paths (with `/`) of the matching files under `root`, sorted. */
async function listFiles(root: string, opts: TxtDirOptions, rel = ""): Promise<string[]> {
  let entries;
  try {
    entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ApfaError("not_found", `cannot read directory ${path.join(root, rel)}: ${code}; check the source option \`dir\``, { cause: err, where: `stage:source:${NAME}` });
  }
  const out: string[] = [];
  for (const e of entries) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory() && opts.recursive) out.push(...(await listFiles(root, opts, p)));
    else if (e.isFile() && opts.extensions.some((x) => e.name.endsWith(x))) out.push(p);
  }
  return out.sort();
}

export default definePlugin({
  kind: "source",
  name: NAME,
  description: "One document per .txt file under a directory (id = relative path without extension)",
  options,
  create(opts: TxtDirOptions, ctx): Source {
    const root = path.resolve(ctx.baseDir, opts.dir);
    const decoder = new TextDecoder("utf-8", { fatal: true });
    return {
      async count() {
        return (await listFiles(root, opts)).length;
      },
      async *pages({ pageSize, signal }) {
        let page: SourceItem[] = [];
        for (const rel of await listFiles(root, opts)) {
          if (signal?.aborted) return;
          const location = `${opts.dir}/${rel}`;
          const file = path.join(root, rel);
          const size = (await fsp.stat(file)).size;
          if (size > opts.max_bytes) {
            page.push({ malformed: `file is ${size} bytes, larger than max_bytes ${opts.max_bytes}`, location });
          } else {
            try {
              const text = decoder.decode(await fsp.readFile(file));
              const id = rel.slice(0, rel.length - path.extname(rel).length);
              page.push({ id, text, metadata: { file: rel, bytes: size }, location });
            } catch {
              page.push({ malformed: "not valid UTF-8", location });
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
