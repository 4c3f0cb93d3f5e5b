/**
 * Loads pipeline.yaml in layers (built-in defaults → file → environment) and collects *every* problem with its
 * `file:line:col`, dotted path and a message that says what was expected — the list `apfa lint` prints.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Pair } from "yaml";
import type { z } from "zod";
import type { PluginKind } from "../contracts.ts";
import { errorMessage } from "../errors.ts";
import { loadPlugin } from "../plugins.ts";
import { interpolate, type Seg } from "./env-ref.ts";
import { DEFAULT_QUEUES, DEFAULT_SCHEDULES, pipelineSchema, STAGE_KINDS, TASK_QUEUES, type PipelineConfig } from "./schema.ts";

export type ProblemKind = "syntax" | "unknown" | "missing" | "type" | "value" | "env" | "plugin";

export interface Problem {
  file: string;
  line: number;
  col: number;
  /** Dotted path, e.g. `stages.embedder.options.batch_size` (empty for the document root). */
  path: string;
  kind: ProblemKind;
  message: string;
}

export interface LoadResult {
  config?: PipelineConfig;
  problems: Problem[];
}

/** `pipeline.yaml:LINE:COL  path  message`, the line format of `apfa lint`. */
export function formatProblem(p: Problem): string {
  return `${p.file}:${p.line}:${p.col}  ${p.path || "(root)"}  ${p.message}`;
}


/** Finds the YAML node for a path; `key: true` returns the key of the last segment instead of its value. */
type Ranged = { range?: readonly number[] | null };

function locate(doc: Document, segs: readonly Seg[], key = false): { range?: readonly number[] | null; exact: boolean } {
  let node: unknown = doc.contents;
  let last: Ranged = (node as Ranged | null) ?? {};
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i];
    if (isMap(node)) {
      const pair = (node.items as Pair[]).find((p) => (isScalar(p.key) ? p.key.value : p.key) === seg);
      if (!pair) return { range: last.range, exact: false };
      if (key && i === segs.length - 1) return { range: (pair.key as Ranged).range, exact: true };
      node = pair.value ?? pair.key;
    } else if (isSeq(node) && typeof seg === "number") {
      node = node.items[seg];
      if (!node) return { range: last.range, exact: false };
    } else {
      return { range: last.range, exact: false };
    }
    last = node as Ranged;
  }
  return { range: last.range, exact: true };
}

/** Walks a z.ZodType down a path to list the keys an object there allows. */
function allowedKeys(schema: z.ZodType, segs: readonly Seg[]): string[] | undefined {
  let s = unwrap(schema);
  for (const seg of segs) {
    const def = s._zod.def as { type: string; shape?: Record<string, z.ZodType>; valueType?: z.ZodType };
    if (def.type === "object" && def.shape && typeof seg === "string" && def.shape[seg]) s = unwrap(def.shape[seg]);
    else if (def.type === "record" && def.valueType) s = unwrap(def.valueType);
    else return undefined;
  }
  const def = s._zod.def as { type: string; shape?: Record<string, unknown> };
  return def.type === "object" && def.shape ? Object.keys(def.shape) : undefined;
}

function unwrap(s: z.ZodType): z.ZodType {
  for (;;) {
    const def = s._zod.def as { type: string; innerType?: z.ZodType; in?: z.ZodType };
    if (def.innerType) s = def.innerType;
    else if (def.type === "pipe" && def.in) s = def.in;
    else return s;
  }
}

function issueToProblem(
  issue: z.core.$ZodIssue,
  prefix: readonly Seg[],
  schema: z.ZodType,
  at: (segs: readonly Seg[], key?: boolean) => { file: string; line: number; col: number },
): Problem[] {
  const segs = [...prefix, ...(issue.path as Seg[])];
  if (issue.code === "unrecognized_keys") {
    const allowed = allowedKeys(schema, issue.path as Seg[]);
    return issue.keys.map((k) => ({
      ...at([...segs, k], true),
      path: [...segs, k].join("."),
      kind: "unknown" as const,
      message: `unknown key "${k}"${allowed ? `; allowed: ${allowed.filter((a) => a !== "$schema").join(", ")}` : ""}`,
    }));
  }
  let kind: ProblemKind = "value";
  let message = issue.message;
  if (issue.code === "invalid_type") {
    const received = (issue as { input?: unknown }).input;
    if (received === undefined) {
      kind = "missing";
      message = `missing required ${issue.expected}`;
    } else {
      kind = "type";
      message = `expected ${issue.expected}, got ${received === null ? "null" : Array.isArray(received) ? "array" : typeof received}`;
    }
  } else if (issue.code === "too_big" || issue.code === "too_small") {
    message = issue.message.replace(/^Too (big|small): expected (number|int) to (be|have) /, "must be ").replace(/^Too (big|small): /, "");
  } else if (issue.code === "invalid_key") {
    message = `invalid name "${String(segs.at(-1))}": ${issue.issues.map((i) => i.message).join("; ")}`;
  } else if (issue.code === "invalid_value") {
    message = `must be one of: ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  return [{ ...at(segs), path: segs.join("."), kind, message }];
}

/** Parses and validates a pipeline file (or the built-in defaults when `file` is undefined). */
export async function loadConfig(
  file: string | undefined,
  opts: { env?: Record<string, string | undefined>; checkPlugins?: boolean; text?: string } = {},
): Promise<LoadResult> {
  const env = opts.env ?? (process.env as Record<string, string | undefined>);
  const shown = file ? path.relative(process.cwd(), file) || file : "<defaults>";
  const baseDir = file ? path.dirname(path.resolve(file)) : process.cwd();
  let text = opts.text ?? "";
  if (file && opts.text === undefined) {
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (err) {
      return { problems: [{ file: shown, line: 1, col: 1, path: "", kind: "syntax", message: `cannot read file: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}` }] };
    }
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const pos = (offset: number | undefined) => {
    const p = lc.linePos(offset ?? 0);
    return { line: p.line, col: p.col };
  };
  const problems: Problem[] = [];
  const textLines = text.split("\n");
  for (const e of doc.errors) {
    const at = pos(e.pos[0]);
    // `{ url: ${X} }` is the usual way to hit this: in a flow mapping the `{` of `${` opens another mapping.
    const hint = textLines[at.line - 1]?.includes("${") ? ' (inside { } or [ ], quote values that use ${VAR}: url: "${DATABASE_URL}")' : "";
    problems.push({ file: shown, ...at, path: "", kind: "syntax", message: e.message.split("\n")[0] + hint });
  }
  if (problems.length) return { problems };

  const at = (segs: readonly Seg[], key = false) => ({ file: shown, ...pos(locate(doc, segs, key).range?.[0]) });
  let raw: unknown;
  try {
    raw = doc.toJS() ?? {};
  } catch (err) {
    // e.g. an alias whose anchor is missing: the parser accepts it, conversion does not.
    return { problems: [{ file: shown, line: 1, col: 1, path: "", kind: "syntax", message: errorMessage(err) }] };
  }
  if (typeof raw !== "object" || Array.isArray(raw)) {
    return { problems: [{ ...at([]), path: "", kind: "type", message: "expected a mapping at the top level" }] };
  }
  const input = interpolate(raw as Record<string, unknown>, env, [], (segs, name) =>
    problems.push({ ...at(segs), path: segs.join("."), kind: "env", message: `environment variable ${name} is not set; set it or write \${${name}:-default}` })) as Record<string, unknown>;

  // A default schedule named in the file is laid over its default, so `stats: { enabled: false }` is enough.
  const sched = input.schedules;
  if (sched && typeof sched === "object" && !Array.isArray(sched)) {
    for (const [name, def] of Object.entries(DEFAULT_SCHEDULES)) {
      const s = (sched as Record<string, unknown>)[name];
      if (s && typeof s === "object" && !Array.isArray(s)) (sched as Record<string, unknown>)[name] = { ...def, ...s };
    }
  }
  const parsed = pipelineSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(...issueToProblem(issue, [], pipelineSchema, at));
    // Plugin names and options are still checked so one lint run reports everything.
    if (opts.checkPlugins !== false) problems.push(...(await checkPlugins(stageRefs(input), baseDir, at)));
    return { problems: sortProblems(problems) };
  }

  const schedules: PipelineConfig["schedules"] = {};
  const userSchedules = parsed.data.schedules;
  for (const [name, def] of Object.entries(DEFAULT_SCHEDULES)) {
    if (!(name in userSchedules)) schedules[name] = { ...def, options: {}, overlap: "skip", enabled: true };
  }
  Object.assign(schedules, userSchedules);
  // Default queues stay unless the file names them, so `queues: {embedding: 8}` keeps indexing/maintenance.
  const queues = { ...DEFAULT_QUEUES, ...parsed.data.queues };
  const config: PipelineConfig = { ...parsed.data, queues, schedules, file: file ? path.resolve(file) : "<defaults>", baseDir };

  for (const [name, s] of Object.entries(userSchedules)) {
    if (s.queue && !(s.queue in queues)) {
      problems.push({ ...at(["schedules", name, "queue"]), path: `schedules.${name}.queue`, kind: "value", message: `queue "${s.queue}" is not declared; declared: ${Object.keys(queues).join(", ")}` });
    }
  }
  if (opts.checkPlugins !== false) problems.push(...(await checkPlugins(stageRefs(config), baseDir, at)));
  for (const q of new Set(Object.values(TASK_QUEUES))) {
    if (!(q in config.queues)) problems.push({ ...at(["queues"]), path: "queues", kind: "missing", message: `queue "${q}" is required by the runtime` });
  }
  return problems.length ? { problems: sortProblems(problems) } : { config, problems };
}

function sortProblems(ps: Problem[]): Problem[] {
  return ps.sort((a, b) => a.line - b.line || a.col - b.col);
}

type StageRef = { plugin: string; options: Record<string, unknown> };

/** The plugin references of a (possibly invalid) config, with missing stages at their defaults. */
function stageRefs(cfg: Record<string, unknown> | PipelineConfig): Array<[Seg[], PluginKind, StageRef]> {
  const defaults = pipelineSchema.parse({});
  const obj = (v: unknown) => (v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);
  const ref = (v: unknown, def: StageRef): StageRef | undefined => {
    if (v === undefined) return def;
    const o = obj(v);
    if (!o || (o.plugin !== undefined && typeof o.plugin !== "string") || (o.options !== undefined && !obj(o.options))) return undefined;
    return { plugin: (o.plugin as string | undefined) ?? def.plugin, options: (obj(o.options) ?? {}) };
  };
  const out: Array<[Seg[], PluginKind, StageRef]> = [];
  const store = ref(cfg.store, defaults.store);
  if (store) out.push([["store"], "store", store]);
  const stages = obj(cfg.stages) ?? {};
  for (const [s, kind] of Object.entries(STAGE_KINDS)) {
    const r = ref(stages[s], defaults.stages[s as keyof typeof STAGE_KINDS]);
    if (r) out.push([["stages", s], kind, r]);
  }
  return out;
}

async function checkPlugins(
  stages: Array<[Seg[], PluginKind, StageRef]>,
  baseDir: string,
  at: (segs: readonly Seg[], key?: boolean) => { file: string; line: number; col: number },
): Promise<Problem[]> {
  const problems: Problem[] = [];
  for (const [segs, kind, ref] of stages) {
    let def;
    try {
      def = await loadPlugin(kind, ref.plugin, baseDir);
    } catch (err) {
      problems.push({ ...at([...segs, "plugin"]), path: [...segs, "plugin"].join("."), kind: "plugin", message: errorMessage(err).replace(/^\[apfa\] /, "") });
      continue;
    }
    const r = def.options.safeParse(ref.options ?? {}, { reportInput: true });
    if (!r.success) {
      for (const issue of r.error.issues) problems.push(...issueToProblem(issue, [...segs, "options"], def.options, at));
    } else {
      // Validated options (with the plugin's defaults applied) replace the raw ones.
      ref.options = r.data as Record<string, unknown>;
    }
  }
  return problems;
}
