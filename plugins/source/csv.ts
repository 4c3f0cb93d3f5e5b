/**
 * `csv` source: RFC 4180 CSV (quoted fields with embedded delimiters, newlines and `""` quotes; CRLF or LF;
 * a UTF-8 BOM is skipped) with a header row naming the columns. The id and text columns become the record's
 * `id` and `text`, every other column goes to `metadata`; all values are strings, as in the file.
 * Parsing streams: only the record being parsed is held in memory. A row with the wrong number of fields, a
 * stray character after a closing quote or an unterminated quote is reported as malformed with
 * `file.csv:LINE` (the physical line where the record starts) and reading goes on.
 * @module
 */
import { z } from "zod";
import { definePlugin, type Source, type SourceItem } from "../../runtime/contracts.ts";
import { ApfaError } from "../../runtime/errors.ts";
import { fileSourceOptions, openInput, toRecord } from "./jsonl.ts";

export const NAME = "csv";

export interface CsvOptions {
  /** Local file, relative to pipeline.yaml. Exactly one of `path` or `key`. */
  path?: string;
  /** Object key in the configured store. */
  key?: string;
  /** Header column holding the document id. @default "id" */
  id_field: string;
  /** Header column holding the text to embed. @default "text" */
  text_field: string;
  /** Field separator, one character (`"\t"` for TSV). @default "," */
  delimiter: string;
  /** Longest record in characters; a longer one (usually an unterminated quote) is reported as malformed
   * and reading resumes on the next line, so a broken file never loads whole into memory. @default 1048576 */
  max_record_chars: number;
}

const options = fileSourceOptions.extend({
  delimiter: z.string().length(1).refine((d) => d !== '"' && d !== "\n" && d !== "\r", "the delimiter cannot be a quote or a newline")
    .default(",").describe("Field separator, one character (\"\\t\" for TSV)"),
  max_record_chars: z.number().int().min(16).default(1 << 20)
    .describe("Longest record in characters; longer ones are reported as malformed"),
});

/** One parsed record: its fields, the 1-based physical line it starts on, and why it is malformed, if it is. */
export interface CsvRow {
  fields: string[];
  line: number;
  error?: string;
}

/**
 * Streams CSV records out of a byte stream, in one batch per input chunk (an async hop per record would cost
 * more than the parsing). The buffer holds only the current record (from `rec` on), which is what lets an
 * unterminated quote be recovered from: the record is reported and parsing restarts on the line after the one
 * where it began.
 */
export async function* parseCsv(
  stream: AsyncIterable<Uint8Array>,
  opts: { delimiter?: string; maxRecordChars?: number } = {},
): AsyncIterable<CsvRow[]> {
  const delim = opts.delimiter ?? ",";
  const max = opts.maxRecordChars ?? 1 << 20;
  const decoder = new TextDecoder("utf-8"); // drops a leading BOM itself (ignoreBOM is false)
  let buf = "";
  let i = 0; // next char to look at
  let rec = 0; // where the current record starts in buf
  let line = 1; // physical line of buf[rec]
  let fields: string[] = [];
  let field = ""; // quoted-field text gathered so far
  let start = 0; // start of the plain field, or of the quoted segment being scanned
  let state: "field" | "plain" | "quoted" | "after" | "skip" = "field";
  let error: string | undefined;
  // Next newline / delimiter at or after the scan position (-1: none in the buffer), found with indexOf, which
  // is far faster than a char loop; reset when the buffer changes.
  let nextNl = -2;
  let nextDl = -2;

  const reset = (at: number) => {
    rec = i = at;
    fields = [];
    field = "";
    error = undefined;
    state = "field";
  };
  // Ends the record at `end` (exclusive, past its newline); a blank line yields nothing.
  const finish = (end: number): CsvRow | undefined => {
    const row: CsvRow = error ? { fields, line, error } : { fields, line };
    for (let k = buf.indexOf("\n", rec); k >= 0 && k < end; k = buf.indexOf("\n", k + 1)) line++;
    reset(end);
    return row.fields.length === 1 && row.fields[0] === "" && !row.error ? undefined : row;
  };
  // A runaway record: report it at its first line and resume parsing on the next line.
  const abandon = (why: string, final: boolean): CsvRow => {
    const row: CsvRow = { fields: [], line, error: why };
    nextNl = nextDl = -2; // the scan moves back, so the cached positions may skip a nearer match
    const nl = buf.indexOf("\n", rec);
    if (nl >= 0) {
      line++;
      reset(nl + 1);
    } else {
      reset(buf.length);
      if (!final) state = "skip";
    }
    return row;
  };

  function* scan(final: boolean): Generator<CsvRow> {
    for (;;) {
      if (state === "skip") {
        const nl = buf.indexOf("\n", i);
        if (nl < 0) return void (rec = i = buf.length);
        line++;
        reset(nl + 1);
      } else if (state === "field") {
        if (i >= buf.length) {
          if (final && fields.length > 0) {
            fields.push("");
            const row = finish(i);
            if (row) yield row;
          }
          return;
        }
        if (buf[i] === '"') {
          state = "quoted";
          field = "";
          start = ++i;
        } else {
          state = "plain";
          start = i;
        }
      } else if (state === "plain") {
        if (nextNl !== -1 && nextNl < i) nextNl = buf.indexOf("\n", i);
        if (nextDl !== -1 && nextDl < i) nextDl = buf.indexOf(delim, i);
        const j = Math.min(nextNl < 0 ? buf.length : nextNl, nextDl < 0 ? buf.length : nextDl);
        if (j >= buf.length && !final) return void (i = j);
        const eol = j >= buf.length || buf[j] === "\n";
        fields.push(buf.slice(start, eol && j > start && buf[j - 1] === "\r" ? j - 1 : j));
        if (!eol) {
          i = j + 1;
          state = "field";
        } else {
          const row = finish(Math.min(j + 1, buf.length));
          if (row) yield row;
          if (j >= buf.length) return;
        }
      } else if (state === "quoted") {
        const q = buf.indexOf('"', i);
        // A quote as the last buffered char may be the first half of "": wait for the next chunk.
        if (!final && (q < 0 || q + 1 >= buf.length)) return void (i = q < 0 ? buf.length : q);
        if (q < 0) {
          yield abandon("unterminated quoted field", final);
          continue;
        }
        field += buf.slice(start, q);
        if (buf[q + 1] === '"') {
          field += '"';
          i = start = q + 2;
        } else {
          i = q + 1;
          state = "after";
        }
      } else {
        // After a closing quote only a delimiter or the end of the line may follow.
        const c = i < buf.length ? buf[i] : undefined;
        if (!final && (c === undefined || (c === "\r" && i + 1 >= buf.length))) return;
        if (c === "\r" && (i + 1 >= buf.length || buf[i + 1] === "\n")) {
          i++;
        } else if (c === delim) {
          fields.push(field);
          state = "field";
          i++;
        } else if (c === "\n" || c === undefined) {
          fields.push(field);
          const row = finish(Math.min(i + 1, buf.length));
          if (row) yield row;
          if (c === undefined) return;
        } else {
          error ??= `unexpected ${JSON.stringify(c)} after a closing quote (a quote inside a field must be doubled: "")`;
          state = "plain";
          start = i;
        }
      }
    }
  }

  function* drain(final: boolean): Generator<CsvRow> {
    yield* scan(final);
    if (!final && state !== "skip" && buf.length - rec > max) {
      yield abandon(`record longer than max_record_chars (${max}); usually an unterminated quote`, false);
      yield* drain(false);
    }
  }

  // Before each chunk, drop what finished records used so the buffer holds the current record only.
  const compact = (text: string) => {
    buf = buf.slice(rec) + text;
    i -= rec;
    start -= rec;
    rec = 0;
    nextNl = nextDl = -2;
  };
  for await (const chunk of stream) {
    compact(decoder.decode(chunk, { stream: true }));
    const batch = [...drain(false)];
    if (batch.length) yield batch;
  }
  compact(decoder.decode());
  const batch = [...drain(true)];
  if (batch.length) yield batch;
}

export default definePlugin({
  kind: "source",
  name: NAME,
  description: "CSV file with a header row (RFC 4180; local path or store key)",
  options,
  create(opts: CsvOptions, ctx): Source {
    return {
      async *pages({ pageSize, signal }) {
        const { name, stream } = await openInput(opts, ctx);
        let header: string[] | undefined;
        let page: SourceItem[] = [];
        for await (const row of rows(stream, opts)) {
          if (signal?.aborted) break;
          const location = `${name}:${row.line}`;
          if (!header) {
            header = checkHeader(row, name, opts);
            continue;
          }
          if (row.error) page.push({ malformed: row.error, location });
          else if (row.fields.length !== header.length) {
            page.push({ malformed: `expected ${header.length} fields as in the header, got ${row.fields.length}`, location });
          } else {
            const obj: Record<string, unknown> = {};
            header.forEach((h, k) => (obj[h] = row.fields[k]));
            page.push(toRecord(obj, opts.id_field, opts.text_field, location));
          }
          if (page.length >= pageSize) {
            yield page;
            page = [];
          }
        }
        if (page.length) yield page;
      },
    };
  },
});

async function* rows(stream: AsyncIterable<Uint8Array>, opts: CsvOptions): AsyncIterable<CsvRow> {
  for await (const batch of parseCsv(stream, { delimiter: opts.delimiter, maxRecordChars: opts.max_record_chars })) yield* batch;
}

/** A bad header makes every row meaningless, so it fails the run instead of being skipped. */
function checkHeader(row: CsvRow, name: string, opts: CsvOptions): string[] {
  if (row.error) throw new ApfaError("invalid_input", `${name}:${row.line}: cannot parse the CSV header: ${row.error}`);
  const seen = new Set<string>();
  for (const h of row.fields) {
    if (seen.has(h)) throw new ApfaError("invalid_input", `${name}:${row.line}: the CSV header names column ${JSON.stringify(h)} twice`);
    seen.add(h);
  }
  for (const [opt, col] of [["id_field", opts.id_field], ["text_field", opts.text_field]] as const) {
    if (!seen.has(col)) {
      throw new ApfaError(
        "config",
        `${name}:${row.line}: the CSV header has no column ${JSON.stringify(col)} (columns: ${row.fields.join(", ")}); set the source option \`${opt}\``,
      );
    }
  }
  return row.fields;
}
