/**
 * bin/apfa.mjs never runs stale code: in a source checkout it runs dist/ only while no source is newer than
 * dist/BUILD, else the TypeScript sources through tsx. Checked on a throwaway tree (under test-artifacts/, so
 * tsx resolves from the repository) whose dist/ and sources each print which one ran.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");
const TREE = path.join(ROOT, "test-artifacts", `bin-stale-${process.pid}`);
const put = (rel: string, text: string, mtime?: Date) => {
  const f = path.join(TREE, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, text);
  if (mtime) fs.utimesSync(f, mtime, mtime);
};
const cli = (which: string) => `export async function cli() { console.log("${which}"); return 0; }\n`;
const ran = () => spawnSync(process.execPath, [path.join(TREE, "bin/apfa.mjs")], { encoding: "utf8" }).stdout.trim();

const past = new Date(Date.now() - 3600_000);
const built = new Date(Date.now() - 1800_000);
beforeEach(() => {
  fs.rmSync(TREE, { recursive: true, force: true });
  fs.mkdirSync(path.join(TREE, "bin"), { recursive: true });
  fs.copyFileSync(path.join(ROOT, "bin/apfa.mjs"), path.join(TREE, "bin/apfa.mjs"));
  put("tsconfig.build.json", "{}");
  put("runtime/cli.ts", cli("sources"), past);
  put("plugins/store/fs.ts", "export {};\n", past);
  for (const d of ["runtime", "plugins/store", "plugins"]) fs.utimesSync(path.join(TREE, d), past, past);
  put("dist/runtime/cli.js", cli("dist"));
  put("dist/BUILD", "", built);
});
afterAll(() => fs.rmSync(TREE, { recursive: true, force: true }));

describe("bin/apfa.mjs picks current code", () => {
  it("runs dist/ when no source is newer than its build", () => {
    expect(ran()).toBe("dist");
  });

  it("runs the sources when a source file was saved after the build", () => {
    fs.utimesSync(path.join(TREE, "runtime/cli.ts"), new Date(), new Date());
    expect(ran()).toBe("sources");
  });

  it("runs the sources when a plugin file was added or removed after the build", () => {
    fs.rmSync(path.join(TREE, "plugins/store/fs.ts"));
    expect(ran()).toBe("sources");
  });

  it("runs the sources when dist/ was never built", () => {
    fs.rmSync(path.join(TREE, "dist/BUILD"));
    expect(ran()).toBe("sources");
  });

  it("runs dist/ in an installed package (no tsconfig.build.json), whatever the mtimes", () => {
    fs.rmSync(path.join(TREE, "tsconfig.build.json"));
    fs.utimesSync(path.join(TREE, "runtime/cli.ts"), new Date(), new Date());
    expect(ran()).toBe("dist");
  });
});
