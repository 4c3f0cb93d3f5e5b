/**
 * The example plugin's test: the shared source conformance suite (test/conformance/source.ts) on a temp
 * directory, its own rules (ids, malformed files, options), and `apfa lint` on the example pipeline.yaml
 * that loads it by path.
 */
import { execFile } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, expect, it } from "vitest";
import { isMalformed, type SourceItem } from "apfa";
import { pluginContext, testSource } from "apfa/testing";
import txtDir from "./txt-dir-source.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-txt-dir-"));
await fsp.mkdir(path.join(dir, "docs", "b"), { recursive: true });
const files: Record<string, string | Uint8Array> = {
  "a.txt": "first document",
  "b/c.txt": "second, in a subdirectory",
  "b/d.txt": "third",
  "bad.txt": new Uint8Array([0x66, 0x6f, 0xff, 0xfe]), // not UTF-8
  "empty.txt": "",
  "notes.md": "not a .txt file",
};
for (const [name, body] of Object.entries(files)) await fsp.writeFile(path.join(dir, "docs", name), body);
afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

const make = async (opts: Record<string, unknown> = {}, baseDir = dir) =>
  txtDir.create(txtDir.options.parse({ dir: "docs", ...opts }), pluginContext({ baseDir }));

testSource("txt-dir (example plugin)", () => make(), { ids: ["a", "b/c", "b/d", "empty"], malformed: 1 });

async function readAll(opts: Record<string, unknown> = {}, baseDir = dir): Promise<SourceItem[]> {
  const items: SourceItem[] = [];
  for await (const page of (await make(opts, baseDir)).pages({ pageSize: 100 })) items.push(...page);
  return items;
}

it("txt-dir: text, metadata and location of each file; a non-UTF-8 file is malformed", async () => {
  const items = await readAll();
  expect(items[0]).toEqual({ id: "a", text: "first document", metadata: { file: "a.txt", bytes: 14 }, location: "docs/a.txt" });
  expect(items.filter(isMalformed)).toEqual([{ malformed: "not valid UTF-8", location: "docs/bad.txt" }]);
});

it("txt-dir: options recursive, extensions and max_bytes", async () => {
  const ids = (items: SourceItem[]) => items.map((i) => (isMalformed(i) ? `!${i.location}` : i.id));
  expect(ids(await readAll({ recursive: false }))).toEqual(["a", "!docs/bad.txt", "empty"]);
  expect(ids(await readAll({ extensions: [".md"] }))).toEqual(["notes"]);
  expect(ids(await readAll({ max_bytes: 5 }))).toEqual(["!docs/a.txt", "!docs/b/c.txt", "b/d", "!docs/bad.txt", "empty"]);
  expect(txtDir.options.safeParse({ dir: "x", extensions: ["txt"] }).success).toBe(false);
  const err = await readAll({ dir: "missing" }).catch((e: Error) => e);
  expect(String(err)).toMatch(/cannot read directory .*missing: ENOENT; check the source option `dir`/);
});

it("txt-dir: reads the example notes shipped next to it", async () => {
  const items = await readAll({ dir: "notes" }, HERE);
  expect(items.map((i) => (isMalformed(i) ? i.location : i.id))).toEqual(["fixed-rate", "loans/personal", "loans/refinance"]);
});

function apfa(args: string[], cwd = ROOT): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, "bin/apfa.mjs"), ...args], { cwd, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stdout, stderr }));
  });
}

it("`apfa lint` accepts examples/plugins/pipeline.yaml, which loads the plugin by path", async () => {
  const r = await apfa(["lint", "examples/plugins/pipeline.yaml"]);
  expect(r).toMatchObject({ code: 0, stdout: "examples/plugins/pipeline.yaml: ok\n" });
});

it("`apfa lint` checks the plugin's own options, located in the file", async () => {
  // A broken copy of the example, in the temp dir, naming the plugin by absolute path.
  const text = (await fsp.readFile(path.join(HERE, "pipeline.yaml"), "utf8"))
    .replace("./txt-dir-source.ts", path.join(HERE, "txt-dir-source.ts"))
    .replace('extensions: [".txt"]', 'extensions: ["txt"]\n      colour: blue');
  await fsp.writeFile(path.join(dir, "pipeline.yaml"), text);
  const r = await apfa(["lint", "pipeline.yaml"], dir);
  expect(r.code).toBe(1);
  const lines = r.stdout.trim().split("\n");
  expect(lines).toHaveLength(2);
  expect(lines[0]).toMatch(/^pipeline\.yaml:\d+:\d+  stages\.source\.options\.extensions\.0  an extension like \.txt$/);
  expect(lines[1]).toMatch(/^pipeline\.yaml:\d+:7  stages\.source\.options\.colour  unknown key "colour"; allowed: dir, extensions, recursive, max_bytes$/);
});
