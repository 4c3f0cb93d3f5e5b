/**
 * Importing a user plugin module, wherever it lives. Two things stand in the way on Node, and both are dealt
 * with only when they happen, so a plugin that needs neither costs nothing extra:
 *
 * - TypeScript. Compiled apfa has no TypeScript loader (`ERR_UNKNOWN_FILE_EXTENSION`), and under tsx's global
 *   loader a `.ts` (or ESM `.js`) file outside a `"type": "module"` package is taken for CommonJS, whose ESM
 *   syntax then fails as a require cycle. Either way tsx's scoped import loads the file as the author wrote it.
 * - `import ... from "apfa"` in a folder with no node_modules (`plugin: /opt/plugins/x.ts`). Such an import
 *   falls back to the apfa loading the plugin (and `zod` to apfa's own) when the plugin's folder cannot
 *   resolve it; a package the folder provides still wins. `require` (tsx compiles such a `.ts` file to
 *   CommonJS) goes through a wrapper of the CommonJS resolver, cheap and installed up front; ESM imports need
 *   a module.register hook, which routes every later import through the loader thread, so it is registered
 *   only after a plugin failed for want of it, and the plugin is then imported afresh.
 * Deno runs TypeScript itself and resolves `apfa` through its import map (deno.json).
 * @module
 */
import * as nodeModule from "node:module";
import { fileURLToPath } from "node:url";
import { errorMessage } from "./errors.ts";

/** The hook, as a module of its own (module.register runs it on the loader thread). */
const HOOKS = `
let fallback = {};
export function initialize(data) { fallback = data; }
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    const url = err && err.code === "ERR_MODULE_NOT_FOUND" ? fallback[specifier] : undefined;
    if (!url) throw err;
    return next(url, context); // through the chain again, so a TypeScript loader (tsx) sees the file it loads
  }
}`;

const onNode = !("Deno" in globalThis);
let fallback: Record<string, string> | undefined;
let hookRegistered = false;

/** Where `apfa`, its entries and `zod` resolve for this copy of apfa (dist/ when compiled, else the sources). */
function fallbackUrls(): Record<string, string> {
  if (fallback) return fallback;
  const ext = import.meta.url.endsWith(".js") ? ".js" : ".ts";
  fallback = {
    apfa: new URL(`./index${ext}`, import.meta.url).href,
    "apfa/testing": new URL(`./testing${ext}`, import.meta.url).href,
    "apfa/server": new URL(`../server/index${ext}`, import.meta.url).href,
  };
  try {
    fallback.zod = import.meta.resolve("zod");
  } catch {
    // no zod to offer
  }
  return fallback;
}

function patchRequire(): void {
  const cjs = nodeModule.Module as unknown as { _resolveFilename(request: string, ...rest: unknown[]): string; _apfaFallback?: boolean };
  if (cjs._apfaFallback) return;
  cjs._apfaFallback = true;
  const resolveFilename = cjs._resolveFilename;
  cjs._resolveFilename = function (request: string, ...rest: unknown[]): string {
    try {
      return resolveFilename.call(this, request, ...rest);
    } catch (err) {
      const url = (err as { code?: string }).code === "MODULE_NOT_FOUND" ? fallbackUrls()[request] : undefined;
      if (!url) throw err;
      return fileURLToPath(url);
    }
  };
}

/** Node only (Deno runs TypeScript itself): tsx's `tsImport`, imported when first needed. */
async function importTypeScript(spec: string): Promise<{ default?: unknown }> {
  const { tsImport } = (await import("tsx/esm/api")) as { tsImport(spec: string, parent: string): Promise<{ default?: unknown }> };
  return tsImport(spec, import.meta.url);
}

async function load(spec: string): Promise<{ default?: unknown }> {
  try {
    return await import(spec);
  } catch (err) {
    const cycle = /require\(\) ES Module .* in a cycle/.test(errorMessage(err));
    const noLoader = /\.[cm]?ts(\?|$)/.test(spec) && (err as { code?: string }).code === "ERR_UNKNOWN_FILE_EXTENSION";
    if (!onNode || !(cycle || noLoader)) throw err;
    return importTypeScript(spec);
  }
}

/** Imports a user plugin (a file URL or a package name); see the module comment for what it smooths over. */
export async function importPluginModule(spec: string): Promise<{ default?: unknown }> {
  if (!onNode) return import(spec);
  patchRequire();
  try {
    return await load(spec);
  } catch (err) {
    const missing = (err as { code?: string }).code === "ERR_MODULE_NOT_FOUND" && /Cannot find (package|module) '(apfa|zod)(\/[^']*)?'/.test(errorMessage(err));
    if (!missing || hookRegistered || typeof nodeModule.register !== "function") throw err;
    hookRegistered = true;
    nodeModule.register(`data:text/javascript,${encodeURIComponent(HOOKS)}`, { data: fallbackUrls() });
    // The failed import stays cached under its URL; a query makes a fresh one.
    const url = new URL(spec.startsWith("file:") ? spec : import.meta.resolve(spec));
    url.searchParams.set("apfa-retry", "1");
    return load(url.href);
  }
}
