/**
 * `parquet` source: one Parquet file, read with hyparquet one row group at a time, so memory holds the file
 * footer plus one row group. A local `path` is read through a file-backed AsyncBuffer (positional reads, the
 * file is never loaded whole); a store `key` is fetched whole into memory, because the Store contract has no
 * ranged reads. INT64 values become numbers (strings beyond 2^53) so records stay JSON-safe.
 * The helpers exported here are shared with the `delta` source.
 * @module
 */
import { Buffer } from "node:buffer";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { type AsyncBuffer, type FileMetaData, parquetMetadataAsync, parquetReadObjects, parquetSchema } from "hyparquet";
import { z } from "zod";
import { definePlugin, type Source, type SourceItem, type SourceRecord, type Store } from "../../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../../runtime/errors.ts";
import { fileSourceOptions, toRecord } from "./jsonl.ts";

export const NAME = "parquet";

export interface ParquetOptions {
  /** Local file, relative to pipeline.yaml. Exactly one of `path` or `key`. */
  path?: string;
  /** Object key in the configured store (fetched whole into memory). */
  key?: string;
  /** Column holding the document id. @default "id" */
  id_field: string;
  /** Column holding the text to embed. @default "text" */
  text_field: string;
  /** Columns to keep as metadata; all columns when unset. The id and text columns are always read. */
  columns?: string[];
}

/** Options shared by the parquet and delta sources. */
export const parquetSourceOptions = fileSourceOptions.extend({
  columns: z.array(z.string().min(1)).min(1).optional()
    .describe("Columns to keep as metadata (all when unset); the id and text columns are always read"),
});

/** An opened Parquet file; `close` releases the file handle, if any. */
export interface ParquetFile {
  name: string;
  file: AsyncBuffer;
  close(): Promise<void>;
}

/** A local file as an AsyncBuffer over one file handle, so only the byte ranges hyparquet asks for are read. */
export async function openLocalParquet(file: string, name: string): Promise<ParquetFile> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, "r");
  } catch (err) {
    throw new ApfaError("not_found", `cannot read ${name}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`, { cause: err });
  }
  const { size } = await fh.stat();
  return {
    name,
    file: {
      byteLength: size,
      async slice(start: number, end = size) {
        const out = new Uint8Array(Math.max(0, end - start));
        let off = 0;
        while (off < out.length) {
          const { bytesRead } = await fh.read(out, off, out.length - off, start + off);
          if (bytesRead === 0) break;
          off += bytesRead;
        }
        return out.buffer;
      },
    },
    close: () => fh.close(),
  };
}

/** A store object as an AsyncBuffer (whole object in memory). */
export async function openStoreParquet(store: Store, key: string): Promise<ParquetFile> {
  const bytes = await store.get(key);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  return { name: key, file: { byteLength: buffer.byteLength, slice: (s: number, e?: number) => buffer.slice(s, e) }, close: async () => {} };
}

/** Parses the footer, naming the file when it is not Parquet. */
export async function readFooter(pf: ParquetFile): Promise<FileMetaData> {
  try {
    return await parquetMetadataAsync(pf.file);
  } catch (err) {
    throw new ApfaError("invalid_input", `${pf.name} is not a readable Parquet file: ${errorMessage(err)}`, { cause: err });
  }
}

/** Top-level column names of a Parquet schema. */
export function columnNames(meta: FileMetaData): string[] {
  return parquetSchema(meta).children.map((c) => c.element.name);
}

/** Yields the rows of each row group in turn, as objects; `columns` limits what is decoded. */
export async function* parquetRowGroups(pf: ParquetFile, meta: FileMetaData, columns?: string[]): AsyncIterable<Record<string, unknown>[]> {
  let rowStart = 0;
  for (const [g, rg] of meta.row_groups.entries()) {
    const rowEnd = rowStart + Number(rg.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = await parquetReadObjects({ file: pf.file, metadata: meta, columns, rowStart, rowEnd });
    } catch (err) {
      throw new ApfaError("invalid_input", `${pf.name}: cannot decode row group ${g} (rows ${rowStart}-${rowEnd - 1}): ${errorMessage(err)}`, { cause: err });
    }
    yield rows;
    rowStart = rowEnd;
  }
}

/** Makes Parquet values JSON-safe: bigint → number (string past 2^53), bytes → base64; Dates stay. */
export function jsonSafe(v: unknown): unknown {
  if (typeof v === "bigint") return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (v && typeof v === "object" && !(v instanceof Date)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSafe(x)]));
  }
  return v;
}

/**
 * Records of one Parquet file, row group by row group. `extra` adds values not stored in the file (Delta
 * partition values). Throws a config error naming the file when the id or text column is missing.
 */
export async function* parquetRecords(
  pf: ParquetFile,
  opts: { id_field: string; text_field: string; columns?: string[]; extra?: Record<string, unknown> },
): AsyncIterable<SourceRecord> {
  const meta = await readFooter(pf);
  const have = columnNames(meta);
  const known = new Set([...have, ...Object.keys(opts.extra ?? {})]);
  for (const [opt, col] of [["id_field", opts.id_field], ["text_field", opts.text_field]] as const) {
    if (!known.has(col)) {
      throw new ApfaError("config", `${pf.name} has no column ${JSON.stringify(col)} (columns: ${[...known].join(", ")}); set the source option \`${opt}\``);
    }
  }
  const wanted = opts.columns ? [...new Set([opts.id_field, opts.text_field, ...opts.columns])] : undefined;
  const read = wanted?.filter((c) => have.includes(c));
  let n = 0;
  for await (const rows of parquetRowGroups(pf, meta, read)) {
    for (const row of rows) {
      n++;
      const obj = jsonSafe(opts.extra ? { ...row, ...opts.extra } : row) as Record<string, unknown>;
      if (wanted) for (const k of Object.keys(obj)) if (!wanted.includes(k)) delete obj[k];
      yield toRecord(obj, opts.id_field, opts.text_field, `${pf.name}:row ${n}`);
    }
  }
}

/** Rebuffers records into pages of `pageSize`. */
export async function* paginate<T = SourceItem>(items: AsyncIterable<T>, pageSize: number, signal?: AbortSignal): AsyncIterable<T[]> {
  let page: T[] = [];
  for await (const item of items) {
    if (signal?.aborted) return;
    page.push(item);
    if (page.length >= pageSize) {
      yield page;
      page = [];
    }
  }
  if (page.length) yield page;
}

export default definePlugin({
  kind: "source",
  name: NAME,
  description: "Parquet file, read one row group at a time (local path or store key)",
  options: parquetSourceOptions,
  create(opts: ParquetOptions, ctx): Source {
    const open = async (): Promise<ParquetFile> => {
      if (opts.path !== undefined) return openLocalParquet(path.resolve(ctx.baseDir, opts.path), opts.path);
      if (!ctx.store) throw new ApfaError("config", "source option `key` needs a configured store");
      return openStoreParquet(ctx.store, opts.key!);
    };
    return {
      // Reading the footer is cheap for a local file; a store object would have to be fetched whole.
      async count() {
        if (opts.path === undefined) return undefined;
        const pf = await open();
        try {
          return Number((await readFooter(pf)).num_rows);
        } finally {
          await pf.close();
        }
      },
      async *pages({ pageSize, signal }) {
        const pf = await open();
        try {
          yield* paginate(parquetRecords(pf, opts), pageSize, signal);
        } finally {
          await pf.close();
        }
      },
    };
  },
});
