/**
 * `flat` index engine (the default): exact inner-product search over every stored vector.
 *
 * The artifact is one file, `index.faiss`, in FAISS's `IndexFlatIP` binary format, so Python's
 * `faiss.read_index` opens it as is: fourcc "IxFI", the index header (d:i32, ntotal:i64, two dummy i64,
 * is_trained:u8, metric_type:i32 = 0 for inner product), then the vectors as a size-prefixed vector
 * (count of floats:u64, then the f32 data). All fields little-endian, 45 header bytes in total.
 *
 * Searching uses usearch's SIMD `exactSearch` directly on the loaded bytes: no JS loop over vectors.
 * A 100k×384 search takes 10-20 ms of blocking native work, so by default it runs in a worker thread
 * (`search_threads`, plugins/index/_pool.ts) that scans up to `search_batch` waiting searches in one pass;
 * `search_threads: 0` searches inline on the caller's thread. The vectors are memory-mapped from the version's
 * file (`mmap`, through apfa's native helper, runtime/mmap.ts), read-only and shared: server processes and
 * search workers on one version hold one copy in the page cache. Without the helper each worker reads a copy.
 * @module
 */
import { Buffer } from "node:buffer";
import * as fsp from "node:fs/promises";
import { createRequire } from "node:module";
import * as path from "node:path";
import type * as Usearch from "usearch";
import { z } from "zod";
import { definePlugin, type IndexEngine, type Searcher } from "../../runtime/contracts.ts";
import { checkVectors } from "./_check.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { overFetch } from "../../runtime/filtered-search.ts";
import { coreShare } from "../../runtime/cores.ts";
import { mapFile, mmapHelper } from "../../runtime/mmap.ts";
import { exactPool, type ExactPool } from "./_pool.ts";

export const NAME = "flat";

/** The file `build` writes and `open` reads. */
export const FILE = "index.faiss";

/** fourcc + d + ntotal + 2 dummies + is_trained + metric_type + float count. */
export const HEADER_BYTES = 4 + 4 + 8 + 8 + 8 + 1 + 4 + 8;

// usearch's ESM entry recurses forever looking for its native build; the CommonJS entry does not.
const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;

export interface FlatOptions {
  /** Threads one search scans with; 0 uses every core (under `apfa serve --processes N`, its share: cores ÷ N). @default 0 */
  threads: number;
  /**
   * Worker threads that run the searches, each holding its own copy of the vectors (memory = vectors ×
   * search_threads); 0 searches inline on the caller's thread, blocking its event loop for each scan.
   * @default 1
   */
  search_threads: number;
  /**
   * Most waiting searches one search worker scans together in one pass over the vectors (each still gets its own
   * exact answer); 1 scans them one by one. @default 8
   */
  search_batch: number;
  /**
   * Map the vectors from the version's file, read-only and shared by every process and search worker, instead of
   * reading a copy into each; needs apfa's native helper (built by `npm run build` with a C compiler), else read.
   * @default true
   */
  mmap: boolean;
}

const options = z.strictObject({
  threads: z.number().int().min(0).max(256).default(0).describe("Threads one search scans with; 0 uses every core (under `apfa serve --processes N`, the process's share: cores ÷ N)"),
  search_threads: z
    .number()
    .int()
    .min(0)
    .max(64)
    .default(1)
    .describe(
      "Worker threads that run searches off the event loop (each reads its own copy of the vectors when they are not mapped: memory = vectors × search_threads); 0 searches inline on the caller's thread",
    ),
  search_batch: z
    .number()
    .int()
    .min(1)
    .max(256)
    .default(8)
    .describe("Most waiting searches a search worker scans together in one pass over the vectors (each keeps its exact answer); 1 scans one at a time"),
  mmap: z
    .boolean()
    .default(true)
    .describe(
      "Map the vectors from the version's file (read-only, one copy in the page cache shared by every server process and search worker) through apfa's native helper; false, or no helper built, reads a copy into each",
    ),
});

const FOURCC = [0x49, 0x78, 0x46, 0x49]; // "IxFI"
const METRIC_INNER_PRODUCT = 0;
const FAISS_DUMMY = 1n << 20n; // what faiss writes into the two retired header fields

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // Float32Array bytes go to disk as they are in memory, and FAISS files are little-endian.
  throw new ApfaError("index", "the flat index engine needs a little-endian machine");
}

const fail = (msg: string, cause?: unknown) => new ApfaError("index", msg, { cause, where: "index:flat" });

/** The 45-byte `IndexFlatIP` header for `count` vectors of `dims` floats. */
export function flatHeader(dims: number, count: number): Uint8Array {
  const h = new Uint8Array(HEADER_BYTES);
  const v = new DataView(h.buffer);
  h.set(FOURCC, 0);
  v.setInt32(4, dims, true);
  v.setBigInt64(8, BigInt(count), true);
  v.setBigInt64(16, FAISS_DUMMY, true);
  v.setBigInt64(24, FAISS_DUMMY, true);
  h[32] = 1; // is_trained
  v.setInt32(33, METRIC_INNER_PRODUCT, true);
  v.setBigUint64(37, BigInt(count) * BigInt(dims), true);
  return h;
}

/** Checks a header against what the caller expects and the file's size; throws naming the first problem. */
function checkHeader(file: string, h: Uint8Array, fileBytes: number, info: { dims: number; count: number }): void {
  const v = new DataView(h.buffer, h.byteOffset, h.byteLength);
  const fourcc = String.fromCharCode(...h.subarray(0, 4));
  if (fourcc !== "IxFI") throw fail(`${file} is not a FAISS IndexFlatIP file (fourcc ${JSON.stringify(fourcc)}, expected "IxFI")`);
  const dims = v.getInt32(4, true);
  const count = Number(v.getBigInt64(8, true));
  const metric = v.getInt32(33, true);
  const floats = Number(v.getBigUint64(37, true));
  if (metric !== METRIC_INNER_PRODUCT) throw fail(`${file} has metric_type ${metric}, expected ${METRIC_INNER_PRODUCT} (inner product)`);
  if (h[32] !== 1) throw fail(`${file} is marked untrained`);
  if (dims !== info.dims) throw fail(`${file} holds ${dims}-dim vectors but the index version says ${info.dims}`);
  if (count !== info.count) throw fail(`${file} holds ${count} vectors but the index version says ${info.count}`);
  if (floats !== count * dims) throw fail(`${file} data length ${floats} floats does not match ${count}×${dims}`);
  const want = HEADER_BYTES + floats * 4;
  if (fileBytes < want) throw fail(`${file} is truncated: ${fileBytes} bytes, expected ${want}`);
  if (fileBytes > want) throw fail(`${file} has ${fileBytes - want} unexpected trailing bytes`);
}

/**
 * A Float32Array usearch's `exactSearch` reads correctly. Its native side reads from the start of the
 * ArrayBuffer and ignores `byteOffset`, so a subarray view would be searched at the wrong place.
 */
function atBufferStart(a: Float32Array): Float32Array {
  return a.byteOffset === 0 ? a : a.slice();
}

export default definePlugin({
  kind: "index",
  name: NAME,
  description: "Exact inner-product search; one FAISS IndexFlatIP file (readable by faiss.read_index)",
  options,
  create(opts: FlatOptions, ctx): IndexEngine {
    // 0 = every core this process may use: all of them, or its share under `apfa serve --processes N`.
    const threads = opts.threads || coreShare();
    let toldUnmapped = false;
    /** The helper's path when this engine maps its vectors; says once why not when it was asked to and cannot. */
    const mapper = (): string | undefined => {
      if (!opts.mmap) return undefined;
      const h = mmapHelper();
      if ("path" in h) return h.path;
      if (!toldUnmapped) ctx.log.info(`flat: vectors read into each search worker's heap, not mapped: ${h.reason}`);
      toldUnmapped = true;
      return undefined;
    };
    return {
      metric: "ip",
      async build(vectors, dims) {
        const count = checkVectors(vectors, dims, "index:flat");
        const out = new Uint8Array(HEADER_BYTES + vectors.byteLength);
        out.set(flatHeader(dims, count), 0);
        out.set(new Uint8Array(vectors.buffer, vectors.byteOffset, vectors.byteLength), HEADER_BYTES);
        // The file is the vector matrix behind a header: later runs reuse rows straight from it.
        return { files: { [FILE]: out }, main: FILE, vectors: { file: FILE, offset: HEADER_BYTES } };
      },

      async open(dir, info) {
        const file = path.join(dir, FILE);
        const map = mapper();
        let fh: fsp.FileHandle;
        try {
          fh = await fsp.open(file, "r");
        } catch (err) {
          throw fail(`cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, err);
        }
        let data: Float32Array | undefined;
        try {
          const size = (await fh.stat()).size;
          if (size < HEADER_BYTES) throw fail(`${file} is truncated: ${size} bytes, shorter than the ${HEADER_BYTES}-byte header`);
          const header = new Uint8Array(HEADER_BYTES);
          if (size !== HEADER_BYTES + info.count * info.dims * 4 || opts.search_threads > 0 || map) {
            // Not the file this version describes (the check names what differs), or the vectors are the workers' to
            // read, or they are mapped.
            await fh.read(header, 0, HEADER_BYTES, 0);
            checkHeader(file, header, size, info);
            if (map && opts.search_threads === 0) data = new Float32Array(mapFile(file, HEADER_BYTES, info.count * info.dims * 4, "index:flat"));
          } else {
            data = await readBody(fh, file, size, header);
            checkHeader(file, header, size, info);
          }
        } finally {
          await fh.close();
        }
        // Mapped vectors are page-cache pages shared with other processes, not this one's heap (as hnsw's view).
        if (data) return flatSearcher(inlineScanner(data, info.dims, threads), info.dims, info.count, map ? 0 : data.byteLength);
        const pool = await exactPool({ file, offset: HEADER_BYTES, dims: info.dims, count: info.count, workers: opts.search_threads, threads, batch: opts.search_batch, map });
        return flatSearcher(pool, info.dims, info.count, map ? 0 : info.count * info.dims * 4 * opts.search_threads);
      },
    };
  },
});

/**
 * One scatter read: the header lands in its own buffer and the vectors at offset 0 of a fresh, unzeroed
 * ArrayBuffer, so they are 4-byte aligned and usable by usearch without any copy.
 */
async function readBody(fh: fsp.FileHandle, file: string, size: number, header: Uint8Array): Promise<Float32Array> {
  const body = Buffer.allocUnsafeSlow(size - HEADER_BYTES);
  let done = 0;
  while (done < size) {
    const bufs = done < HEADER_BYTES ? [header.subarray(done), body] : [body.subarray(done - HEADER_BYTES)];
    const { bytesRead } = await fh.readv(bufs, done);
    if (bytesRead === 0) throw fail(`${file} shrank while being read`);
    done += bytesRead;
  }
  const data = new Float32Array(body.buffer, body.byteOffset, (size - HEADER_BYTES) / 4);
  return data.byteOffset === 0 ? data : data.slice(); // allocUnsafeSlow never pools; kept for safety
}

/** usearch's exact scan of the vectors, inline or in workers: the shape of {@link ExactPool}. */
type Scanner = Pick<ExactPool, "search" | "close">;

/** Searches `vectors` on the calling thread, blocking it for the scan. */
function inlineScanner(vectors: Float32Array, dims: number, threads: number): Scanner {
  // Dropped on close, so a stray reference to a retired searcher does not pin its vectors.
  let data = vectors;
  return {
    async search(query, n, rows) {
      let matrix = data;
      if (rows) {
        matrix = new Float32Array(rows.length * dims);
        for (let i = 0; i < rows.length; i++) matrix.set(data.subarray(rows[i] * dims, (rows[i] + 1) * dims), i * dims);
      }
      return usearch.exactSearch(matrix, atBufferStart(query), dims, n, usearch.MetricKind.IP, threads) as Usearch.Matches;
    },
    async close() {
      data = new Float32Array(0);
    },
  };
}

/**
 * Filters passing at most this share of the rows are searched by copying their vectors out and scanning only
 * those; above it, over-fetching from the whole matrix (exact too) needs fewer bytes touched.
 */
const GATHER_SHARE = 0.25;

function flatSearcher(scanner: Scanner, dims: number, count: number, memoryBytes: number): Searcher {
  let closed = false;
  const check = (query: Float32Array) => {
    if (closed) throw fail("search on a closed index");
    if (!(query instanceof Float32Array) || query.length !== dims) {
      throw fail(`query must be a Float32Array of ${dims} floats, got ${query?.length ?? typeof query}`);
    }
  };
  /** The top `k` of `total` rows (all, or the `rowOf` ones), mapped back to the index's rows. */
  const scan = async (total: number, query: Float32Array, k: number, rowOf?: Uint32Array) => {
    const n = Math.min(Math.floor(k), total);
    if (!(n >= 1)) return { rows: [], scores: [] };
    const m = await scanner.search(query, n, rowOf);
    const rows = new Array<number>(n);
    const scores = new Array<number>(n);
    // usearch's "ip" distance is 1 - inner product; k is small, so this loop is over results only.
    for (let i = 0; i < n; i++) {
      rows[i] = rowOf ? rowOf[Number(m.keys[i])] : Number(m.keys[i]);
      scores[i] = 1 - m.distances[i];
    }
    return { rows, scores };
  };
  return {
    count,
    dims,
    memoryBytes,
    async search(query, k) {
      check(query);
      return scan(count, query, k);
    },
    async searchFiltered(query, k, filter) {
      check(query);
      const passing = filter.rows;
      if (passing.length > count * GATHER_SHARE) {
        const { rows, scores } = await overFetch(async (q, n) => scan(count, q, n), count, query, Math.min(k, passing.length), filter);
        return { rows, scores };
      }
      return scan(passing.length, query, k, passing);
    },
    async close() {
      if (closed) return;
      closed = true;
      await scanner.close();
    },
  };
}
