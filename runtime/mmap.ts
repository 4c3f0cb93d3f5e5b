/**
 * Read-only shared memory maps of index files, through apfa's optional native helper (runtime/native/mmap.c,
 * built by `npm run build` into dist/native/apfa_mmap.node when a C compiler is there). Node 20 cannot map a file
 * by itself; mapped, the vectors of a version live once in the page cache however many server processes and
 * search workers read them, instead of once in each one's heap.
 *
 * Engines ask {@link mmapHelper} whether the helper loads here (it is looked for once per process) and fall back
 * to reading the file when it does not; a worker thread loads it by the returned path, since an addon's
 * functions belong to the thread that loaded it.
 * @module
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { ApfaError } from "./errors.ts";

/** The helper's one function: bytes [offset, offset + length) of `file`, mapped read-only and shared. */
export interface MmapHelper {
  map(file: string, offset: number, length: number): ArrayBuffer;
}

// From runtime/ (sources) the build is ../dist/native; from dist/runtime/ (the built package) it is ../native.
const CANDIDATES = ["../dist/native/apfa_mmap.node", "../native/apfa_mmap.node"];

let found: { path: string; helper: MmapHelper } | { reason: string } | undefined;

function find(): { path: string; helper: MmapHelper } | { reason: string } {
  const paths = CANDIDATES.map((c) => fileURLToPath(new URL(c, import.meta.url)));
  const at = paths.find((p) => fs.existsSync(p));
  if (!at) return { reason: `the native helper is not built (no ${paths[0]}; \`npm run build\` builds it where a C compiler is installed)` };
  try {
    const helper = createRequire(import.meta.url)(at) as MmapHelper;
    if (typeof helper.map !== "function") return { reason: `${at} has no map function` };
    return { path: at, helper };
  } catch (err) {
    return { reason: `${at} does not load here: ${(err as Error).message}` };
  }
}

/** The loaded helper and its path, or why there is none; looked for once per process. */
export function mmapHelper(): { path: string; helper: MmapHelper } | { reason: string } {
  return (found ??= find());
}

/** `length` bytes of `file` from `offset`, mapped read-only; throws an ApfaError naming the file on failure. */
export function mapFile(file: string, offset: number, length: number, where: string): ArrayBuffer {
  const h = mmapHelper();
  if (!("helper" in h)) throw new ApfaError("index", `cannot map ${file}: ${h.reason}`, { where });
  try {
    return h.helper.map(file, offset, length);
  } catch (err) {
    throw new ApfaError("index", (err as Error).message, { cause: err, where });
  }
}
