#!/usr/bin/env node
// `npm run build` (also run by `prepare` and `prepack`): compiles runtime/, plugins/ and server/ to dist/ as
// JavaScript + .d.ts, copies what is read by path at run time (migrations, the dashboard), and stamps the build
// with the time it *started*, so a source saved while tsc ran still counts as newer than dist (bin/apfa.mjs
// then runs the sources instead; see the comment there).
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const dist = path.join(root, "dist");
const started = new Date();
fs.rmSync(dist, { recursive: true, force: true, maxRetries: 5 });
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const r = spawnSync(process.execPath, [tsc, "-p", path.join(root, "tsconfig.build.json")], { stdio: "inherit" });
if (r.status !== 0) {
  fs.rmSync(dist, { recursive: true, force: true });
  console.error("apfa build: tsc failed; dist/ removed (bin/apfa.mjs runs the sources until a build succeeds)");
  process.exit(r.status ?? 1);
}
for (const dir of ["migrations", "server/dashboard"]) fs.cpSync(path.join(root, dir), path.join(dist, dir), { recursive: true });
const stamp = path.join(dist, "BUILD");
fs.writeFileSync(stamp, `${started.toISOString()}\n`);
fs.utimesSync(stamp, started, started);
