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
buildNative();
const stamp = path.join(dist, "BUILD");
fs.writeFileSync(stamp, `${started.toISOString()}\n`);
fs.utimesSync(stamp, started, started);

/**
 * The optional native helper runtime/native/mmap.c (maps index files so server processes share their pages; see
 * runtime/mmap.ts) into dist/native/apfa_mmap.node, with the system C compiler and the headers that ship with
 * this Node. Without either, apfa reads index files into memory instead, so a missing compiler is a note, not a
 * failure.
 */
function buildNative() {
  const include = path.resolve(process.execPath, "../../include/node");
  const out = path.join(dist, "native", "apfa_mmap.node");
  const why = process.platform !== "linux" && process.platform !== "darwin" ? `not built on ${process.platform}`
    : !fs.existsSync(path.join(include, "node_api.h")) ? `no Node headers at ${include}` : undefined;
  if (!why) {
    fs.mkdirSync(path.dirname(out), { recursive: true });
    const args = ["-O2", "-std=gnu11", "-Wall", "-shared", "-fPIC", "-I", include, "-o", out, path.join(root, "runtime", "native", "mmap.c")];
    if (process.platform === "darwin") args.push("-undefined", "dynamic_lookup");
    const cc = spawnSync(process.env.CC || "cc", args, { encoding: "utf8" });
    if (cc.status === 0) return;
    fs.rmSync(out, { force: true });
    const reason = cc.error ? `no C compiler (${process.env.CC || "cc"})` : `the C compiler failed: ${cc.stderr.trim().split("\n").slice(-3).join(" / ")}`;
    console.error(`apfa build: native helper not built (${reason}); index files are read into memory instead of mapped`);
    return;
  }
  console.error(`apfa build: native helper not built (${why}); index files are read into memory instead of mapped`);
}
