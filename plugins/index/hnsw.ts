/**
 * `hnsw` index engine: approximate inner-product search with a usearch HNSW graph.
 *
 * The artifact is one file, `index.usearch`, usearch's own format (the f32 vectors, then the graph). `open`
 * memory-maps it (`Index.view`), so loading costs a few page-table entries rather than a read of the whole
 * file, and the OS page cache is shared between processes serving the same version.
 * @module
 */
import * as fsp from "node:fs/promises";
import { createRequire } from "node:module";
import * as os from "node:os";
import * as path from "node:path";
import type * as Usearch from "usearch";
import { z } from "zod";
import { definePlugin, type IndexEngine, type Searcher } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { checkVectors } from "./_check.ts";

export const NAME = "hnsw";

/** The file `build` writes and `open` maps. */
export const FILE = "index.usearch";

// usearch's ESM entry recurses forever looking for its native build; the CommonJS entry does not.
const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;

export interface HnswOptions {
  /** Graph edges per node (HNSW `M`): more raises recall and memory. @default 16 */
  connectivity: number;
  /** Candidates considered while inserting (`efConstruction`): more raises recall and build time. @default 128 */
  expansion_add: number;
  /** Candidates considered per search (`ef`): more raises recall and search time. @default 64 */
  expansion_search: number;
}

const options = z.strictObject({
  connectivity: z.number().int().min(2).max(1024).default(16).describe("Graph edges per node (HNSW M)"),
  expansion_add: z.number().int().min(1).max(65536).default(128).describe("Candidates considered while inserting (efConstruction)"),
  expansion_search: z.number().int().min(1).max(65536).default(64).describe("Candidates considered per search (ef)"),
});

/** Rows added per native call; between batches the event loop gets a turn, so a worker stays responsive. */
const ADD_BATCH = 8192;

const fail = (msg: string, cause?: unknown) => new ApfaError("index", msg, { cause, where: "index:hnsw" });

export default definePlugin({
  kind: "index",
  name: NAME,
  description: "Approximate inner-product search on a usearch HNSW graph, memory-mapped when served",
  options,
  create(opts: HnswOptions): IndexEngine {
    const make = (dims: number) =>
      new usearch.Index({
        dimensions: dims,
        metric: usearch.MetricKind.IP,
        quantization: usearch.ScalarKind.F32,
        connectivity: opts.connectivity,
        expansion_add: opts.expansion_add,
        expansion_search: opts.expansion_search,
        multi: false,
      });

    return {
      metric: "ip",
      async build(vectors, dims) {
        const count = checkVectors(vectors, dims, "index:hnsw");
        const index = make(dims);
        for (let start = 0; start < count; start += ADD_BATCH) {
          const end = Math.min(count, start + ADD_BATCH);
          const keys = new BigUint64Array(end - start);
          for (let i = 0; i < keys.length; i++) keys[i] = BigInt(start + i);
          index.add(keys, vectors.subarray(start * dims, end * dims), 0);
          await new Promise((resolve) => setImmediate(resolve));
        }
        // usearch only serialises to a path; the temp directory keeps concurrent builds apart.
        const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-hnsw-"));
        try {
          const file = path.join(tmp, FILE);
          index.save(file);
          return { files: { [FILE]: new Uint8Array(await fsp.readFile(file)) }, main: FILE };
        } catch (err) {
          throw fail(`saving the HNSW index failed: ${(err as Error).message}`, err);
        } finally {
          await fsp.rm(tmp, { recursive: true, force: true });
        }
      },

      async open(dir, info) {
        const file = path.join(dir, FILE);
        await checkLayout(file, info);
        const index = make(info.dims);
        try {
          index.view(file);
        } catch (err) {
          throw fail(`${file} is not a usable usearch index: ${(err as Error).message}`, err);
        }
        // The file's own header wins over the constructor's dimensions, so check it against the version.
        if (index.dimensions() !== info.dims) throw fail(`${file} holds ${index.dimensions()}-dim vectors but the index version says ${info.dims}`);
        if (index.size() !== info.count) throw fail(`${file} holds ${index.size()} vectors but the index version says ${info.count}`);
        return hnswSearcher(index, info.dims, info.count);
      },
    };
  },
});

/**
 * Checks the outer layout usearch writes (rows:u32, bytes per row:u32, the vectors, then a 64-byte head
 * starting "usearch") against the file size before mapping it. usearch's `view` trusts these numbers and
 * reads past the end of the mapping (a segfault, not an error) when a file is truncated or not its own.
 */
async function checkLayout(file: string, info: { dims: number; count: number }): Promise<void> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, "r");
  } catch (err) {
    throw fail(`cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, err);
  }
  try {
    const size = (await fh.stat()).size;
    const head = new Uint8Array(8);
    if (size < 8 || (await fh.read(head, 0, 8, 0)).bytesRead < 8) throw fail(`${file} is truncated: ${size} bytes`);
    const dv = new DataView(head.buffer);
    const rows = dv.getUint32(0, true);
    const rowBytes = dv.getUint32(4, true);
    if (rowBytes !== info.dims * 4) {
      throw fail(`${file} holds rows of ${rowBytes} bytes (${rowBytes / 4} f32 dims) but the index version says ${info.dims} dims`);
    }
    if (rows !== info.count) throw fail(`${file} holds ${rows} vectors but the index version says ${info.count}`);
    const headAt = 8 + rows * rowBytes;
    if (size < headAt + 64) throw fail(`${file} is truncated: ${size} bytes, the vectors alone need ${headAt + 64}`);
    const magic = new Uint8Array(7);
    await fh.read(magic, 0, 7, headAt);
    if (new TextDecoder().decode(magic) !== "usearch") throw fail(`${file} is not a usearch index (no "usearch" head after the vectors)`);
  } finally {
    await fh.close();
  }
}

function hnswSearcher(index: Usearch.Index, dims: number, count: number): Searcher {
  let live: Usearch.Index | null = index;
  return {
    count,
    dims,
    memoryBytes: 0,
    async search(query, k) {
      if (!live) throw fail("search on a closed index");
      if (!(query instanceof Float32Array) || query.length !== dims) {
        throw fail(`query must be a Float32Array of ${dims} floats, got ${query?.length ?? typeof query}`);
      }
      const n = Math.min(Math.floor(k), count);
      if (!(n >= 1)) return { rows: [], scores: [] };
      const m = live.search(query, n, 1);
      const rows = new Array<number>(m.keys.length);
      const scores = new Array<number>(m.keys.length);
      // usearch's "ip" distance is 1 - inner product; the loop is over the k results only.
      for (let i = 0; i < rows.length; i++) {
        rows[i] = Number(m.keys[i]);
        scores[i] = 1 - m.distances[i];
      }
      return { rows, scores };
    },
    async close() {
      // usearch has no explicit unmap: dropping the last reference lets GC release the mapping.
      live = null;
    },
  };
}
