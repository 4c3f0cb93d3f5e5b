/**
 * A small worker_threads pool for exact inner-product scans, so a 100k×384 search (tens of milliseconds of
 * native, blocking work) does not stall the event loop that accepts connections and answers 503s.
 *
 * Each worker maps the vector matrix from the index file itself (`file` at byte `offset`) through apfa's native
 * helper (runtime/mmap.ts) when `map` names it, so every worker of every process reads the same page-cache pages;
 * without it, each worker reads its own copy: usearch's `exactSearch` rejects SharedArrayBuffer-backed arrays on
 * Node 20, so a read matrix cannot be shared. The calling thread keeps none. Searches queue FIFO and go to the
 * first idle worker; an idle worker takes up to `batch` whole-matrix searches from the head of the queue at once
 * and scans them in one `exactSearch` call, which reads the matrix once for all of them (at 100k × 384 here, 8
 * queries in one call cost ~3.4 single ones). A worker that dies rejects only the searches it was running, with an ApfaError naming the
 * exit; the next search starts a fresh worker. `close()` terminates every worker.
 *
 * The worker's code is a plain JavaScript string run with `eval: true`: a separate `.ts` file could not be
 * started as a worker by Node 20 (no type stripping) nor by vitest, while a string runs the same on Node, in
 * dist/, under vitest and under Deno's `node:worker_threads`.
 * @module
 */
import { Worker } from "node:worker_threads";
import { ApfaError } from "../../runtime/errors.ts";

export interface ExactPoolOptions {
  /** The file holding the row-major count × dims float32 matrix, little-endian. */
  file: string;
  /** Byte offset of the matrix in `file`. */
  offset: number;
  dims: number;
  count: number;
  /** Worker threads, each with its own copy of the matrix unless it is mapped. */
  workers: number;
  /** Path of apfa's native map helper (runtime/mmap.ts): the workers map the matrix instead of reading it. */
  map?: string;
  /** usearch threads per search inside a worker; 0 uses every core. */
  threads: number;
  /** Most queued whole-matrix searches one worker scans together in one call. @default 1 */
  batch?: number;
}

/** usearch's raw answer: `keys` index the scanned matrix (or `rows`, when given), `distances` are 1 - inner product. */
export interface ExactMatches {
  keys: BigUint64Array;
  distances: Float32Array;
}

export interface ExactPool {
  /**
   * Top `k` of the matrix for one query (`dims` floats); with `rows`, of just those rows, and the keys are then
   * positions in `rows`. `k` must be between 1 and the rows scanned.
   */
  search(query: Float32Array, k: number, rows?: Uint32Array): Promise<ExactMatches>;
  close(): Promise<void>;
  /** Test hook: the next free worker exits with code 7 while holding this job. */
  _crash(): Promise<ExactMatches>;
  /** Test hook: the workers running now. */
  _workers(): Worker[];
  /** Test hook: scans sent to workers so far (a batch of searches is one). */
  _scans(): number;
}

// Runs inside each worker. Imports are dynamic so the string works as Node's CommonJS eval and as Deno's module.
const WORKER_SOURCE = `
(async () => {
  const { parentPort, workerData } = await import("node:worker_threads");
  const { createRequire } = await import("node:module");
  const fs = await import("node:fs");
  const { file, offset, dims, count, threads, requireFrom, map } = workerData;
  const usearch = createRequire(requireFrom)("usearch");
  const bytes = count * dims * 4;
  // Mapped: usearch reads the page cache's pages, shared with every other worker and process on this version.
  const data = map ? new Float32Array(createRequire(requireFrom)(map).map(file, offset, bytes)) : new Float32Array(bytes / 4);
  if (!map) {
    const view = new Uint8Array(data.buffer);
    const fd = fs.openSync(file, "r");
    try {
      let done = 0;
      while (done < bytes) {
        const n = fs.readSync(fd, view, done, bytes - done, offset + done);
        if (n === 0) throw new Error(file + " ends " + (bytes - done) + " bytes before the " + count + "x" + dims + " matrix does");
        done += n;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  parentPort.on("message", ({ id, query, k, rows, crash, queries, ks }) => {
    if (crash) process.exit(7);
    try {
      if (queries) {
        // Several queries in one scan: each row of the answer is one query's top K, best first.
        const K = Math.max(...ks);
        const m = usearch.exactSearch(data, queries, dims, K, usearch.MetricKind.IP, threads);
        parentPort.postMessage({ id, keys: m.keys, distances: m.distances, K }, [m.keys.buffer, m.distances.buffer]);
        return;
      }
      let matrix = data;
      if (rows) {
        matrix = new Float32Array(rows.length * dims);
        for (let i = 0; i < rows.length; i++) matrix.set(data.subarray(rows[i] * dims, (rows[i] + 1) * dims), i * dims);
      }
      const m = usearch.exactSearch(matrix, query, dims, k, usearch.MetricKind.IP, threads);
      parentPort.postMessage({ id, keys: m.keys, distances: m.distances }, [m.keys.buffer, m.distances.buffer]);
    } catch (err) {
      parentPort.postMessage({ id, error: String(err && err.message || err) });
    }
  });
  parentPort.postMessage({ ready: true });
})(); // a failure to load rejects unhandled: the worker exits and its "error" event names the cause
`;

interface Job {
  id: number;
  query?: Float32Array;
  k?: number;
  rows?: Uint32Array;
  crash?: boolean;
  resolve(m: ExactMatches): void;
  reject(err: unknown): void;
}

interface Slot {
  worker: Worker;
  ready: Promise<void>;
  /** What the worker is scanning: one job, or several whole-matrix searches in one call. */
  jobs?: Job[];
  /** Last uncaught error in the worker, reported with its exit. */
  error?: unknown;
  /** Settles when the scan in `jobs` has answered or the worker has exited. */
  scanned?: Promise<void>;
  scanEnded?: () => void;
}

const fail = (msg: string, cause?: unknown) => new ApfaError("index", msg, { cause, where: "index:flat" });

/** Starts `workers` workers, each loading the matrix; rejects (and stops them all) if any cannot load it. */
export async function exactPool(opts: ExactPoolOptions): Promise<ExactPool> {
  const n = Math.max(1, Math.floor(opts.workers));
  const batch = Math.max(1, Math.floor(opts.batch ?? 1));
  const slots: (Slot | undefined)[] = new Array(n).fill(undefined);
  const queue: Job[] = [];
  let nextId = 1;
  let closed = false;

  const spawn = (i: number): Slot => {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { file: opts.file, offset: opts.offset, dims: opts.dims, count: opts.count, threads: opts.threads, requireFrom: import.meta.url, map: opts.map },
    });
    let ready!: () => void;
    let notReady!: (err: unknown) => void;
    const slot: Slot = { worker, ready: new Promise((res, rej) => ((ready = res), (notReady = rej))) };
    slot.ready.catch(() => {}); // observed by the caller that awaits it; a respawn nobody awaits reports via its job
    worker.on("message", (msg: { ready?: true; id?: number; keys?: BigUint64Array; distances?: Float32Array; K?: number; error?: string }) => {
      if (msg.ready) {
        if (!slot.jobs) worker.unref();
        return ready();
      }
      const jobs = slot.jobs;
      if (!jobs || jobs[0].id !== msg.id) return;
      slot.jobs = undefined;
      slot.scanEnded?.();
      worker.unref(); // an idle pool does not keep the process alive; dispatch refs it again for the next job
      if (msg.error !== undefined) for (const job of jobs) job.reject(fail(`exact search failed: ${msg.error}`));
      else if (msg.K === undefined) jobs[0].resolve({ keys: msg.keys!, distances: msg.distances! });
      else {
        const K = msg.K;
        jobs.forEach((job, i) => job.resolve({ keys: msg.keys!.subarray(i * K, i * K + job.k!), distances: msg.distances!.subarray(i * K, i * K + job.k!) }));
      }
      dispatch();
    });
    worker.on("error", (err) => {
      slot.error = err;
    });
    worker.on("exit", (code) => {
      if (slots[i] === slot) slots[i] = undefined;
      const why = slot.error instanceof Error ? `: ${slot.error.message}` : "";
      const err = fail(`search worker ${i} exited with code ${code}${why}`, slot.error);
      notReady(err);
      const jobs = slot.jobs ?? [];
      slot.jobs = undefined;
      slot.scanEnded?.();
      for (const job of jobs) job.reject(closed ? fail("search on a closed index") : err);
      if (!closed) dispatch();
    });
    slots[i] = slot;
    return slot;
  };

  /** A search of the whole matrix with a valid k, which can share a scan with others (a bad k fails alone). */
  const whole = (job: Job | undefined) => job !== undefined && !job.crash && !job.rows && job.k! >= 1 && job.k! <= opts.count;
  let scans = 0;

  const dispatch = () => {
    for (let i = 0; i < n && queue.length > 0; i++) {
      const slot = slots[i] ?? spawn(i);
      if (slot.jobs) continue;
      const jobs = [queue.shift()!];
      while (whole(jobs[0]) && jobs.length < batch && whole(queue[0])) jobs.push(queue.shift()!);
      slot.jobs = jobs;
      slot.scanned = new Promise((res) => (slot.scanEnded = res));
      scans++;
      const job = jobs[0];
      if (job.crash) slot.worker.postMessage({ id: job.id, crash: true });
      else if (jobs.length === 1) slot.worker.postMessage({ id: job.id, query: job.query, k: job.k, rows: job.rows }, [job.query!.buffer as ArrayBuffer]);
      else {
        const queries = new Float32Array(jobs.length * opts.dims);
        jobs.forEach((j, at) => queries.set(j.query!, at * opts.dims));
        slot.worker.postMessage({ id: job.id, queries, ks: jobs.map((j) => j.k) }, [queries.buffer]);
      }
      slot.worker.ref();
    }
  };

  const enqueue = (job: Omit<Job, "id" | "resolve" | "reject">) =>
    new Promise<ExactMatches>((resolve, reject) => {
      if (closed) return reject(fail("search on a closed index"));
      queue.push({ ...job, id: nextId++, resolve, reject });
      dispatch();
    });

  /**
   * Refuses what is queued, lets the scans under way answer, then stops the workers. Terminating a worker in the
   * middle of usearch's exactSearch aborted the whole process ("terminate called after throwing an instance of
   * 'Napi::Error'"): a swap superseded while its warm-up was still searching took both server processes down.
   */
  const close = async () => {
    closed = true;
    for (const job of queue.splice(0)) job.reject(fail("search on a closed index"));
    await Promise.all(slots.map((s) => (s?.jobs ? s.scanned : undefined)));
    await Promise.all(slots.map((s) => s?.worker.terminate()));
  };

  for (let i = 0; i < n; i++) spawn(i);
  try {
    await Promise.all(slots.map((s) => s!.ready));
  } catch (err) {
    await close();
    throw err;
  }

  return {
    search(query, k, rows) {
      // A copy at offset 0 of its own buffer: usearch ignores byteOffset, and the caller's array stays usable.
      return enqueue({ query: query.slice(), k, rows });
    },
    close,
    _crash: () => enqueue({ crash: true }),
    _workers: () => slots.flatMap((s) => (s ? [s.worker] : [])),
    _scans: () => scans,
  };
}
