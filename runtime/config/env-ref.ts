/**
 * `${VAR}` / `${VAR:-default}` references in pipeline.yaml: expanded by the full loader (runtime/config/load.ts)
 * and by `apfa token`'s quick path (runtime/commands/token.ts), so both read a value the same way.
 * No imports: the quick path must stay cheap to load.
 * @module
 */

export type Seg = string | number;

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;
const WHOLE_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$/;

/** Replaces `${VAR}` / `${VAR:-default}` in every string; a whole-value reference keeps YAML scalar typing. */
export function interpolate(value: unknown, env: Record<string, string | undefined>, segs: Seg[], missing: (segs: Seg[], name: string) => void): unknown {
  if (typeof value === "string") {
    if (!value.includes("${")) return value;
    const whole = WHOLE_REF.exec(value);
    const out = value.replace(ENV_REF, (_m, name: string, def: string | undefined) => {
      const v = env[name];
      if (v !== undefined && v !== "") return v;
      if (def !== undefined) return def;
      missing(segs, name);
      return "";
    });
    if (whole) {
      if (out === "") return undefined;
      if (/^-?\d+(\.\d+)?$/.test(out)) return Number(out);
      if (out === "true" || out === "false") return out === "true";
    }
    return out;
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, [...segs, i], missing));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env, [...segs, k], missing)]));
  }
  return value;
}

/**
 * Every variable name a text could reference, sorted and unique. It errs on the side of more: a reference
 * inside a comment is listed too, which only makes a cached check depend on one more value.
 */
export function envRefNames(text: string): string[] {
  return [...new Set([...text.matchAll(ENV_REF)].map((m) => m[1]))].sort();
}
