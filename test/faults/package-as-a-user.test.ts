/**
 * apfa as a new user gets it: `npm pack` the project (its `prepare` compiles dist/), then in an empty folder
 * install the tarball from the npm cache, `npx apfa init`, the main job on the sample notes (against a fresh
 * database via DATABASE_URL, so no embedded Postgres), the scaffolded plugin's test on `apfa/testing`, and
 * `apfa lint` of a pipeline loading a plugin from a third folder. Nothing in the project may import a path
 * inside apfa's tree. Slow (two npm installs and a build), hence in the slow suite (`npm run test:faults`).
 *
 * The pack runs on a copy of the sources, so its build never rewrites the dist/ that other tests are running.
 * Skipped where it cannot run: no npm, or packages missing from the npm cache with no registry reachable.
 */
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withTestDatabase, type TestDatabase } from "../helpers/pg.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-as-user-"));
const SRC = path.join(TMP, "src");
const APP = path.join(TMP, "app");
const THIRD = path.join(TMP, "third");
/** Not copied: installs, build output, local state and results. */
const SKIP = new Set(["node_modules", ".git", "dist", ".apfa", "test-artifacts", "results", "coverage", "data"]);
const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip", npm_config_fund: "false", npm_config_audit: "false", npm_config_update_notifier: "false" };

function run(cmd: string, args: string[], cwd: string, extra: Record<string, string> = {}): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd, env: { ...env, ...extra }, encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} (in ${cwd}) exited ${r.status}:\n${(r.stdout + r.stderr).slice(-3000)}`);
  return r;
}
const offline = (e: unknown) => /ENOTCACHED|EAI_AGAIN|ENOTFOUND|ECONNREFUSED|ETIMEDOUT|network/i.test(String(e));
const hasNpm = spawnSync("npm", ["--version"], { encoding: "utf8" }).status === 0;

let db: TestDatabase;
let unavailable = "";

beforeAll(async () => {
  if (!hasNpm) return;
  db = await withTestDatabase({ prefix: "apfa_as_user" });
  fs.cpSync(ROOT, SRC, { recursive: true, filter: (src) => !SKIP.has(path.basename(src)) });
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(SRC, "node_modules"));
  const packed = run("npm", ["pack", "--json", "--pack-destination", TMP], SRC);
  const tarball = path.join(TMP, (JSON.parse(packed.stdout) as Array<{ filename: string }>)[0].filename);
  fs.mkdirSync(APP);
  try {
    run("npm", ["install", "--prefer-offline", tarball], APP);
  } catch (err) {
    if (!offline(err)) throw err;
    unavailable = String(err).split("\n").slice(0, 3).join(" ");
  }
}, 600_000);

afterAll(async () => {
  await db?.drop();
  fs.rmSync(TMP, { recursive: true, force: true });
});

describe.skipIf(!hasNpm)("the packed tarball, as a user installs it", () => {
  it("installs, scaffolds with apfa init, runs the main job, the plugin's test and a lint of a plugin from a third folder", (ctx) => {
    if (unavailable) ctx.skip(`npm could not install from its cache: ${unavailable}`);
    const npx = (args: string[], extra: Record<string, string> = {}) => run("npx", ["--no-install", "apfa", ...args], APP, extra);

    // The installed package runs compiled JavaScript (no TypeScript loader) and exposes only its entries.
    const installed = path.join(APP, "node_modules/apfa");
    expect(fs.existsSync(path.join(installed, "dist/runtime/cli.js"))).toBe(true);
    expect(fs.existsSync(path.join(installed, "tsconfig.build.json"))).toBe(false);
    expect(npx(["--help"], { APFA_DEBUG: "1" }).stderr).toContain("/node_modules/apfa/dist/runtime/cli.js");

    const init = npx(["init"]);
    expect(init.stdout).toContain("scaffolded an apfa project");
    const again = spawnSync("npx", ["--no-install", "apfa", "init"], { cwd: APP, env, encoding: "utf8" });
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/^apfa init: \. is not empty \(.*pipeline\.yaml.*\); give an empty or new folder/);
    const pkg = JSON.parse(fs.readFileSync(path.join(APP, "package.json"), "utf8")) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    expect(pkg.dependencies.apfa).toMatch(/apfa-.*\.tgz$/); // kept from the install, not replaced by a registry range
    expect(pkg.devDependencies).toHaveProperty("vitest");
    expect(fs.readFileSync(path.join(APP, "pipeline.yaml"), "utf8")).toMatch(/^# yaml-language-server: \$schema=\.\/node_modules\/apfa\/pipeline\.schema\.json/);
    expect(fs.existsSync(path.join(installed, "pipeline.schema.json"))).toBe(true);
    run("npm", ["install", "--prefer-offline"], APP); // the scaffold's devDependencies (vitest)

    // The main job on the sample notes: the project's own source plugin, use-lite, a flat index.
    const main = npx(["main", "--json"], { DATABASE_URL: db.url, APFA_LOG_LEVEL: "warn" });
    const summary = JSON.parse(main.stdout.trim().split("\n").at(-1)!) as { status: string; docs_embedded: number };
    expect(summary).toMatchObject({ status: "succeeded", docs_embedded: 40 });

    // The scaffolded plugin's test, on apfa/testing, in the user's own vitest.
    const tested = run("npm", ["test"], APP).stdout.replace(/\x1b\[[0-9;]*m/g, "");
    expect(tested).toMatch(/Tests\s+5 passed \(5\)/);

    // A pipeline that loads a plugin from a folder with no package.json or node_modules.
    fs.mkdirSync(THIRD);
    fs.writeFileSync(path.join(THIRD, "plugin.ts"), `import { definePlugin, z, type Source } from "apfa";
export default definePlugin({
  kind: "source", name: "third", description: "from a third folder",
  options: z.strictObject({ n: z.number().int().default(2) }),
  create: (o): Source => ({ async *pages() { yield Array.from({ length: o.n }, (_, i) => ({ id: "t" + i, text: "third " + i })); } }),
});
`);
    fs.writeFileSync(path.join(APP, "other.yaml"), `version: 1\nname: other\nstages:\n  source:\n    plugin: ${path.join(THIRD, "plugin.ts")}\n    options: { n: 3 }\n`);
    expect(npx(["lint", "other.yaml"]).stdout).toBe("other.yaml: ok\n");
    fs.writeFileSync(path.join(APP, "other.yaml"), `version: 1\nname: other\nstages:\n  source:\n    plugin: ${path.join(THIRD, "plugin.ts")}\n    options: { m: 3 }\n`);
    const bad = spawnSync("npx", ["--no-install", "apfa", "lint", "other.yaml"], { cwd: APP, env, encoding: "utf8" });
    expect(bad.status).toBe(1);
    expect(bad.stdout).toContain('other.yaml:6:16  stages.source.options.m  unknown key "m"; allowed: n');

    // Nothing the user has imports a path inside apfa's tree: only the package's entries.
    const imports = ["plugins/notes-source.ts", "plugins/notes-source.test.ts"].flatMap((f) =>
      [...fs.readFileSync(path.join(APP, f), "utf8").matchAll(/from "(apfa[^"]*)"/g)].map((m) => m[1]));
    expect(new Set(imports)).toEqual(new Set(["apfa", "apfa/testing"]));
  });
});
