/**
 * The documents of a served version, kept as the raw bytes of `docs.jsonl` plus the offset of each line. Loading
 * is one read and a native newline scan — no UTF-8 decode of the whole file, no string per document — and a
 * document is decoded only when a search returns it.
 * @module
 */
import { Buffer } from "node:buffer";
import * as fsp from "node:fs/promises";

export interface DocTable {
  count: number;
  /** Bytes held (the file). */
  bytes: number;
  /** The JSON line of row `row`. */
  get(row: number): string;
}

export function docTable(data: Uint8Array): DocTable {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const starts: number[] = [];
  const ends: number[] = [];
  let pos = 0;
  while (pos < buf.length) {
    let nl = buf.indexOf(10, pos);
    if (nl < 0) nl = buf.length;
    let end = nl;
    if (end > pos && buf[end - 1] === 13) end--;
    if (end > pos) {
      starts.push(pos);
      ends.push(end);
    }
    pos = nl + 1;
  }
  const s = Float64Array.from(starts);
  const e = Float64Array.from(ends);
  return {
    count: s.length,
    bytes: buf.byteLength,
    get(row) {
      if (!(row >= 0 && row < s.length)) throw new RangeError(`document row ${row} out of range 0-${s.length - 1}`);
      return buf.toString("utf8", s[row], e[row]);
    },
  };
}

export async function loadDocTable(file: string): Promise<DocTable> {
  return docTable(await fsp.readFile(file));
}
