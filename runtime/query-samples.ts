/**
 * Samples the embeddings of real search/advice queries into `apfa.query_samples`, so a build can measure its
 * index's recall on queries as users ask them (runtime/tasks/build-index.ts), not only on the corpus's own rows,
 * which on near-duplicate data is optimistic (docs/index-engines.md).
 *
 * Each query vector is kept with probability `rate`. Kept vectors wait in a bounded reservoir (Algorithm R:
 * past `max_pending`, a new vector replaces a random held one), and a timer writes them to Postgres every
 * `flush_s` in one statement that also deletes all but the newest `keep` rows of the embedder. A request never
 * waits for the database and never fails because of it: `offer` only copies a vector, and a failed write is
 * logged and counted, its vectors dropped. Only vectors are stored, never the query text (docs/security.md).
 * @module
 */
import type { Logger } from "./contracts.ts";
import { errorMessage } from "./errors.ts";

/** The part of a pg pool the sampler uses. */
export interface SampleDb {
  query(text: string, values: unknown[]): Promise<unknown>;
}

export interface QuerySamplerOptions {
  db: SampleDb;
  /** The embedder's identity (`embedderKey`), which a build matches against its run's. */
  modelKey: string;
  dims: number;
  /** Fraction of offered vectors kept. @default 0.05 */
  rate: number;
  /** Rows kept per model_key after each write. @default 2000 */
  keep: number;
  /** Vectors held between writes. @default 500 */
  max_pending: number;
  /** Seconds between background writes; 0 = no timer (call `flush`). @default 10 */
  flush_s: number;
  log: Logger;
  /** Uniform [0, 1) source (tests pass a seeded one). @default Math.random */
  random?: () => number;
  /** Told after each write attempt. */
  onFlush?: (outcome: "written" | "failed", vectors: number) => void;
}

export interface QuerySampler {
  /** Considers one query's vector (1 × dims); returns at once. */
  offer(vector: Float32Array): void;
  /** Writes what is held; resolves to the vectors written (0 on failure, which it logs and counts, never throws). */
  flush(): Promise<number>;
  /** Stops the timer and writes what is held. */
  close(): Promise<void>;
  stats(): { offered: number; sampled: number; pending: number; written: number; failed_flushes: number };
}

/** Inserts the batch and trims the embedder's rows to the newest `keep`, in one statement (so atomically). */
const WRITE = `with ins as (
  insert into apfa.query_samples (model_key, dims, vector) select $1, $2, v from unnest($3::bytea[]) as v
)
delete from apfa.query_samples
 where model_key = $1
   and id <= (select id from apfa.query_samples where model_key = $1 order by id desc offset $4 limit 1)`;

/** A vector as the table stores it: dims × f32, little-endian. */
export function encodeVector(v: Float32Array): Uint8Array {
  const out = new Uint8Array(v.length * 4);
  const dv = new DataView(out.buffer);
  v.forEach((x, i) => dv.setFloat32(i * 4, x, true));
  return out;
}

/** The inverse of `encodeVector`. */
export function decodeVector(b: Uint8Array): Float32Array {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Float32Array.from({ length: b.byteLength >> 2 }, (_, i) => dv.getFloat32(i * 4, true));
}

/**
 * Stores `vectors` (each 1 × dims) as query samples of `modelKey`, in one statement that keeps the embedder's
 * newest `keep` rows; returns the vectors stored (the last `keep` of them when there are more). What
 * `apfa index queries` uses to seed the recall check with example questions before servers have logged any.
 */
export async function storeQuerySamples(db: SampleDb, modelKey: string, dims: number, vectors: Float32Array[], keep: number): Promise<number> {
  // The statement's delete sees the table as it was before its insert, so the old rows kept are keep − rows.
  const rows = vectors.slice(-keep);
  await db.query(WRITE, [modelKey, dims, rows.map(encodeVector), keep - rows.length]);
  return rows.length;
}

export function createQuerySampler(opts: QuerySamplerOptions): QuerySampler {
  const random = opts.random ?? Math.random;
  let pending: Float32Array[] = [];
  /** Vectors sampled since the last write (the reservoir's stream length). */
  let seen = 0;
  const counts = { offered: 0, sampled: 0, written: 0, failed_flushes: 0 };
  let writing: Promise<number> | undefined;

  async function write(batch: Float32Array[]): Promise<number> {
    const n = Math.min(batch.length, opts.keep);
    try {
      await storeQuerySamples(opts.db, opts.modelKey, opts.dims, batch, opts.keep);
      counts.written += n;
      opts.onFlush?.("written", n);
      return n;
    } catch (err) {
      counts.failed_flushes++;
      opts.onFlush?.("failed", n);
      opts.log.warn("query samples not written; they are dropped", { vectors: n, error: errorMessage(err) });
      return 0;
    }
  }

  const flush = (): Promise<number> => {
    if (writing) return writing.then(flush);
    if (!pending.length) return Promise.resolve(0);
    const batch = pending;
    pending = [];
    seen = 0;
    writing = write(batch).finally(() => (writing = undefined));
    return writing;
  };

  const timer = opts.flush_s > 0 ? setInterval(() => void flush(), opts.flush_s * 1000) : undefined;
  timer?.unref?.();

  return {
    offer(vector) {
      counts.offered++;
      if (vector.length !== opts.dims || !(random() < opts.rate)) return;
      counts.sampled++;
      seen++;
      if (pending.length < opts.max_pending) pending.push(vector.slice());
      else {
        const j = Math.floor(random() * seen);
        if (j < opts.max_pending) pending[j] = vector.slice();
      }
    },
    flush,
    async close() {
      if (timer) clearInterval(timer);
      await flush();
    },
    stats: () => ({ ...counts, pending: pending.length }),
  };
}

/** The newest `limit` sampled query vectors of an embedder at `dims`, as one row-major matrix (n × dims). */
export async function loadQuerySamples(
  db: { query(text: string, values: unknown[]): Promise<{ rows: Array<{ vector: Uint8Array }> }> },
  modelKey: string,
  dims: number,
  limit: number,
): Promise<Float32Array> {
  if (limit <= 0) return new Float32Array(0);
  const { rows } = await db.query(
    "select vector from apfa.query_samples where model_key = $1 and dims = $2 and length(vector) = $3 order by id desc limit $4",
    [modelKey, dims, dims * 4, limit],
  );
  const out = new Float32Array(rows.length * dims);
  rows.forEach((r, i) => out.set(decodeVector(r.vector), i * dims));
  return out;
}
