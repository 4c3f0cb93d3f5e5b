/**
 * Reads the `server.host` and `server.auth` values out of pipeline.yaml text without a YAML parser, for
 * `apfa token`'s quick path. It understands only the plain block style (`key: value` lines, `[a, b]` and
 * `- item` lists, quoted or plain scalars) and gives up on anything else. It is never trusted alone: the
 * quick path uses it only on file bytes for which the full loader, with the `yaml` package, found the same
 * values (see runtime/commands/token.ts), so a case it reads wrongly just keeps that file on the full path.
 * No imports: the quick path must stay cheap to load.
 * @module
 */

/** `server.auth` defaults that apply before a token is signed; the schema (schema.ts) uses the same ones. */
export const AUTH_DEFAULTS = { mode: "jwt", clock_tolerance_s: 30 } as const;
/** `server.host` default, shared with the schema. */
export const DEFAULT_HOST = "127.0.0.1";

/** The raw (not yet `${VAR}`-expanded) `server.host` and `server.auth`, as YAML would give them. */
export interface AuthBlock {
  host?: unknown;
  auth?: Record<string, unknown>;
}

interface Line {
  indent: number;
  text: string;
}

const KEY = /^([A-Za-z_][A-Za-z0-9_]*):(?:[ \t]+(.*))?$/;

/** The two values, or undefined when the text uses YAML this reader does not follow. */
export function readAuthBlock(text: string): AuthBlock | undefined {
  const lines: Line[] = [];
  for (const raw of text.split(/\r?\n/)) {
    if (/^\s*(#.*)?$/.test(raw)) continue;
    if (/^\t| \t/.test(raw) || /^(---|\.\.\.|%)/.test(raw)) return undefined;
    const body = raw.trimStart();
    lines.push({ indent: raw.length - body.length, text: body });
  }
  const server = block(lines, 0, "server");
  if (server === null) return undefined;
  if (server === undefined) return {};
  const host = server.find((l) => l.indent === server[0].indent && l.text.startsWith("host:"));
  const out: AuthBlock = {};
  if (host) {
    const v = scalarAfterKey(host.text);
    if (v === undefined) return undefined;
    out.host = v.value;
  }
  const auth = block(server, server[0].indent, "auth");
  if (auth === null) return undefined;
  if (auth === undefined) return out;
  const values: Record<string, unknown> = {};
  const ind = auth[0].indent;
  for (let i = 0; i < auth.length; i++) {
    const l = auth[i];
    if (l.indent !== ind) return undefined;
    const m = KEY.exec(l.text);
    if (!m || m[1] in values) return undefined;
    if (m[2] === undefined || m[2].startsWith("#")) {
      // A block list: `- item` lines indented under the key (or level with it, as YAML allows).
      const items: unknown[] = [];
      while (i + 1 < auth.length && auth[i + 1].text.startsWith("- ") && auth[i + 1].indent >= ind) {
        const v = scalar(auth[++i].text.slice(2).trim());
        if (v === undefined) return undefined;
        items.push(v.value);
      }
      if (!items.length) return undefined;
      values[m[1]] = items;
      continue;
    }
    const v = m[2].startsWith("[") ? flowList(m[2]) : scalar(m[2]);
    if (v === undefined) return undefined;
    values[m[1]] = v.value;
  }
  out.auth = values;
  return out;
}

/**
 * The lines of the block under `key` at `indent` (found among lines at exactly that indent), undefined if the
 * key is absent, null if it is there in a form this reader does not follow (a value on the same line).
 */
function block(lines: Line[], indent: number, key: string): Line[] | undefined | null {
  const start = lines.findIndex((l) => l.indent === indent && (l.text === `${key}:` || l.text.startsWith(`${key}:`)));
  if (start < 0) return undefined;
  const rest = lines[start].text.slice(key.length + 1).trim();
  if (rest !== "" && !rest.startsWith("#")) return null;
  const out: Line[] = [];
  for (let i = start + 1; i < lines.length && lines[i].indent > indent; i++) out.push(lines[i]);
  return out.length ? out : null;
}

function scalarAfterKey(text: string): { value: unknown } | undefined {
  const m = KEY.exec(text);
  return m && m[2] !== undefined ? scalar(m[2]) : undefined;
}

function flowList(s: string): { value: unknown[] } | undefined {
  const m = /^\[([^\[\]{}"'#]*)\][ \t]*(#.*)?$/.exec(s);
  if (!m) return undefined;
  const parts = m[1].split(",").map((p) => p.trim());
  if (parts.at(-1) === "") parts.pop();
  const items: unknown[] = [];
  for (const p of parts) {
    const v = scalar(p);
    if (!p || v === undefined) return undefined;
    items.push(v.value);
  }
  return { value: items };
}

/** One scalar as YAML 1.2's core schema reads it, or undefined for anything unusual (tags, anchors, escapes). */
function scalar(s: string): { value: unknown } | undefined {
  if (s.startsWith("'")) {
    const m = /^'((?:[^']|'')*)'[ \t]*(#.*)?$/.exec(s);
    return m ? { value: m[1].replace(/''/g, "'") } : undefined;
  }
  if (s.startsWith('"')) {
    const m = /^"([^"\\]*)"[ \t]*(#.*)?$/.exec(s);
    return m ? { value: m[1] } : undefined;
  }
  const plain = s.replace(/[ \t]+#.*$/, "").trimEnd();
  // `-`, `?` and `:` start a plain scalar only when a non-space follows (`-U-A0E…` is a string; `- x` a list).
  if (plain === "" || /^[&*!|>@`%{}\[\],]|^[-?:](\s|$)/.test(plain) || /: |#/.test(plain)) return undefined;
  if (/^(null|Null|NULL|~)$/.test(plain)) return { value: null };
  if (/^(true|True|TRUE|false|False|FALSE)$/.test(plain)) return { value: /^t/i.test(plain) };
  if (/^[-+]?(\d+|\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?$/.test(plain)) return { value: Number(plain) };
  if (/^(0x[0-9a-f]+|0o[0-7]+|[-+]?\.inf|\.nan)$/i.test(plain)) return undefined; // numbers this reader leaves to YAML
  return { value: plain };
}
