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
import { importPluginModule } from "./plugin-imports.ts";

const PLUGINS_DIR = new URL("../plugins/", import.meta.url);
/** `.js` when this module runs compiled from dist/, `.ts` when the sources run (Deno, tsx, vitest). */
const EXT = import.meta.url.endsWith(".js") ? ".js" : ".ts";

/**
 * True when `name` can only be a user plugin: a path or a scoped package. Any other name is a built-in when
 * one of that kind has it, else an (unscoped) package name — see {@link isUserPlugin}.
 */
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

/** True when `name` is not a built-in plugin of `kind` (a path, or a package name, scoped or not). */
export function isUserPlugin(kind: PluginKind, name: string): boolean {
  return isExternal(name) || !builtinPlugins(kind).includes(name);
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
  const known = builtinPlugins(kind);
  if (!isExternal(name) && known.includes(name)) {
    spec = new URL(`${kind}/${name}${EXT}`, PLUGINS_DIR).href;  } else if (name.startsWith(".") || name.startsWith("/")) {
    const file = path.resolve(baseDir, name);
    if (!fs.existsSync(file)) throw new ApfaError("plugin", `${kind} plugin file not found: ${name} (resolved to ${file})`);
    spec = pathToFileURL(file).href;
  } else {
    spec = name;
  }
  const isPath = name.startsWith(".") || name.startsWith("/");
  const pkg = name.split("/").slice(0, name.startsWith("@") ? 2 : 1).join("/");
  // Node: "Cannot find package 'x'"; Deno: 'Import "x" not a dependency and not in import map'.
  const notInstalled = (err: unknown) => errorMessage(err).includes(`Cannot find package '${pkg}'`) ||
    (/not a dependency|not prefixed with/.test(errorMessage(err)) && errorMessage(err).includes(`"${name}"`));
  const failed = (err: unknown) => !isPath && notInstalled(err)
    ? new ApfaError("plugin", `unknown ${kind} plugin "${name}"; installed: ${known.join(", ") || "(none)"}; no package "${name}" is installed either ` +
      `(npm install it next to apfa, or give a path: ./my-plugin.ts)`)
    : new ApfaError("plugin", `cannot load ${kind} plugin "${name}": ${errorMessage(err)}`, { cause: err });
  let mod: { default?: unknown };
  try {
    mod = spec.startsWith(PLUGINS_DIR.href) ? await import(spec) : await importPluginModule(spec);
  } catch (err) {
    throw failed(err);
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
