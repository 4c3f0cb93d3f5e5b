/**
 * NumPy `.npy` (format 1.0) for little-endian float32 matrices, so Python users can `np.load` batch artifacts.
 * Encoding writes a header and reuses the vector bytes; decoding returns a Float32Array view when aligned.
 * @module
 */
import { ApfaError } from "./errors.ts";

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** The header bytes for a `rows × cols` `<f4` C-order array (padded so the data starts 64-byte aligned). */
export function npyHeader(rows: number, cols: number): Uint8Array {
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64;
  dict = dict + " ".repeat(total - 10 - dict.length - 1) + "\n";
  const out = new Uint8Array(total);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, dict.length, true);
  out.set(new TextEncoder().encode(dict), 10);
  return out;
}

/** Header + data as two chunks (no copy of the vectors). */
export function encodeNpy(vectors: Float32Array, rows: number, cols: number): Uint8Array[] {
  if (vectors.length !== rows * cols) throw new ApfaError("internal", `npy: ${vectors.length} floats is not ${rows}×${cols}`);
  return [npyHeader(rows, cols), new Uint8Array(vectors.buffer, vectors.byteOffset, vectors.byteLength)];
}

/** Parses a `<f4` 2-D .npy file. Throws naming what is wrong for anything else. */
export function decodeNpy(bytes: Uint8Array, what = "npy"): { rows: number; cols: number; data: Float32Array } {
  if (bytes.byteLength < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw new ApfaError("invalid_input", `${what}: not a .npy file`);
  const major = bytes[6];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = (major === 1 ? 10 : 12) + hlen;
  const header = new TextDecoder().decode(bytes.subarray(major === 1 ? 10 : 12, start));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shape = /'shape':\s*\((\d+),\s*(\d+)\)/.exec(header);
  if (descr !== "<f4" || fortran !== "False" || !shape) {
    throw new ApfaError("invalid_input", `${what}: expected a 2-D little-endian float32 C-order array, header ${header.trim()}`);
  }
  const rows = Number(shape[1]);
  const cols = Number(shape[2]);
  const n = rows * cols;
  if (bytes.byteLength - start < n * 4) throw new ApfaError("invalid_input", `${what}: truncated (${bytes.byteLength - start} data bytes, need ${n * 4})`);
  const off = bytes.byteOffset + start;
  const data = off % 4 === 0
    ? new Float32Array(bytes.buffer, off, n)
    : new Float32Array(bytes.slice(start, start + n * 4).buffer);
  return { rows, cols, data };
}

/** L2-normalises each row in place; returns the indices of rows that were zero (left as zeros). */
export function normaliseRows(v: Float32Array, dims: number): { fixed: number; zero: number[] } {
  let fixed = 0;
  const zero: number[] = [];
  for (let r = 0, off = 0; off < v.length; r++, off += dims) {
    let s = 0;
    for (let i = off; i < off + dims; i++) s += v[i] * v[i];
    if (!(s > 0) || !Number.isFinite(s)) {
      zero.push(r);
      continue;
    }
    if (Math.abs(s - 1) > 1e-4) {
      const inv = 1 / Math.sqrt(s);
      for (let i = off; i < off + dims; i++) v[i] *= inv;
      fixed++;
    }
  }
  return { fixed, zero };
}
