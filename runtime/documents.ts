/**
 * The rules for bad documents, applied by the orchestrator as it reads the source (so duplicate ids are found
 * across the whole run). Each rule skips the record with a reason that is counted in the run's stats:
 *
 * - `malformed`: the source could not parse the record (bad JSON line, bad CSV row).
 * - `missing_id`: no id, or an empty one. `invalid_id`: an id that is not a string or finite number, or longer
 *   than 512 characters.
 * - `non_string_text`: text is not a string. `empty_text`: text is empty or whitespace only.
 * - `duplicate_id`: the id was already seen in this run; the first occurrence wins.
 *
 * Over-long text is not skipped: the embedder truncates it to its `maxChars` and the run counts it as truncated.
 * @module
 */
import { isMalformed, type SourceItem } from "./contracts.ts";

export type SkipReason = "malformed" | "missing_id" | "invalid_id" | "non_string_text" | "empty_text" | "duplicate_id";

export interface Doc {
  id: string;
  text: string;
  metadata: Record<string, unknown>;
}

export interface Skip {
  reason: SkipReason;
  location?: string;
  id?: string;
  detail?: string;
}

const MAX_ID = 512;

/** Validates one source item; `seen` holds ids already accepted in this run. */
export function checkItem(item: SourceItem, seen: Set<string>): Doc | Skip {
  if (isMalformed(item)) return { reason: "malformed", location: item.location, detail: item.malformed };
  const { id, text, location } = item;
  if (id === undefined || id === null || id === "") return { reason: "missing_id", location };
  if (!(typeof id === "string" || (typeof id === "number" && Number.isFinite(id)))) {
    return { reason: "invalid_id", location, detail: `id is ${Array.isArray(id) ? "array" : typeof id}` };
  }
  const sid = String(id);
  if (sid.length > MAX_ID) return { reason: "invalid_id", location, detail: `id longer than ${MAX_ID} characters` };
  if (typeof text !== "string") return { reason: "non_string_text", location, id: sid, detail: `text is ${text === null ? "null" : Array.isArray(text) ? "array" : typeof text}` };
  if (text.trim() === "") return { reason: "empty_text", location, id: sid };
  if (seen.has(sid)) return { reason: "duplicate_id", location, id: sid };
  seen.add(sid);
  const md = item.metadata;
  return { id: sid, text, metadata: md && typeof md === "object" && !Array.isArray(md) ? md : {} };
}

export function isSkip(x: Doc | Skip): x is Skip {
  return (x as Skip).reason !== undefined;
}
