/**
 * Finds and loads stage plugins. Built-ins are derived from the folder (`plugins/<kind>/<name>.ts`), so adding
 * a plugin is adding a file. A user plugin is named in pipeline.yaml by path (`./plugins/my-source.ts`,
 * relative to pipeline.yaml) or by package name (`@acme/apfa-source-x`); its default export must be a
 * `definePlugin(...)` value of the right kind.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import type { PluginDefinition, PluginKind } from "./contracts.ts";
import { ApfaError, errorMessage } from "./errors.ts";

const PLUGINS_DIR = new URL("../plugins/", import.meta.url);
/** `.js` when this module runs compiled from dist/, `.ts` when the sources run (Deno, tsx, vitest). */
const EXT = import.meta.url.endsWith(".js") ? ".js" : ".ts";

/** True when `name` refers to a user plugin (a path or a package) rather than a built-in. */
export function isExternal(name: string): boolean {
  return name.startsWith(".") || name.startsWith("/") || name.includes("/") || name.startsWith("@") || name.startsWith("npm:");
}

/** Names of the built-in plugins of a kind, from the folder. */
export function builtinPlugins(kind: PluginKind): string[] {
  try {
    return fs
      .readdirSync(new URL(`${kind}/`, PLUGINS_DIR))
      .filter((f) => f.endsWith(EXT) && !f.startsWith("_") && !f.endsWith(`.test${EXT}`) && !f.endsWith(".d.ts"))
      .map((f) => f.slice(0, -EXT.length))
      .sort();
  } catch {
    return [];
  }
}

const cache = new Map<string, Promise<PluginDefinition>>();

/** Loads a plugin definition; `baseDir` resolves relative paths (the pipeline.yaml's directory). */
export function loadPlugin(kind: PluginKind, name: string, baseDir: string): Promise<PluginDefinition> {
  const id = `${kind}:${isExternal(name) && name.startsWith(".") ? path.resolve(baseDir, name) : name}`;
  let p = cache.get(id);
  if (!p) {
    p = importPlugin(kind, name, baseDir);
    cache.set(id, p);
    p.catch(() => cache.delete(id));
  }
  return p;
}

async function importPlugin(kind: PluginKind, name: string, baseDir: string): Promise<PluginDefinition> {
  let spec: string;
  if (!isExternal(name)) {
    const known = builtinPlugins(kind);
    if (!known.includes(name)) {
      throw new ApfaError("plugin", `unknown ${kind} plugin "${name}"; installed: ${known.join(", ") || "(none)"}; ` +
        `or give a path (./my-plugin.ts) or package name`);
    }
    spec = new URL(`${kind}/${name}${EXT}`, PLUGINS_DIR).href;
  } else if (name.startsWith(".") || name.startsWith("/")) {
    const file = path.resolve(baseDir, name);
    if (!fs.existsSync(file)) throw new ApfaError("plugin", `${kind} plugin file not found: ${name} (resolved to ${file})`);
    spec = pathToFileURL(file).href;
  } else {
    spec = name;
  }
  const failed = (err: unknown) => new ApfaError("plugin", `cannot load ${kind} plugin "${name}": ${errorMessage(err)}`, { cause: err });
  let mod: { default?: unknown };
  try {
    mod = await import(spec);
  } catch (err) {
    // Compiled apfa on Node has no TypeScript loader (ERR_UNKNOWN_FILE_EXTENSION); under tsx's global loader a
    // `.ts` file outside a `"type": "module"` package is taken for CommonJS and its ESM syntax then fails as a
    // require cycle. Either way tsx's scoped import loads the file as the author wrote it.
    const tsFailure = (err as { code?: string }).code === "ERR_UNKNOWN_FILE_EXTENSION" || /require\(\) ES Module .* in a cycle/.test(errorMessage(err));
    if (!/\.[cm]?ts$/.test(spec) || !tsFailure || "Deno" in globalThis) throw failed(err);
    mod = await importTypeScript(spec).catch((e: unknown) => {
      throw failed(e);
    });
  }
  // A module loaded as CommonJS carries its ESM default export one level down.
  const outer = mod.default as { create?: unknown; default?: unknown } | undefined;
  const def = (outer && typeof outer === "object" && !("create" in outer) && "default" in outer ? outer.default : outer) as PluginDefinition | undefined;
  if (!def || typeof def !== "object" || typeof def.create !== "function" || !def.options) {
    throw new ApfaError("plugin", `${kind} plugin "${name}" must default-export definePlugin({ kind, name, options, create })`);
  }
  if (typeof (def.options as { safeParse?: unknown }).safeParse !== "function") {
    throw new ApfaError("plugin", `${kind} plugin "${name}": \`options\` must be a zod schema (e.g. z.strictObject({ ... })), got ${Array.isArray(def.options) ? "an array" : typeof def.options}`);
  }
  if (def.identity !== undefined && typeof def.identity !== "function") {
    throw new ApfaError("plugin", `${kind} plugin "${name}": \`identity\` must be a function of the options`);
  }
  if (def.kind !== kind) {
    throw new ApfaError("plugin", `plugin "${name}" is a ${def.kind} plugin, but stage needs a ${kind} plugin`);
  }
  return def;
}

/** Node only (Deno runs TypeScript itself): tsx's `tsImport`, imported when first needed. */
async function importTypeScript(spec: string): Promise<{ default?: unknown }> {
  const { tsImport } = (await import("tsx/esm/api")) as { tsImport(spec: string, parent: string): Promise<{ default?: unknown }> };
  return tsImport(spec, import.meta.url);
}
