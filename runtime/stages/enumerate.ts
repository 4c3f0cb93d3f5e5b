/**
 * Stage 1: read the source, apply the bad-document rules, and split the valid documents into those whose vectors
 * the base version already holds (same id, same embedded text) and those to embed, handed out in batches.
 * Documents of the base that the source no longer has are counted as removed; they are simply not carried over.
 *
 * With `since` (the cursor the base version was read at) and a source that implements `changes`, only the
 * records changed since are read, plus every current id: base rows whose id is still there and that did not
 * change are carried as they are, ids the run knows nothing of are fetched, and the outcome is the one a full
 * read would give. No database, no job API: the orchestrator task and the server's fallback build call this.
 * @module
 */
import type { Source, SourceItem } from "../contracts.ts";
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
  /** Base rows whose id the source no longer yields as a valid document. */
  removed: number;
  /** How the source was read: `full` or `changes since <cursor>`. */
  mode: string;
  /** The source's position after this read, for the next run's `since`. */
  cursor?: string;
}

export interface EnumerateOptions {
  batchSize: number;
  base?: BaseRows;
  /** The cursor the base version's source read ended at (same source settings). */
  since?: string;
  onBatch(docs: Doc[], n: number): Promise<void>;
}

/** The document line a version serves (docs.jsonl) and whose SHA-256 decides whether a reused row is rewritten. */
export function docLine(d: Doc): string {
  return JSON.stringify({ id: d.id, text: d.text, metadata: d.metadata });
}

/** SHA-256 of the text the embedder sees: the first `maxChars` characters. */
export function textHash(text: string, maxChars: number): string {
  return digest(text.length > maxChars ? text.slice(0, maxChars) : text);
}

/** Classifies items one by one; documents to embed wait in `pending` until the caller flushes them. */
function classifier(base: BaseRows | undefined) {
  const seen = new Set<string>();
  /** Ids the read has decided (valid or skipped), so a carried base row is never also re-read. */
  const handled = new Set<string>();
  const out: Enumeration = { read: 0, skipped: {}, samples: [], batches: 0, toEmbed: 0, reuse: [], changed: 0, removed: 0, mode: "full" };
  const carried = base ? new Uint8Array(base.ids.length) : undefined;
  const pending: Doc[] = [];
  return {
    out,
    pending,
    handled,
    carried,
    consider(item: SourceItem): void {
      out.read++;
      const r = checkItem(item, seen);
      if (isSkip(r)) {
        if (r.id !== undefined) handled.add(r.id);
        out.skipped[r.reason] = (out.skipped[r.reason] ?? 0) + 1;
        if (out.samples.length < SAMPLE_LIMIT) out.samples.push(r);
        return;
      }
      handled.add(r.id);
      const row = base?.byId.get(r.id);
      if (row !== undefined && base && carried) {
        carried[row] = 1;
        if (base.textHashes[row] === textHash(r.text, base.maxChars)) {
          const line = docLine(r);
          out.reuse.push(digest(line) === base.docHashes[row] ? { row } : { row, doc: line });
          return;
        }
        out.changed++;
      }
      out.toEmbed++;
      pending.push(r);
    },
  };
}

export async function enumerate(source: Source, opts: EnumerateOptions): Promise<Enumeration> {
  if (opts.base && opts.since !== undefined && source.changes) {
    const fast = await fromChanges(source, opts.base, opts.since, opts);
    if (fast) return fast;
  }
  const c = classifier(opts.base);
  const flush = async (all: boolean) => {
    while (c.pending.length >= opts.batchSize || (all && c.pending.length)) await opts.onBatch(c.pending.splice(0, opts.batchSize), c.out.batches++);
  };
  for await (const page of source.pages({ pageSize: Math.min(opts.batchSize, 10_000) })) {
    for (const item of page) c.consider(item);
    await flush(false);
  }
  await flush(true);
  if (c.carried) c.out.removed = c.carried.length - c.carried.reduce((a, b) => a + b, 0);
  c.out.cursor = source.cursor?.();
  return c.out;
}

/**
 * The changes read. Documents to embed are held until the read is complete (they are the changed few), so a
 * read that cannot be trusted hands out no batch and the caller reads everything instead.
 */
async function fromChanges(source: Source, base: BaseRows, since: string, opts: EnumerateOptions): Promise<Enumeration | undefined> {
  const changes = await source.changes!(since, { pageSize: Math.min(opts.batchSize, 10_000) });
  if (!changes) return undefined;
  const c = classifier(base);
  for await (const page of changes.pages) for (const item of page) c.consider(item);
  const unknown: string[] = [];
  for await (const ids of changes.ids()) {
    for (const raw of ids) {
      const id = String(raw);
      if (c.handled.has(id)) continue;
      const row = base.byId.get(id);
      if (row === undefined) unknown.push(id);
      else if (!c.carried![row]) {
        // Not changed since the base was read: the row, its vector and its document line stand as they are.
        c.carried![row] = 1;
        c.out.reuse.push({ row });
        c.handled.add(id);
      }
    }
  }
  // Ids the base never had but that did not change since (skipped before, or written with an old watermark).
  for (let i = 0; i < unknown.length; i += 1000) for (const item of await changes.get(unknown.slice(i, i + 1000))) c.consider(item);
  c.out.removed = c.carried!.length - c.carried!.reduce((a, b) => a + b, 0);
  c.out.mode = `changes since ${since}`;
  c.out.cursor = source.cursor?.() ?? since;
  for (let i = 0; i < c.pending.length; i += opts.batchSize) await opts.onBatch(c.pending.slice(i, i + opts.batchSize), c.out.batches++);
  return c.out;
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
