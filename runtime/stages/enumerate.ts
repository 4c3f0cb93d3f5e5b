/**
 * Stage 1: read the source, apply the bad-document rules, and split the valid documents into those whose vectors
 * the base version already holds (same id, same embedded text) and those to embed, handed out in batches.
 * Documents of the base that the source no longer has are counted as removed; they are simply not carried over.
 * No database, no job API: the orchestrator task and the server's fallback build both call this.
 * @module
 */
import type { Source } from "../contracts.ts";
import { checkItem, isSkip, type Doc, type Skip } from "../documents.ts";
import type { BaseRows } from "./base.ts";
import { digest } from "./identity.ts";

const SAMPLE_LIMIT = 50;

/** A base row carried into the next version; `doc` is the new document line when only its metadata changed. */
export interface ReuseEntry {
  row: number;
  doc?: string;
}

export interface Enumeration {
  read: number;
  skipped: Record<string, number>;
  /** The first skipped records with their reasons and locations. */
  samples: Skip[];
  /** Batches handed to `onBatch`. */
  batches: number;
  toEmbed: number;
  reuse: ReuseEntry[];
  /** Documents to embed whose id the base has (their text changed). */
  changed: number;
  /** Base rows whose id the source no longer yields. */
  removed: number;
}

/** The document line a version serves (docs.jsonl) and whose SHA-256 decides whether a reused row is rewritten. */
export function docLine(d: Doc): string {
  return JSON.stringify({ id: d.id, text: d.text, metadata: d.metadata });
}

/** SHA-256 of the text the embedder sees: the first `maxChars` characters. */
export function textHash(text: string, maxChars: number): string {
  return digest(text.length > maxChars ? text.slice(0, maxChars) : text);
}

export async function enumerate(
  source: Source,
  opts: { batchSize: number; base?: BaseRows; onBatch(docs: Doc[], n: number): Promise<void> },
): Promise<Enumeration> {
  const { base, batchSize } = opts;
  const seen = new Set<string>();
  const out: Enumeration = { read: 0, skipped: {}, samples: [], batches: 0, toEmbed: 0, reuse: [], changed: 0, removed: 0 };
  const carried = base ? new Uint8Array(base.ids.length) : undefined;
  let batch: Doc[] = [];
  const flush = async () => {
    const docs = batch;
    batch = [];
    await opts.onBatch(docs, out.batches++);
  };
  for await (const page of source.pages({ pageSize: Math.min(batchSize, 10_000) })) {
    for (const item of page) {
      out.read++;
      const r = checkItem(item, seen);
      if (isSkip(r)) {
        out.skipped[r.reason] = (out.skipped[r.reason] ?? 0) + 1;
        if (out.samples.length < SAMPLE_LIMIT) out.samples.push(r);
        continue;
      }
      const row = base?.byId.get(r.id);
      if (row !== undefined && base && carried) {
        carried[row] = 1;
        if (base.textHashes[row] === textHash(r.text, base.maxChars)) {
          const line = docLine(r);
          out.reuse.push(digest(line) === base.docHashes[row] ? { row } : { row, doc: line });
          continue;
        }
        out.changed++;
      }
      out.toEmbed++;
      batch.push(r);
      if (batch.length >= batchSize) await flush();
    }
  }
  if (batch.length) await flush();
  if (carried) out.removed = carried.length - carried.reduce((a, b) => a + b, 0);
  return out;
}

/** The reuse list as stored between the orchestrator and the build: one JSON array per line. */
export function encodeReuse(entries: ReuseEntry[]): Uint8Array {
  return new TextEncoder().encode(entries.map((e) => JSON.stringify(e.doc === undefined ? [e.row] : [e.row, e.doc])).join("\n") + "\n");
}

export function decodeReuse(bytes: Uint8Array): ReuseEntry[] {
  const out: ReuseEntry[] = [];
  for (const line of new TextDecoder().decode(bytes).split("\n")) {
    if (!line) continue;
    const [row, doc] = JSON.parse(line) as [number, string?];
    out.push(doc === undefined ? { row } : { row, doc });
  }
  return out;
}
