/**
 * The documents of a served version, read from `docs.jsonl` on demand. Opening scans the file once in chunks and
 * keeps only where each line starts and how long it is (12 bytes a document); a document is read with one
 * positioned read when a search returns it. The file's pages live in the OS page cache, which every server
 * process (`apfa serve --processes N`) shares, so N processes hold N copies of the offsets, not of the file.
 * @module
 */
import { Buffer } from "node:buffer";
import * as fsp from "node:fs/promises";
import { ApfaError, errorMessage } from "../runtime/errors.ts";

export interface DocTable {
  count: number;
  /** Bytes held in this process's heap (the line offsets); the file itself is read on demand. */
  bytes: number;
  /** Size of `docs.jsonl`. */
  fileBytes: number;
  /** The JSON line of row `row`. */
  get(row: number): Promise<string>;
  /** The JSON lines of `rows`, in that order; neighbouring lines are read together. */
  getMany(rows: ArrayLike<number>): Promise<string[]>;
  /** True once `close` was called. */
  readonly closed: boolean;
  /** Closes the file; a later `get` throws. Idempotent. */
  close(): Promise<void>;
}

export interface DocTableOptions {
  /** Bytes read per step of the opening scan. @default 1 MiB */
  chunkBytes?: number;
  /** Expected number of documents (the manifest's count): sizes the offset arrays once. */
  sizeHint?: number;
}

/** Lines closer than this are read with one read by `getMany`. */
const GAP_BYTES = 16 * 1024;
/** Upper bound of one coalesced read. */
const READ_MAX = 4 * 1024 * 1024;

const fail = (file: string, message: string, cause?: unknown) => new ApfaError("index", `${file}: ${message}`, { cause, where: "docs" });

/** Opens `file` (JSON lines; blank lines and CRs are skipped) and records where each line is. */
export async function openDocTable(file: string, opts: DocTableOptions = {}): Promise<DocTable> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, "r");
  } catch (err) {
    throw fail(file, `cannot open: ${errorMessage(err)}`, err);
  }
  try {
    return await scan(file, fh, opts);
  } catch (err) {
    await fh.close().catch(() => {});
    throw err instanceof ApfaError ? err : fail(file, `cannot read: ${errorMessage(err)}`, err);
  }
}

async function scan(file: string, fh: fsp.FileHandle, opts: DocTableOptions): Promise<DocTable> {
  const size = (await fh.stat()).size;
  let cap = Math.max(16, opts.sizeHint ?? 1024);
  let starts = new Float64Array(cap);
  let lengths = new Uint32Array(cap);
  let count = 0;
  const push = (start: number, end: number) => {
    if (end > start && count === cap) {
      cap *= 2;
      const s = new Float64Array(cap);
      s.set(starts);
      starts = s;
      const l = new Uint32Array(cap);
      l.set(lengths);
      lengths = l;
    }
    if (end > start) {
      starts[count] = start;
      lengths[count++] = end - start;
    }
  };

  const buf = Buffer.allocUnsafe(Math.max(64, opts.chunkBytes ?? 1024 * 1024));
  let lineStart = 0; // file offset of the current line
  let cr = false; // the byte before the current position was a CR
  let pos = 0;
  while (pos < size) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
    if (bytesRead === 0) throw fail(file, `ends at ${pos} bytes, expected ${size} (truncated while opening)`);
    let i = 0;
    while (i < bytesRead) {
      const nl = buf.indexOf(10, i);
      if (nl < 0 || nl >= bytesRead) break;
      const prevCr = nl > 0 ? buf[nl - 1] === 13 : cr;
      const end = pos + nl;
      push(lineStart, prevCr && end > lineStart ? end - 1 : end);
      lineStart = end + 1;
      i = nl + 1;
    }
    cr = buf[bytesRead - 1] === 13;
    pos += bytesRead;
  }
  push(lineStart, cr && size > lineStart ? size - 1 : size); // a last line without a newline
  if (count < cap) {
    starts = starts.slice(0, count);
    lengths = lengths.slice(0, count);
  }
  return docTableOn(file, fh, size, starts, lengths);
}

function docTableOn(file: string, fh: fsp.FileHandle, size: number, starts: Float64Array, lengths: Uint32Array): DocTable {
  const count = starts.length;
  let closed = false;
  let closing: Promise<void> | undefined;

  const check = (row: number) => {
    if (closed) throw fail(file, `read of row ${row} after the document table was closed (its index version was released)`);
    if (!(Number.isInteger(row) && row >= 0 && row < count)) throw fail(file, `document row ${row} out of range 0-${count - 1}`);
  };

  /** Reads [from, to) plus the byte after it, which must end the last line (or be the file's end). */
  async function readSpan(from: number, to: number): Promise<Buffer> {
    const want = Math.min(to + 1, size) - from;
    const out = Buffer.allocUnsafe(want);
    let got = 0;
    try {
      while (got < want) {
        const { bytesRead } = await fh.read(out, got, want - got, from + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    } catch (err) {
      if (closed) throw fail(file, "the document table was closed during a read", err);
      throw fail(file, `cannot read: ${errorMessage(err)}`, err);
    }
    if (got < want) throw fail(file, `shorter than when it was opened (${size} bytes): truncated or replaced`);
    if (to < size && out[want - 1] !== 10 && out[want - 1] !== 13) throw fail(file, `changed since it was opened: no line end at byte ${to}`);
    return out;
  }

  async function getMany(rows: ArrayLike<number>): Promise<string[]> {
    for (let i = 0; i < rows.length; i++) check(rows[i]);
    const order = Array.from({ length: rows.length }, (_, i) => i).sort((a, b) => starts[rows[a]] - starts[rows[b]]);
    const out = new Array<string>(rows.length);
    const reads: Promise<void>[] = [];
    for (let i = 0; i < order.length;) {
      const first = starts[rows[order[i]]];
      let last = first + lengths[rows[order[i]]];
      let j = i + 1;
      for (; j < order.length; j++) {
        const r = rows[order[j]];
        const end = Math.max(last, starts[r] + lengths[r]);
        if (starts[r] - last > GAP_BYTES || end - first > READ_MAX) break;
        last = end;
      }
      const group = order.slice(i, j);
      reads.push(
        readSpan(first, last).then((b) => {
          for (const k of group) {
            const r = rows[k];
            const off = starts[r] - first;
            out[k] = b.toString("utf8", off, off + lengths[r]);
          }
        }),
      );
      i = j;
    }
    await Promise.all(reads);
    return out;
  }

  return {
    count,
    bytes: starts.byteLength + lengths.byteLength,
    fileBytes: size,
    get closed() {
      return closed;
    },
    async get(row) {
      check(row);
      const b = await readSpan(starts[row], starts[row] + lengths[row]);
      return b.toString("utf8", 0, lengths[row]);
    },
    getMany,
    close() {
      closed = true;
      closing ??= fh.close().catch(() => {});
      return closing;
    },
  };
}
