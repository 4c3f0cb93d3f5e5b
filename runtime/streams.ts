/** Small helpers for byte streams shared by stores and sources. @module */

/** Concatenates chunks into one Uint8Array with a single allocation. */
export function concatBytes(chunks: Uint8Array[], total?: number): Uint8Array {
  const size = total ?? chunks.reduce((n, c) => n + c.byteLength, 0);
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

export async function collect(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const c of stream) chunks.push(c);
  return concatBytes(chunks);
}

/** Splits a byte stream into text lines (LF or CRLF), yielding each with its 1-based line number. */
export async function* lines(stream: AsyncIterable<Uint8Array>): AsyncIterable<{ line: string; n: number }> {
  const decoder = new TextDecoder("utf-8", { fatal: false });
  let buf = "";
  let n = 0;
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let start = 0;
    let i: number;
    while ((i = buf.indexOf("\n", start)) >= 0) {
      const raw = buf.slice(start, i);
      start = i + 1;
      n++;
      yield { line: raw.endsWith("\r") ? raw.slice(0, -1) : raw, n };
    }
    buf = buf.slice(start);
  }
  buf += decoder.decode();
  if (buf.length > 0) yield { line: buf.endsWith("\r") ? buf.slice(0, -1) : buf, n: n + 1 };
}
