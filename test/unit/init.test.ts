/**
 * `apfa init` scaffolds into an empty folder (or one holding only the npm install of apfa) and refuses any
 * other with one clear line. The whole user path, from the packed tarball, is test/faults/package-as-a-user.test.ts.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, expect, it, vi } from "vitest";
import { loadConfig } from "../../runtime/config/load.ts";
import { cli } from "../../runtime/cli.ts";

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-init-"));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

async function init(dir: string): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, "log").mockImplementation((s: string) => void out.push(s));
  const error = vi.spyOn(console, "error").mockImplementation((s: string) => void err.push(s));
  try {
    return { code: await cli(["init", dir]), out: out.join("\n"), err: err.join("\n") };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

it("scaffolds a project whose pipeline lints clean, keeping what npm install apfa left", async () => {
  const dir = path.join(TMP, "after-npm-install");
  fs.mkdirSync(path.join(dir, "node_modules"), { recursive: true });
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ dependencies: { apfa: "^9.9.9" } }));
  const r = await init(dir);
  expect(r.code).toBe(0);
  for (const f of ["pipeline.yaml", "plugins/notes-source.ts", "plugins/notes-source.test.ts", "README.md", ".gitignore", "data/notes/cust-0001.md"]) {
    expect(fs.existsSync(path.join(dir, f)), f).toBe(true);
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  expect(pkg).toMatchObject({ type: "module", dependencies: { apfa: "^9.9.9" }, scripts: { main: "apfa main", test: "vitest run" } });
  expect(pkg.devDependencies.vitest).toBeTruthy();
  // The scaffold's plugin imports `apfa`, which vitest resolves to the sources here.
  const lint = await loadConfig(path.join(dir, "pipeline.yaml"));
  expect(lint.problems).toEqual([]);
});

it("creates a new folder", async () => {
  expect((await init(path.join(TMP, "new/deeper"))).code).toBe(0);
  expect(fs.existsSync(path.join(TMP, "new/deeper/pipeline.yaml"))).toBe(true);
});

it("refuses a folder with anything else in it, naming what is there", async () => {
  const dir = path.join(TMP, "busy");
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, "notes.txt"), "mine");
  const r = await init(dir);
  expect(r.code).toBe(1);
  expect(r.err).toMatch(/^apfa init: .*busy is not empty \(notes\.txt\); give an empty or new folder: npx apfa init my-project$/);
  expect(fs.readdirSync(dir)).toEqual(["notes.txt"]);
});
