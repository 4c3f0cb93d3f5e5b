/**
 * Plugins live anywhere: a plugin file (.ts, .mts, .js, .mjs) in a folder outside the project with no
 * package.json or node_modules of its own — importing `apfa` all the same — and an npm package by name,
 * unscoped or scoped, load through the real CLI (`apfa lint`, `apfa schema`), which checks their options.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");
const THIRD = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-third-"));
const PROJECT = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-project-"));
const PKG = `apfa-fixture-source-${process.pid}`;
const SCOPED = `@apfa-fixture-${process.pid}/source`;
const written: string[] = [];

const plugin = (typed: boolean) => `import { definePlugin, z${typed ? ", type Source" : ""} } from "apfa";
export default definePlugin({
  kind: "source", name: "third", description: "numbered documents",
  options: z.strictObject({ count: z.number().int().min(1).describe("how many documents").default(2) }),
  create: (o)${typed ? ": Source" : ""} => ({ async *pages() { yield Array.from({ length: o.count }, (_, i) => ({ id: "d" + i, text: "doc " + i })); } }),
});
`;
for (const ext of [".ts", ".mts"]) fs.writeFileSync(path.join(THIRD, `plugin${ext}`), plugin(true));
for (const ext of [".js", ".mjs"]) fs.writeFileSync(path.join(THIRD, `plugin${ext}`), plugin(false));
// Packages are resolved from where apfa is installed; here, the repository's node_modules.
for (const name of [PKG, SCOPED]) {
  const dir = path.join(ROOT, "node_modules", name);
  fs.mkdirSync(dir, { recursive: true });
  written.push(name.startsWith("@") ? path.dirname(dir) : dir);
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name, type: "module", exports: "./index.js" }));
  fs.writeFileSync(path.join(dir, "index.js"), plugin(false));
}
afterAll(() => {
  for (const d of [THIRD, PROJECT, ...written]) fs.rmSync(d, { recursive: true, force: true });
});

function apfa(args: string[], yaml: string): { code: number | null; out: string } {
  const file = path.join(PROJECT, "pipeline.yaml");
  fs.writeFileSync(file, yaml);
  const r = spawnSync(process.execPath, [path.join(ROOT, "bin/apfa.mjs"), ...args], { cwd: PROJECT, encoding: "utf8", timeout: 60_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}
const pipeline = (pluginName: string, options: string) => `version: 1\nname: anywhere\nstages:\n  source:\n    plugin: "${pluginName}"\n    options: ${options}\n`;

describe("a plugin outside the project", () => {
  for (const ext of [".ts", ".mts", ".js", ".mjs"]) {
    it(`${ext} by absolute path, importing apfa with no node_modules next to it: options are checked`, () => {
      const file = path.join(THIRD, `plugin${ext}`);
      expect(apfa(["lint"], pipeline(file, "{ count: 3 }"))).toEqual({ code: 0, out: "pipeline.yaml: ok\n" });
      const bad = apfa(["lint"], pipeline(file, "{ count: 0, colour: blue }"));
      expect(bad.code).toBe(1);
      expect(bad.out).toContain("pipeline.yaml:6:23  stages.source.options.count");
      expect(bad.out).toContain('unknown key "colour"; allowed: count');
    });
  }

  it("a relative path into another folder works the same", () => {
    const rel = path.relative(PROJECT, path.join(THIRD, "plugin.ts"));
    expect(apfa(["lint"], pipeline(rel.startsWith(".") ? rel : `./${rel}`, "{ count: 1 }"))).toEqual({ code: 0, out: "pipeline.yaml: ok\n" });
  });

  for (const name of [PKG, SCOPED]) {
    it(`an npm package by name (${name.startsWith("@") ? "scoped" : "unscoped"}), after the built-ins`, () => {
      expect(apfa(["lint"], pipeline(name, "{ count: 2 }"))).toEqual({ code: 0, out: "pipeline.yaml: ok\n" });
      expect(apfa(["lint"], pipeline(name, "{ colour: blue }")).out).toContain('unknown key "colour"; allowed: count');
    });
  }

  it("an unknown name is neither a built-in nor a package: one located problem naming both", () => {
    const r = apfa(["lint"], pipeline("no-such-plugin-anywhere", "{}"));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/pipeline\.yaml:5:13 {2}stages\.source\.plugin {2}unknown source plugin "no-such-plugin-anywhere"; installed: .*jsonl.*; no package "no-such-plugin-anywhere" is installed either/);
  });

  it("apfa schema types the options of plugins the pipeline names by path or package", () => {
    const r = apfa(["schema"], pipeline(path.join(THIRD, "plugin.mts"), "{}"));
    expect(r.code).toBe(0);
    const source = JSON.parse(r.out).properties.stages.properties.source;
    const branch = source.allOf.find((b: { if: { properties?: { plugin?: { const?: string } } } }) => b.if.properties?.plugin?.const === path.join(THIRD, "plugin.mts"));
    expect(branch.then.properties.options.properties.count).toMatchObject({ type: "integer", description: "how many documents" });
  });
});
