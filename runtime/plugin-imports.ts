/**
 * A plugin file may live in a folder with no node_modules of its own (`plugin: /opt/plugins/x.ts`, the
 * example of a third folder), yet it imports `apfa` (and maybe `zod`). On Node, a module resolve hook lets
 * such an import fall back to the apfa that is loading the plugin, and to apfa's own zod, whenever the
 * plugin's folder cannot resolve it; a package the plugin's own folder provides still wins. Node 20 has two
 * resolvers: ESM imports go through a module.register hook, and `require` (tsx compiles a `.ts` file outside
 * a `"type": "module"` package to CommonJS) through a wrapper of the CommonJS resolver, the only hook it has
 * before Node 22's registerHooks. Deno resolves through its import map (deno.json) instead.
 * @module
 */
import * as nodeModule from "node:module";
import { fileURLToPath } from "node:url";

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

let registered = false;

/** Registers the fallback once per process (Node only; a no-op elsewhere or where hooks are unavailable). */
export function allowApfaImportsFromAnywhere(): void {
  if (registered || "Deno" in globalThis || typeof nodeModule.register !== "function") return;
  registered = true;
  const own = (spec: string) => {
    try {
      return import.meta.resolve(spec);
    } catch {
      return undefined;
    }
  };
  // The entries this copy of apfa exports: dist/ when compiled, the sources when they run directly.
  const ext = import.meta.url.endsWith(".js") ? ".js" : ".ts";
  const fallback: Record<string, string> = {
    apfa: new URL(`./index${ext}`, import.meta.url).href,
    "apfa/testing": new URL(`./testing${ext}`, import.meta.url).href,
    "apfa/server": new URL(`../server/index${ext}`, import.meta.url).href,
  };
  const zod = own("zod");
  if (zod) fallback.zod = zod;
  nodeModule.register(`data:text/javascript,${encodeURIComponent(HOOKS)}`, { data: fallback });

  const cjs = nodeModule.Module as unknown as { _resolveFilename(request: string, ...rest: unknown[]): string };
  const resolveFilename = cjs._resolveFilename;
  cjs._resolveFilename = function (request: string, ...rest: unknown[]): string {
    try {
      return resolveFilename.call(this, request, ...rest);
    } catch (err) {
      const url = (err as { code?: string }).code === "MODULE_NOT_FOUND" ? fallback[request] : undefined;
      if (!url) throw err;
      return fileURLToPath(url);
    }
  };
}
