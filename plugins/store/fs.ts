/**
 * `fs` store: objects are files under a root directory. Puts write a temp file in the same directory,
 * fsync it, then rename over the target, so a crash or a full disk never leaves a half-written object
 * (and never a half-written `indexes/latest`).
 * @module
 */
import { constants as fsConstants, createReadStream } from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { z } from "zod";
import { definePlugin, type Store, type StoreStat } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { assertKey, assertPrefix } from "../../runtime/keys.ts";

export const NAME = "fs";

export interface FsOptions {
  /** Root directory, relative to pipeline.yaml. @default ".apfa/store" */
  dir: string;
}

const options = z.strictObject({
  dir: z.string().min(1).default(".apfa/store").describe("Root directory, relative to pipeline.yaml"),
});

function fsError(op: string, key: string, err: unknown): ApfaError {
  if (err instanceof ApfaError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new ApfaError("not_found", `no object at ${key}`, { cause: err, where: "store:fs" });
  const why = code === "ENOSPC" ? "disk full" : code === "EACCES" || code === "EPERM" ? "permission denied" : code ?? "error";
  return new ApfaError(code === "EACCES" || code === "EPERM" ? "access_denied" : "store", `${op} ${key} failed: ${why}`, { cause: err, where: "store:fs" });
}

export default definePlugin({
  kind: "store",
  name: NAME,
  description: "Objects as files under a local directory (atomic temp-file + fsync + rename writes)",
  options,
  create(opts: FsOptions, ctx): Store {
    const root = path.resolve(ctx.baseDir, opts.dir);
    const file = (key: string) => path.join(root, ...assertKey(key).split("/"));
    let seq = 0;

    async function* walk(dir: string, rel: string): AsyncIterable<StoreStat> {
      let entries;
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
        throw err;
      }
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of entries) {
        if (e.name.startsWith(".apfa-tmp-")) continue;
        const key = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) yield* walk(path.join(dir, e.name), key);
        else if (e.isFile()) {
          const st = await fsp.stat(path.join(dir, e.name)).catch(() => null);
          if (st) yield { key, size: st.size, mtime: st.mtime };
        }
      }
    }

    return {
      describe: () => `fs:${root}`,
      async put(key, data) {
        const target = file(key);
        const tmp = path.join(path.dirname(target), `.apfa-tmp-${process.pid}-${Date.now()}-${seq++}`);
        try {
          await fsp.mkdir(path.dirname(target), { recursive: true });
          const fh = await fsp.open(tmp, "w");
          try {
            if (data instanceof Uint8Array) await fh.writeFile(data);
            else for await (const chunk of data) await fh.write(chunk);
            await fh.sync();
          } finally {
            await fh.close();
          }
          await fsp.rename(tmp, target);
        } catch (err) {
          await fsp.rm(tmp, { force: true }).catch(() => {});
          throw fsError("put", key, err);
        }
      },
      async get(key) {
        try {
          return new Uint8Array(await fsp.readFile(file(key)));
        } catch (err) {
          throw fsError("get", key, err);
        }
      },
      async getStream(key) {
        const p = file(key);
        try {
          await fsp.access(p);
        } catch (err) {
          throw fsError("get", key, err);
        }
        return createReadStream(p) as AsyncIterable<Uint8Array>;
      },
      async copyToFile(key, dest) {
        const src = file(key);
        try {
          // A put never changes an object's file in place (it renames a new one over it), so a hard link is
          // a copy that stays as it is; across filesystems, a clone or an in-kernel copy.
          await fsp.link(src, dest);
        } catch {
          try {
            await fsp.copyFile(src, dest, fsConstants.COPYFILE_FICLONE);
          } catch (err) {
            throw fsError("get", key, err);
          }
        }
      },
      async stat(key) {
        try {
          const st = await fsp.stat(file(key));
          return st.isFile() ? { key, size: st.size, mtime: st.mtime } : null;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
          throw fsError("stat", key, err);
        }
      },
      async *list(prefix) {
        assertPrefix(prefix);
        // Walk only the directory the prefix names, then filter by the remaining partial segment.
        const slash = prefix.lastIndexOf("/");
        const dirRel = slash >= 0 ? prefix.slice(0, slash) : "";
        const dir = dirRel ? path.join(root, ...dirRel.split("/")) : root;
        for await (const st of walk(dir, dirRel)) if (st.key.startsWith(prefix)) yield st;
      },
      async delete(key) {
        try {
          await fsp.rm(file(key), { force: true });
        } catch (err) {
          throw fsError("delete", key, err);
        }
      },
    };
  },
});
