#!/usr/bin/env node
// Node entry. It runs the compiled JavaScript in dist/ (built by `npm run build`, which `prepare` runs on
// `npm install`/`npm ci` in a clone and `prepack` before packing), so no TypeScript loader is paid for.
// In a source checkout (tsconfig.build.json is only there) dist/ can be missing or older than a source you
// just edited: then the sources run through tsx instead, so neither you nor a test spawning this file ever
// runs stale code. A source counts as newer when its mtime is later than dist/BUILD, which the build stamps
// with the time it started; in runtime/, plugins/, server/ and migrations/ so does a folder's (a file added
// or removed), elsewhere folders gain run-time data (examples/data). APFA_DEBUG says which code runs.
// Deno runs runtime/main.ts directly (see deno.json); should it start here (`deno task start` maps `node` to
// Deno), it must skip tsx, whose require hooks break loading .node and .json files under Deno.
import * as fs from "node:fs";
import { fileURLToPath } from "node:url";

const root = new URL("../", import.meta.url);
/** The folders compiled into dist/ (tsconfig.build.json and what they import); true: their folders count too. */
const SOURCES = { runtime: true, plugins: true, server: true, migrations: true, bench: false, examples: false, "test/conformance": false, "test/fixtures": false };
const SKIP = new Set(["node_modules", "results", "data", ".apfa"]);

function distIsCurrent() {
  let built;
  try {
    built = fs.statSync(new URL("dist/BUILD", root)).mtimeMs;
  } catch {
    return false;
  }
  if (!fs.existsSync(new URL("tsconfig.build.json", root))) return true; // an installed package: dist is all there is
  // Plain string paths, not URLs: this walk stats every source file on each start, and URL objects cost more.
  const newer = (dir, folders) => {
    let entries;
    try {
      if (folders && fs.statSync(dir).mtimeMs > built) return true;
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return false;
    }
    for (const e of entries) {
      if (e.isDirectory()) {
        if (!SKIP.has(e.name) && newer(`${dir}/${e.name}`, folders)) return true;
      } else if (/\.(ts|sql|html|js)$/.test(e.name) && fs.statSync(`${dir}/${e.name}`).mtimeMs > built) return true;
    }
    return false;
  };
  const base = fileURLToPath(root);
  return !Object.entries(SOURCES).some(([d, folders]) => newer(`${base}${d}`, folders));
}

let entry;
if ("Deno" in globalThis) entry = "../runtime/cli.ts";
else if (distIsCurrent()) entry = "../dist/runtime/cli.js";
else {
  const { register } = await import("tsx/esm/api");
  register();
  entry = "../runtime/cli.ts";
}
if (process.env.APFA_DEBUG) console.error(`[apfa] running ${new URL(entry, import.meta.url).pathname}`);
const { cli } = await import(entry);
process.exitCode = await cli(process.argv.slice(2));
// Long-running commands return after a clean shutdown; anything a plugin left open must not hang the CLI.
setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref();
