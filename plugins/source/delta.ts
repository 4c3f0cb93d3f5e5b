/**
 * `delta` source: a Delta Lake table (local directory or store prefix). The snapshot is rebuilt from the log:
 * the newest complete checkpoint at or below the wanted version (classic `N.checkpoint.parquet` or multi-part),
 * then the JSON commits after it, applying `add`/`remove` by path. The live files are then read with the
 * parquet source's helpers, partition values added as columns. Unsupported table features (deletion vectors in
 * use, column mapping, V2 sidecars, unknown reader features) fail with a message saying so, rather than
 * yielding rows the table has deleted or renamed.
 * @module
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { z } from "zod";
import { definePlugin, type Logger, type Source, type Store } from "../../runtime/contracts.ts";
import { ApfaError, errorMessage, isApfaError } from "../../runtime/errors.ts";
import { assertKey } from "../../runtime/keys.ts";
import {
  columnNames, openLocalParquet, openStoreParquet, paginate, type ParquetFile, parquetRecords, parquetRowGroups,
  parquetSourceOptions, readFooter,
} from "./parquet.ts";

export const NAME = "delta";

export interface DeltaOptions {
  /** Table directory, relative to pipeline.yaml. Exactly one of `path` or `key`. */
  path?: string;
  /** Store prefix of the table (the folder holding `_delta_log/`). */
  key?: string;
  /** Column holding the document id. @default "id" */
  id_field: string;
  /** Column holding the text to embed. @default "text" */
  text_field: string;
  /** Columns to keep as metadata; all columns (and partition columns) when unset. */
  columns?: string[];
  /** Table version to read (time travel); the latest when unset. */
  version?: number;
}

const options = parquetSourceOptions.safeExtend({
  path: z.string().min(1).optional().describe("Table directory (holding _delta_log/), relative to pipeline.yaml"),
  key: z.string().min(1).optional().describe("Store prefix of the table (the folder holding _delta_log/)"),
  version: z.number().int().min(0).optional().describe("Table version to read (time travel); the latest when unset"),
});

/** Where a table's files live: a local directory or a store prefix. Paths are relative to the table root. */
export interface DeltaTableFiles {
  name: string;
  /** File names directly under `_delta_log/`. */
  listLog(): Promise<string[]>;
  /** Bytes of a file, or null when it does not exist. */
  read(rel: string): Promise<Uint8Array | null>;
  open(rel: string): Promise<ParquetFile>;
}

export function localTable(dir: string, name: string): DeltaTableFiles {
  const abs = (rel: string) => path.join(dir, ...rel.split("/"));
  return {
    name,
    async listLog() {
      try {
        return await fsp.readdir(path.join(dir, "_delta_log"));
      } catch (err) {
        throw new ApfaError("not_found", `no Delta table at ${name}: cannot list ${name}/_delta_log (${(err as NodeJS.ErrnoException).code})`, { cause: err });
      }
    },
    read: (rel) => fsp.readFile(abs(rel)).then((b) => new Uint8Array(b), (err) => {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }),
    open: (rel) => openLocalParquet(abs(rel), `${name}/${rel}`),
  };
}

export function storeTable(store: Store, prefix: string): DeltaTableFiles {
  const root = assertKey(prefix.replace(/\/+$/, ""));
  const key = (rel: string) => assertKey(`${root}/${rel}`);
  return {
    name: root,
    async listLog() {
      const names: string[] = [];
      for await (const st of store.list(`${root}/_delta_log/`)) {
        const rest = st.key.slice(root.length + "/_delta_log/".length);
        if (!rest.includes("/")) names.push(rest);
      }
      if (names.length === 0) throw new ApfaError("not_found", `no Delta table at ${store.describe()} ${root}: ${root}/_delta_log/ is empty or missing`);
      return names;
    },
    read: (rel) => store.get(key(rel)).catch((err) => (isApfaError(err, "not_found") ? null : Promise.reject(err))),
    open: (rel) => openStoreParquet(store, key(rel)),
  };
}

/** One live data file of a snapshot. */
export interface DeltaFile {
  /** Decoded path relative to the table root. */
  path: string;
  partitionValues: Record<string, string | null>;
  numRecords?: number;
  deletionVector?: unknown;
}

export interface DeltaSnapshot {
  version: number;
  /** Version of the checkpoint the snapshot started from, if any. */
  checkpoint?: number;
  files: DeltaFile[];
  metaData?: Record<string, unknown>;
  protocol?: Record<string, unknown>;
}

const COMMIT = /^(\d{20})\.json$/;
const CHECKPOINT = /^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$/;
const READER_FEATURES = new Set(["deletionVectors", "columnMapping", "timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "typeWidening"]);

type Action = Record<string, unknown>;
const obj = (v: unknown): Action | undefined => (v && typeof v === "object" && !Array.isArray(v) ? (v as Action) : undefined);

/** Delta paths are RFC 2396 URIs relative to the table root; absolute URIs and `..` would read outside it. */
function dataPath(raw: unknown, where: string): string {
  if (typeof raw !== "string" || raw === "") throw new ApfaError("invalid_input", `${where}: add/remove action without a path`);
  if (/^[a-z][a-z0-9+.-]*:/i.test(raw)) {
    throw new ApfaError("invalid_input", `${where}: data file ${raw} is an absolute URI; apfa reads only files under the table directory`);
  }
  let p: string;
  try {
    p = decodeURIComponent(raw);
  } catch {
    throw new ApfaError("invalid_input", `${where}: data file path ${raw} is not a valid URI`);
  }
  if (p.split("/").some((s) => s === ".." || s === "")) throw new ApfaError("invalid_input", `${where}: data file path ${raw} leaves the table directory`);
  return p;
}

/** Partition values arrive as an object from JSON and as a map (object or key/value list) from Parquet. */
function partitionValues(v: unknown): Record<string, string | null> {
  if (Array.isArray(v)) return Object.fromEntries(v.map((e) => [String((e as Action).key), ((e as Action).value ?? null) as string | null]));
  return (obj(v) ?? {}) as Record<string, string | null>;
}

function toFile(add: Action, where: string): DeltaFile {
  let numRecords: number | undefined;
  if (typeof add.stats === "string") {
    try {
      const n = (JSON.parse(add.stats) as Action).numRecords;
      if (typeof n === "number") numRecords = n;
    } catch {
      // stats are optional and only feed count(); a bad one just makes the count unknown
    }
  }
  const dv = add.deletionVector;
  return { path: dataPath(add.path, where), partitionValues: partitionValues(add.partitionValues), numRecords, ...(dv ? { deletionVector: dv } : {}) };
}

/** Rebuilds the snapshot at `version` (latest when undefined) from the newest usable checkpoint and later commits. */
export async function loadSnapshot(table: DeltaTableFiles, version?: number, log?: Logger): Promise<DeltaSnapshot> {
  const commits = new Set<number>();
  type Checkpoint = { single?: string; parts: Map<number, string>; total: number };
  const checkpoints = new Map<number, Checkpoint>();
  for (const name of await table.listLog()) {
    let m = COMMIT.exec(name);
    if (m) commits.add(Number(m[1]));
    else if ((m = CHECKPOINT.exec(name))) {
      const v = Number(m[1]);
      const cp: Checkpoint = checkpoints.get(v) ?? { parts: new Map(), total: 0 };
      if (m[2] === undefined) cp.single = name;
      else {
        cp.parts.set(Number(m[2]), name);
        cp.total = Number(m[3]);
      }
      checkpoints.set(v, cp);
    }
  }
  const complete = (v: number) => {
    const cp = checkpoints.get(v)!;
    return cp.single ? [cp.single] : cp.parts.size === cp.total ? [...cp.parts.keys()].sort((a, b) => a - b).map((k) => cp.parts.get(k)!) : undefined;
  };
  const all = [...commits, ...[...checkpoints.keys()].filter((v) => complete(v))];
  if (all.length === 0) throw new ApfaError("not_found", `no Delta table at ${table.name}: _delta_log/ has no commits or checkpoints`);
  const latest = Math.max(...all);
  const target = version ?? latest;
  if (target > latest) throw new ApfaError("config", `${table.name} has no version ${target}: the latest is ${latest}; lower the source option \`version\``);

  const lastRaw = await table.read("_delta_log/_last_checkpoint");
  if (lastRaw) {
    const last = parseJson(lastRaw, `${table.name}/_delta_log/_last_checkpoint`, 1);
    const v = Number(last.version);
    if (!Number.isInteger(v) || !checkpoints.has(v) || !complete(v)) {
      log?.warn("delta _last_checkpoint names a checkpoint that is missing or incomplete; using the log listing", { table: table.name, version: last.version });
    }
  }

  const cpVersion = [...checkpoints.keys()].filter((v) => v <= target && complete(v)).sort((a, b) => b - a)[0];
  for (let v = (cpVersion ?? -1) + 1; v <= target; v++) {
    if (!commits.has(v)) {
      throw new ApfaError("not_found", `${table.name}: cannot build version ${target}: _delta_log/${String(v).padStart(20, "0")}.json is missing and no checkpoint covers it (log cleaned up?)`);
    }
  }

  const live = new Map<string, Action>();
  const snap: DeltaSnapshot = { version: target, checkpoint: cpVersion, files: [] };
  const apply = (a: Action, where: string, inCheckpoint: boolean) => {
    const add = obj(a.add), remove = obj(a.remove);
    if (add) live.set(dataPath(add.path, where), add);
    else if (remove && !inCheckpoint) live.delete(dataPath(remove.path, where)); // a checkpoint's removes are tombstones
    else if (obj(a.metaData)) snap.metaData = obj(a.metaData);
    else if (obj(a.protocol)) snap.protocol = obj(a.protocol);
    else if (obj(a.sidecar)) throw new ApfaError("invalid_input", `${where}: V2 checkpoint sidecars are not supported by apfa's delta source`);
  };

  if (cpVersion !== undefined) {
    for (const name of complete(cpVersion)!) {
      const pf = await table.open(`_delta_log/${name}`);
      try {
        const meta = await readFooter(pf);
        const cols = columnNames(meta).filter((c) => ["add", "remove", "metaData", "protocol", "sidecar"].includes(c));
        for await (const rows of parquetRowGroups(pf, meta, cols)) for (const row of rows) apply(row, pf.name, true);
      } finally {
        await pf.close();
      }
    }
  }
  for (let v = (cpVersion ?? -1) + 1; v <= target; v++) {
    const name = `${String(v).padStart(20, "0")}.json`;
    const bytes = await table.read(`_delta_log/${name}`);
    if (!bytes) throw new ApfaError("not_found", `${table.name}/_delta_log/${name} disappeared while reading the log`);
    const text = new TextDecoder().decode(bytes).split("\n");
    text.forEach((line, k) => {
      if (line.trim()) apply(parseJson(line, `${table.name}/_delta_log/${name}`, k + 1), `${table.name}/_delta_log/${name}:${k + 1}`, false);
    });
  }
  checkProtocol(snap, table.name);
  snap.files = [...live.entries()].map(([p, add]) => ({ ...toFile(add, table.name), path: p }));
  log?.debug("delta snapshot", { table: table.name, version: target, checkpoint: cpVersion, files: snap.files.length });
  return snap;
}

function parseJson(input: string | Uint8Array, file: string, line: number): Action {
  const text = typeof input === "string" ? input : new TextDecoder().decode(input);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new ApfaError("invalid_input", `${file}:${line}: malformed JSON in the Delta log: ${errorMessage(err)}`, { cause: err });
  }
  if (!obj(v)) throw new ApfaError("invalid_input", `${file}:${line}: expected a JSON object in the Delta log`);
  return v as Action;
}

/** Refuses tables whose rows this reader would get wrong; features that only affect writers are fine. */
function checkProtocol(snap: DeltaSnapshot, name: string): void {
  const reader = Number(snap.protocol?.minReaderVersion ?? 1);
  if (reader > 3) throw new ApfaError("invalid_input", `${name} needs Delta reader version ${reader}; apfa's delta source reads versions 1-3`);
  const features = Array.isArray(snap.protocol?.readerFeatures) ? (snap.protocol.readerFeatures as string[]) : [];
  const unknown = features.filter((f) => !READER_FEATURES.has(f));
  if (unknown.length) throw new ApfaError("invalid_input", `${name} needs Delta reader feature(s) ${unknown.join(", ")}, which apfa's delta source does not support`);
  const mode = (obj(snap.metaData?.configuration) ?? {})["delta.columnMapping.mode"];
  if (mode !== undefined && mode !== null && mode !== "none") {
    throw new ApfaError("invalid_input", `${name} uses column mapping (mode ${String(mode)}), which apfa's delta source does not support`);
  }
}

export default definePlugin({
  kind: "source",
  name: NAME,
  description: "Delta Lake table: log replay with checkpoints and time travel, then its Parquet files",
  options,
  create(opts: DeltaOptions, ctx): Source {
    const log = ctx.log.child({ source: NAME });
    const table = (): DeltaTableFiles => {
      if (opts.path !== undefined) return localTable(path.resolve(ctx.baseDir, opts.path), opts.path.replace(/\/+$/, ""));
      if (!ctx.store) throw new ApfaError("config", "source option `key` needs a configured store");
      return storeTable(ctx.store, opts.key!);
    };
    /** The table version the last read saw. */
    let mark: string | undefined;
    const refuseDeletionVectors = (t: DeltaTableFiles, snap: DeltaSnapshot) => {
      const dv = snap.files.find((f) => f.deletionVector);
      if (dv) {
        throw new ApfaError("invalid_input", `${t.name}/${dv.path} has a deletion vector, which apfa's delta source does not support; purge them first (REORG TABLE ... APPLY (PURGE))`);
      }
    };
    async function* records(t: DeltaTableFiles, files: DeltaFile[]) {
      for (const f of files) {
        const pf = await t.open(f.path);
        try {
          yield* parquetRecords(pf, { ...opts, extra: f.partitionValues });
        } finally {
          await pf.close();
        }
      }
    }
    return {
      // From the `numRecords` stats writers put in add actions; unknown when a file lacks them.
      async count() {
        const { files } = await loadSnapshot(table(), opts.version, log);
        return files.every((f) => f.numRecords !== undefined) ? files.reduce((n, f) => n + f.numRecords!, 0) : undefined;
      },
      async *pages({ pageSize, signal }) {
        const t = table();
        const snap = await loadSnapshot(t, opts.version, log);
        refuseDeletionVectors(t, snap);
        yield* paginate(records(t, snap.files), pageSize, signal);
        mark = String(snap.version);
      },
      cursor: () => mark,
      /**
       * From the commit log: the rows of every data file live now that was not live at the cursor's version (a
       * file is immutable, so rows in files live then and now are unchanged), and the id column of every live file.
       * Undefined when the log no longer reaches back to that version.
       */
      async changes(since, { pageSize, signal }) {
        const from = Number(since);
        if (!/^\d+$/.test(since)) return undefined;
        const t = table();
        const now = await loadSnapshot(t, opts.version, log);
        if (now.version < from) return undefined;
        const then = await loadSnapshot(t, from, log).catch((err: unknown) => {
          log.info("delta log no longer reaches the last read version; reading the whole table", { since, error: errorMessage(err) });
          return undefined;
        });
        if (!then) return undefined;
        refuseDeletionVectors(t, now);
        // The id must be a data column to read it alone; a partition-column id needs the full read.
        if (now.files[0]) {
          const pf = await t.open(now.files[0].path);
          const cols = await readFooter(pf).then(columnNames).finally(() => pf.close());
          if (!cols.includes(opts.id_field)) return undefined;
        }
        const old = new Set(then.files.map((f) => f.path));
        const added = now.files.filter((f) => !old.has(f.path));
        return {
          pages: (async function* () {
            yield* paginate(records(t, added), pageSize, signal);
            mark = String(now.version);
          })(),
          ids: async function* () {
            for (const f of now.files) {
              const pf = await t.open(f.path);
              try {
                for await (const rows of parquetRowGroups(pf, await readFooter(pf), [opts.id_field])) yield rows.map((r) => r[opts.id_field]);
              } finally {
                await pf.close();
              }
            }
          },
          async get(ids) {
            const want = new Set(ids);
            const out = [];
            for await (const r of records(t, now.files)) if (want.has(String(r.id))) out.push(r);
            return out;
          },
        };
      },
    };
  },
});
