/**
 * Reading index-sized files (hundreds of MB) into memory that is searched right after.
 * @module
 */
import { Buffer } from "node:buffer";
import type { FileHandle } from "node:fs/promises";

/** Size of the one reused read buffer; small enough to stay in cache between the read and the copy. */
const CHUNK = 1 << 20;

/**
 * `length` bytes of `fh` from `position`, in a fresh unpooled Buffer (its ArrayBuffer starts at the data, so a
 * Float32Array over it is aligned). The bytes go through one reused 1 MiB buffer and are copied into place by
 * user code rather than read straight into it: on the benchmark machine (a VM) a large buffer filled by the
 * kernel faulted every page again when it was first read (a 100k×384 index's first search took ~0.7 s more),
 * and the extra copy from a cached chunk costs far less than that.
 */
export async function readRange(fh: FileHandle, position: number, length: number, what: string): Promise<Buffer> {
  const out = Buffer.allocUnsafeSlow(length);
  const chunk = Buffer.allocUnsafeSlow(Math.min(CHUNK, length));
  for (let done = 0; done < length;) {
    const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.byteLength, length - done), position + done);
    if (bytesRead === 0) throw new Error(`${what} ended after ${done} of ${length} bytes (it shrank while being read)`);
    chunk.copy(out, done, 0, bytesRead);
    done += bytesRead;
  }
  return out;
}
