/**
 * Holds the served index and swaps it without failing a request. A new version is downloaded into the local
 * cache directory (and hashed, so a corrupt or truncated file is refused), checked against the
 * server's embedder (dims, model), opened, and only then made current with one assignment. Requests hold a
 * lease on the version they started with; the old version is closed when its last lease is released.
 * @module
 */
import { Buffer } from "node:buffer";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import type { IndexEngine, Logger, Searcher, Store } from "../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../runtime/errors.ts";
import { layout } from "../runtime/keys.ts";
import { assertVersion, readLatest, readManifest, servingFiles, type Manifest } from "../runtime/versions.ts";
import { openDocTable, type DocTable } from "./doc-table.ts";
import type { ServerMetrics } from "./metrics.ts";

export type LoadSource = "store" | "local-cache" | "sync-build";

export interface LoadedIndex {
  version: string;
  /** The local directory holding the version's files. */
  dir: string;
  manifest: Manifest;
  searcher: Searcher;
  /** Raw JSON line per row, read from the file on demand; parsed only for hits. */
  docs: DocTable;
  /** Time to open the local files: the engine's `open` plus reading the documents. */
  loadMs: number;
  /** Time to get the files into the local cache first: download + SHA-256 check from the store, or the
   * synchronous build; 0 when the local cache was used as it was. */
  fetchMs: number;
  source: LoadSource;
  loadedAt: Date;
  _refs: number;
  _retired: boolean;
}

export interface Lease {
  index: LoadedIndex;
  release(): void;
}

export interface IndexHolderOptions {
  store: Store;
  cacheDir: string;
  embedder: { modelId: string; dims: number };
  engine(name: string): Promise<IndexEngine>;
  log: Logger;
  metrics?: ServerMetrics;
  /** Last resort when neither the store nor the local cache has an index (the seed's synchronous build). */
  buildFromSource?: () => Promise<{ manifest: Manifest; dir: string }>;
  /**
   * Where `checkLatest` sends a version it found; default: swap to it here. Under `--processes N` it asks the
   * supervisor for a swap round instead (server/cluster.ts).
   */
  request?: (version: string, reason: string) => Promise<unknown>;
}

/** A version opened by `prepare` and not yet served; `index` is absent when it was already serving. */
export interface PreparedSwap {
  version: string;
  reason: string;
  index?: LoadedIndex;
}

export class SwapRefused extends ApfaError {
  readonly reason: string;
  constructor(reason: string, message: string, cause?: unknown) {
    super("index", message, { cause, where: "swap" });
    this.reason = reason;
  }
}

/** Bytes gathered before one `writev`: a write per 64 KiB stream chunk made the copy ~2× slower at 150 MB. */
const WRITE_BATCH = 4 * 1024 * 1024;

async function writeAll(fh: fsp.FileHandle, chunks: Uint8Array[], bytes: number): Promise<void> {
  const { bytesWritten } = await fh.writev(chunks);
  if (bytesWritten === bytes) return;
  const rest = Buffer.concat(chunks).subarray(bytesWritten); // a short write: rare, but not impossible
  for (let off = 0; off < rest.byteLength;) off += (await fh.write(rest, off)).bytesWritten;
}

/** Checksum reads go through one reused buffer: 1 MiB reads hashed a 150 MB file ~3× faster than 64 KiB stream chunks. */
const HASH_CHUNK = 1 << 20;

async function sha256File(file: string): Promise<{ size: number; sha256: string }> {
  const hash = crypto.createHash("sha256");
  const buf = Buffer.allocUnsafeSlow(HASH_CHUNK);
  let size = 0;
  const fh = await fsp.open(file, "r");
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, HASH_CHUNK, size);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      size += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return { size, sha256: hash.digest("hex") };
}

/** Streams the object into `tmp`, hashing it on the way. */
async function streamToFile(store: Store, key: string, tmp: string): Promise<{ size: number; sha256: string }> {
  const hash = crypto.createHash("sha256");
  let size = 0;
  const fh = await fsp.open(tmp, "w");
  try {
    let batch: Uint8Array[] = [];
    let batched = 0;
    for await (const chunk of await store.getStream(key)) {
      hash.update(chunk);
      size += chunk.byteLength;
      batch.push(chunk);
      batched += chunk.byteLength;
      if (batched >= WRITE_BATCH) {
        await writeAll(fh, batch, batched);
        batch = [];
        batched = 0;
      }
    }
    if (batched) await writeAll(fh, batch, batched);
  } finally {
    await fh.close();
  }
  return { size, sha256: hash.digest("hex") };
}

/** The lock a version's fetch holds in its local directory (shared by the processes of `apfa serve --processes N`). */
export const FETCH_LOCK = ".fetching";
/** How often a fetch touches its lock, and how long after the last touch a waiting process takes it over. */
const LOCK_HEARTBEAT_MS = 2_000;
const LOCK_STALE_MS = 30_000;
/** How often a process waiting for another's fetch looks again. */
const LOCK_POLL_MS = 20;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

/**
 * Takes `dir`'s fetch lock: a file created exclusively, holding this process's pid and touched while held.
 * Server processes sharing a cache directory swap to a version together; without it each downloaded and hashed
 * every file itself (at 100k × 384, 220 MB read, hashed and written once per process per swap). The first takes
 * the lock and fetches; the others wait for it to go, then find the files in place. A lock whose process is gone,
 * or that nobody touched for {@link LOCK_STALE_MS}, is taken over. Returns the release; `waitedMs` is the wait.
 */
async function fetchLock(dir: string): Promise<{ release: () => Promise<void>; waitedMs: number }> {
  const lock = path.join(dir, FETCH_LOCK);
  const t0 = performance.now();
  for (;;) {
    try {
      await fsp.writeFile(lock, String(process.pid), { flag: "wx" });
      const beat = setInterval(() => {
        const now = new Date();
        fsp.utimes(lock, now, now).catch(() => {});
      }, LOCK_HEARTBEAT_MS);
      beat.unref();
      return {
        release: async () => {
          clearInterval(beat);
          await fsp.rm(lock, { force: true });
        },
        waitedMs: performance.now() - t0,
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const [text, st] = await Promise.all([fsp.readFile(lock, "utf8").catch(() => ""), fsp.stat(lock).catch(() => null)]);
    const pid = Number(text);
    // An empty file is a lock being written; gone (null) means released: try again at once.
    if (st && ((pid > 0 && !alive(pid)) || Date.now() - st.mtimeMs > LOCK_STALE_MS)) await fsp.rm(lock, { force: true });
    else if (st) await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
  }
}

/**
 * Gets an object into the local cache only if its bytes match the manifest. A store that can put the object
 * in a local file itself (`copyToFile`: the fs store links it) is asked to, and the file that will be served
 * is hashed; any other store's stream is hashed while it is written.
 */
async function copyVerified(store: Store, key: string, dest: string, expect: { bytes: number; sha256: string }): Promise<void> {
  const tmp = `${dest}.part-${process.pid}`;
  let got: { size: number; sha256: string };
  try {
    await fsp.rm(tmp, { force: true }); // left by a crash: a link onto it would fail
    if (store.copyToFile) {
      await store.copyToFile(key, tmp);
      got = await sha256File(tmp);
    } else {
      got = await streamToFile(store, key, tmp);
    }
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  if (got.size !== expect.bytes || got.sha256 !== expect.sha256) {
    await fsp.rm(tmp, { force: true });
    throw new SwapRefused("checksum", `${key}: ${got.size} bytes with sha256 ${got.sha256.slice(0, 12)}…, manifest says ${expect.bytes} bytes ${expect.sha256.slice(0, 12)}… (corrupt or truncated)`);
  }
  // Several processes (`apfa serve --processes N`) share the cache directory and may fetch the same version at
  // once: the first verified copy stays in place (link fails if one exists) so every process opens, and
  // memory-maps, the same file rather than one whose inode another's rename replaced.
  try {
    await fsp.link(tmp, dest);
  } catch (err) {
    const st = (err as NodeJS.ErrnoException).code === "EEXIST" ? await fsp.stat(dest).catch(() => null) : null;
    if (!st || st.size !== expect.bytes) {
      await fsp.rename(tmp, dest); // no copy, or a stale one: replace it, as before
      return;
    }
  }
  await fsp.rm(tmp, { force: true });
}

/** Closes what a version holds open: the engine's searcher and the documents file. */
function closeLoaded(ix: LoadedIndex): void {
  ix.searcher.close().catch(() => {});
  ix.docs.close().catch(() => {});
}

export function createIndexHolder(opts: IndexHolderOptions) {
  const { store, log, metrics } = opts;
  let current: LoadedIndex | undefined;
  let chain: Promise<unknown> = Promise.resolve();
  const degraded = new Set<string>();
  let lastRefusal: { version: string; reason: string; message: string; at: string } | undefined;
  let lastAbort: { version: string; reason: string; at: string } | undefined;
  const pointerFile = path.join(opts.cacheDir, "current.json");
  /** Runs on a version opened to replace a serving one, before it serves (the app warms its answer cache). */
  let beforeServing: ((ix: LoadedIndex) => Promise<void>) | undefined;
  /** Swaps and prepares asked for and not finished: the one whose turn it is and those queued behind it. */
  let asked = 0;
  /** Counts a turn on the chain from when it is asked until it ends. */
  const counted = <T>(turn: () => Promise<T>): (() => Promise<T>) => {
    asked++;
    return () => turn().finally(() => asked--);
  };

  const retire = (ix: LoadedIndex) => {
    ix._retired = true;
    // One label per version would grow without bound across swaps.
    metrics?.byVersion.remove({ version: ix.version.slice(0, 16) });
    if (ix._refs === 0) closeLoaded(ix);
  };

  /** Validates a manifest against this server's embedder before anything is opened. */
  function check(m: Manifest, version: string): void {
    if (m.version !== version) throw new SwapRefused("manifest", `manifest of ${version} names version ${m.version}`);
    if (m.dims !== opts.embedder.dims) throw new SwapRefused("dims_mismatch", `version ${version.slice(0, 12)} has ${m.dims} dims; this server embeds queries with ${opts.embedder.dims}`);
    if (m.model_id !== opts.embedder.modelId) throw new SwapRefused("model_mismatch", `version ${version.slice(0, 12)} was embedded with ${m.model_id}; this server uses ${opts.embedder.modelId}`);
  }

  async function open(manifest: Manifest, dir: string, source: LoadSource, fetchMs: number): Promise<LoadedIndex> {
    const t0 = performance.now();
    const engine = await opts.engine(manifest.engine);
    // The documents file is scanned for its line offsets while the engine reads its file, not after it.
    const reading = openDocTable(path.join(dir, "docs.jsonl"), { sizeHint: manifest.count });
    reading.catch(() => {}); // awaited below; an engine failure must not leave it unhandled
    let searcher: Searcher;
    try {
      searcher = await engine.open(dir, { dims: manifest.dims, count: manifest.count });
    } catch (err) {
      reading.then((d) => d.close(), () => {});
      throw new SwapRefused("unreadable", `cannot open ${manifest.engine} index ${manifest.version.slice(0, 12)}: ${errorMessage(err)}`, err);
    }
    let docs: DocTable;
    try {
      docs = await reading;
    } catch (err) {
      await searcher.close();
      throw err;
    }
    if (docs.count !== manifest.count || searcher.count !== manifest.count) {
      await searcher.close();
      await docs.close();
      throw new SwapRefused("count_mismatch", `version ${manifest.version.slice(0, 12)}: ${searcher.count} vectors, ${docs.count} documents, manifest says ${manifest.count}`);
    }
    return { version: manifest.version, dir, manifest, searcher, docs, source, loadMs: performance.now() - t0, fetchMs, loadedAt: new Date(), _refs: 0, _retired: false };
  }

  /** Downloads (or reuses a verified local copy of) a version and opens it. */
  async function load(version: string): Promise<LoadedIndex> {
    const t0 = performance.now();
    const manifest = await readManifest(store, assertVersion(version)).catch((err) => {
      throw new SwapRefused("manifest", `cannot read manifest of ${version.slice(0, 12)}: ${errorMessage(err)}`, err);
    });
    check(manifest, version);
    const dir = path.join(opts.cacheDir, version);
    await fsp.mkdir(dir, { recursive: true });
    // One process fetches a version at a time; others sharing the cache directory wait, then reuse its files.
    const lock = await fetchLock(dir);
    let fetchedHere = 0;
    try {
      // The files are fetched together (one's reads overlap another's hashing); the first failure, in the
      // manifest's order, is reported once all have settled.
      const fetched = await Promise.allSettled(servingFiles(manifest).map(async ([name, expect]) => {
        const dest = path.join(dir, name);
        const st = await fsp.stat(dest).catch(() => null);
        // A file linked into place was verified when it was fetched; a size match is enough to reuse it.
        if (st && st.size === expect.bytes) return;
        await copyVerified(store, layout.indexFile(version, name), dest, expect);
        fetchedHere++;
      }));
      const failed = fetched.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
      await fsp.writeFile(path.join(dir, "manifest.json"), JSON.stringify(manifest));
    } finally {
      await lock.release();
    }
    if (lock.waitedMs > 100 || fetchedHere === 0) log.debug("version files fetched", { version, fetched: fetchedHere, waited_for_another_process_ms: Math.round(lock.waitedMs) });
    return open(manifest, dir, "store", performance.now() - t0);
  }

  function install(ix: LoadedIndex, reason: string): void {
    const old = current;
    current = ix;
    if (old) retire(old);
    metrics?.vectorCount.set(ix.manifest.count);
    metrics?.memoryBytes.set(ix.searcher.memoryBytes + ix.docs.bytes);
    metrics?.versionInfo.reset();
    metrics?.versionInfo.set({ version: ix.version, engine: ix.manifest.engine }, 1);
    metrics?.loadSeconds.set(ix.loadMs / 1000);
    metrics?.fetchSeconds.set(ix.fetchMs / 1000);
    metrics?.indexAge.set((Date.now() - Date.parse(ix.manifest.created_at)) / 1000);
    fs.writeFileSync(pointerFile, JSON.stringify({ version: ix.version }));
    log.info("index version serving", { version: ix.version, count: ix.manifest.count, engine: ix.manifest.engine, load_ms: Math.round(ix.loadMs), fetch_ms: Math.round(ix.fetchMs), source: ix.source, reason, previous: old?.version });
    pruneCache(ix.version, old?.version).catch(() => {});
  }

  async function pruneCache(keep: string, prev?: string): Promise<void> {
    for (const e of await fsp.readdir(opts.cacheDir, { withFileTypes: true })) {
      if (e.isDirectory() && e.name !== keep && e.name !== prev && /^[0-9a-f]{64}$/.test(e.name)) {
        // Another process sharing the cache may be fetching it (a later swap it was asked for).
        if (await fsp.stat(path.join(opts.cacheDir, e.name, FETCH_LOCK)).then(() => true, () => false)) continue;
        await fsp.rm(path.join(opts.cacheDir, e.name), { recursive: true, force: true });
      }
    }
  }

  /** Loads a version without serving it; a refusal is recorded (`last_refusal`, the swap metric) and thrown. */
  async function prepareNow(version: string, reason: string): Promise<PreparedSwap> {
    if (current?.version === version) return { version, reason };
    let index: LoadedIndex;
    try {
      index = await load(version);
    } catch (err) {
      refused(version, err);
      throw err;
    }
    // Only a swap: at start-up there is no traffic yet to have learnt from. Not when another swap is already
    // queued behind this one: the version would serve only until that one is ready, and under overload a warm-up
    // per queued version held every later swap back (the load suite: 3 of 10 swaps applied during a 30 s run
    // against 9 without warming). The hook bounds its own time, and its failure costs the warm-up, never the swap.
    if (current && beforeServing && asked <= 1) {
      await beforeServing(index).catch((err: unknown) => log.warn("warming the new version failed; it serves without", { version, error: errorMessage(err) }));
    }
    return { version, reason, index };
  }

  function refused(version: string, err: unknown): void {
    const why = err instanceof SwapRefused ? err.reason : "failed";
    lastRefusal = { version, reason: why, message: errorMessage(err), at: new Date().toISOString() };
    metrics?.swaps.inc({ outcome: err instanceof SwapRefused ? "refused" : "failed", reason: why });
    log.error("swap refused; previous version keeps serving", { version, reason: why, error: errorMessage(err), serving: current?.version });
  }

  /** Serves a prepared version (a no-op if it was already serving when prepared). */
  function commit(p: PreparedSwap): "swapped" | "unchanged" {
    if (!p.index || p.index === current) return "unchanged";
    install(p.index, p.reason);
    degraded.delete("store_unreachable");
    metrics?.swaps.inc({ outcome: "success", reason: "" });
    return "swapped";
  }

  /** Closes a prepared version that will not be served: the current one keeps serving. */
  function abort(p: PreparedSwap, why: { code: string; reason: string }): void {
    if (p.index && p.index !== current) closeLoaded(p.index);
    lastAbort = { version: p.version, reason: why.reason, at: new Date().toISOString() };
    metrics?.swaps.inc({ outcome: "aborted", reason: why.code });
    log.warn("swap aborted; previous version keeps serving", { version: p.version, code: why.code, reason: why.reason, serving: current?.version });
  }

  /** Serialised: at most one load at a time; a refused version leaves the current one serving. */
  function swapTo(version: string, reason: string): Promise<"swapped" | "unchanged" | "refused"> {
    const next = chain.then(counted(async () => {
      if (current?.version === version) return "unchanged" as const;
      // Don't re-download a refused version on every poll; an explicit event or a minute later tries again.
      if (lastRefusal?.version === version && reason === "poll" && Date.now() - Date.parse(lastRefusal.at) < 60_000) return "refused" as const;
      let prepared: PreparedSwap;
      try {
        prepared = await prepareNow(version, reason);
      } catch {
        return "refused" as const; // recorded and logged by prepareNow
      }
      try {
        return commit(prepared);
      } catch (err) {
        refused(version, err);
        return "refused" as const;
      }
    }));
    chain = next.catch(() => undefined);
    return next;
  }

  /**
   * The first half of a coordinated swap (`apfa serve --processes N`): downloads, verifies and opens `version`
   * in turn with other loads, but leaves the current one serving until `commit` (or `abort`) gets the handle.
   * `dropped` is asked when its turn comes: a round aborted while it waited (a newer version superseded it)
   * loads nothing, so frequent publishes do not queue a download and open per version.
   */
  function prepare(version: string, reason: string, dropped?: () => boolean): Promise<PreparedSwap> {
    const next = chain.then(counted(async () => (dropped?.() ? { version, reason } : prepareNow(version, reason))));
    chain = next.catch(() => undefined);
    return next;
  }

  async function checkLatest(reason: string): Promise<void> {
    let ptr;
    try {
      ptr = await readLatest(store);
      degraded.delete("store_unreachable");
    } catch (err) {
      degraded.add("store_unreachable");
      log.warn("cannot read latest from the store", { error: errorMessage(err), reason });
      return;
    }
    if (ptr) await (opts.request ?? swapTo)(ptr.version, reason);
  }

  /** Serves the local cache's version (`want` only if it is that one); false, with a warning, when it cannot. */
  async function fromLocalCache(want?: string): Promise<boolean> {
    try {
      const { version } = JSON.parse(await fsp.readFile(pointerFile, "utf8")) as { version: string };
      if (want && version !== want) return false;
      const dir = path.join(opts.cacheDir, assertVersion(version));
      const manifest = JSON.parse(await fsp.readFile(path.join(dir, "manifest.json"), "utf8")) as Manifest;
      check(manifest, version);
      install(await open(manifest, dir, "local-cache", 0), "startup (store unreachable)");
      return true;
    } catch (err) {
      log.warn("no usable local index cache", { error: errorMessage(err) });
      return false;
    }
  }

  return {
    current: () => current,
    acquire(): Lease | undefined {
      const ix = current;
      if (!ix) return undefined;
      ix._refs++;
      let done = false;
      return {
        index: ix,
        release() {
          if (done) return;
          done = true;
          ix._refs--;
          if (ix._retired && ix._refs === 0) closeLoaded(ix);
        },
      };
    },
    swapTo,
    prepare,
    commit,
    abort,
    checkLatest,
    /**
     * Sets what runs on each version opened to replace the serving one, after it opened and before it serves
     * (before `prepare` resolves, so a swap round's commit waits for it in every process).
     */
    beforeServing(fn: ((ix: LoadedIndex) => Promise<void>) | undefined): void {
      beforeServing = fn;
    },
    /** Loads the first index: `pinned` if given, else the store's latest, else the local cache, else a synchronous build. */
    async start(pinned?: string): Promise<LoadSource | undefined> {
      await fsp.mkdir(opts.cacheDir, { recursive: true });
      // Under --processes N a restarted process starts on the version the others serve, not on `latest`. One
      // the store does not hold (the first process's sync build, never published) is in the local cache it wrote:
      // loaded from there without a refusal logged and counted for a version that was never meant to be fetched.
      if (pinned) {
        const published = await store.stat(layout.indexFile(assertVersion(pinned), "manifest.json")).catch(() => undefined);
        if (published === null && (await fromLocalCache(pinned))) return "local-cache";
        if ((await swapTo(pinned, "startup")) === "swapped") return "store";
      }
      let ptr;
      let storeOk = true;
      try {
        ptr = await readLatest(store);
      } catch (err) {
        storeOk = false;
        degraded.add("store_unreachable");
        log.warn("store unreachable at start-up", { store: store.describe(), error: errorMessage(err) });
      }
      if (ptr && (await swapTo(ptr.version, "startup")) === "swapped") return "store";
      if (await fromLocalCache()) return "local-cache";
      if (opts.buildFromSource && (!storeOk || !ptr)) {
        log.warn(storeOk ? "no index published yet; building one synchronously from the source" : "store down and no local cache; building the index synchronously from the source");
        const t0 = performance.now();
        const built = await opts.buildFromSource();
        install(await open(built.manifest, built.dir, "sync-build", performance.now() - t0), "startup (sync build)");
        degraded.add("sync_build");
        return "sync-build";
      }
      return undefined;
    },
    status() {
      return {
        ready: Boolean(current),
        version: current?.version,
        count: current?.manifest.count,
        engine: current?.manifest.engine,
        /** The build's recall check (absent for exact engines): what was measured, against what target. */
        recall: current?.manifest.recall && (({ k, target, measured, met, sample, params, fallback, corpus, queries }) => ({ k, target, measured, met, sample, params, fallback, corpus, queries }))(current.manifest.recall),
        source: current?.source,
        load_ms: current ? Math.round(current.loadMs) : undefined,
        fetch_ms: current ? Math.round(current.fetchMs) : undefined,
        degraded: [...degraded, ...(current?.source === "local-cache" ? ["serving_local_cache"] : [])],
        last_refusal: lastRefusal,
        /** The last coordinated swap that was aborted in every process (`--processes N`). */
        last_abort: lastAbort,
      };
    },
    async close(): Promise<void> {
      await chain.catch(() => {});
      if (current) retire(current);
      current = undefined;
    },
  };
}

export type IndexHolder = ReturnType<typeof createIndexHolder>;
