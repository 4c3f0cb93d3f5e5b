/**
 * `apfa init [dir]`: scaffolds a project into an empty folder (or one holding only the npm install of apfa
 * itself, so `npm install apfa && npx apfa init` works): package.json, pipeline.yaml with the schema
 * reference, sample notes, a custom source plugin with its test, and a README of the two commands.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { GITIGNORE, PIPELINE, PLUGIN, PLUGIN_TEST, README, sampleNotes } from "../scaffold.ts";
import type { Command } from "./common.ts";

/** What an `npm install apfa` leaves; anything else makes the folder not empty. */
const NPM_LEFTOVERS = new Set(["node_modules", "package.json", "package-lock.json", ".npmrc", ".git"]);
const SAMPLE_SIZE = 40;

function ownPackage(): { version: string; devDependencies: Record<string, string> } {
  // dist/runtime/commands/ or runtime/commands/: package.json is two or three folders up.
  for (const up of ["../../package.json", "../../../package.json"]) {
    const file = new URL(up, import.meta.url);
    if (fs.existsSync(file)) {
      const p = JSON.parse(fs.readFileSync(file, "utf8")) as { name?: string; version: string; devDependencies?: Record<string, string> };
      if (p.name === "apfa") return { version: p.version, devDependencies: p.devDependencies ?? {} };
    }
  }
  return { version: "0.1.0", devDependencies: {} };
}

function packageJson(dir: string, existing: Record<string, unknown>): Record<string, unknown> {
  const own = ownPackage();
  const name = path.basename(dir).toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[._-]+/, "") || "my-apfa-project";
  const deps = (existing.dependencies ?? {}) as Record<string, string>;
  const dev = (existing.devDependencies ?? {}) as Record<string, string>;
  return {
    name,
    version: "0.1.0",
    private: true,
    type: "module",
    ...existing,
    scripts: { main: "apfa main", serve: "apfa serve", lint: "apfa lint", test: "vitest run", ...(existing.scripts as object | undefined) },
    dependencies: { ...deps, apfa: deps.apfa ?? `^${own.version}` },
    devDependencies: { ...dev, vitest: dev.vitest ?? own.devDependencies.vitest ?? "^4" },
  };
}

export const init: Command = {
  summary: "Scaffold a new apfa project in an empty folder: package.json, pipeline.yaml, sample notes, a custom plugin and its test.",
  usage: "apfa init [dir]   (default: the current folder; it must be empty, or hold only the npm install of apfa)",
  options: {},
  async run({ positionals }) {
    if (positionals.length > 1) {
      console.error(`apfa init: expected at most one folder (got ${positionals.join(" ")})\n\n${init.usage}`);
      return 2;
    }
    const dir = path.resolve(positionals[0] ?? ".");
    const shown = path.relative(process.cwd(), dir) || ".";
    if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) {
      console.error(`apfa init: ${shown} is a file; give a folder to scaffold into`);
      return 1;
    }
    const present = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
    const others = present.filter((f) => !NPM_LEFTOVERS.has(f));
    if (others.length) {
      console.error(`apfa init: ${shown} is not empty (${others.slice(0, 5).join(", ")}${others.length > 5 ? `, … ${others.length} in all` : ""}); ` +
        "give an empty or new folder: npx apfa init my-project");
      return 1;
    }
    const pkgFile = path.join(dir, "package.json");
    const existing = fs.existsSync(pkgFile) ? (JSON.parse(fs.readFileSync(pkgFile, "utf8")) as Record<string, unknown>) : {};
    const { generateCorpus } = await import("../../examples/corpus.ts");
    const files: Record<string, string> = {
      "package.json": `${JSON.stringify(packageJson(dir, existing), null, 2)}\n`,
      "pipeline.yaml": PIPELINE,
      "plugins/notes-source.ts": PLUGIN,
      "plugins/notes-source.test.ts": PLUGIN_TEST,
      "README.md": README(path.basename(dir)),
      ".gitignore": GITIGNORE,
      ...Object.fromEntries(Object.entries(sampleNotes(generateCorpus({ count: SAMPLE_SIZE }))).map(([f, t]) => [`data/notes/${f}`, t])),
    };
    for (const [rel, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      fs.writeFileSync(path.join(dir, rel), text);
    }
    const cd = shown === "." ? "" : `cd ${shown} && `;
    console.log(`scaffolded an apfa project in ${shown}: pipeline.yaml, plugins/notes-source.ts (+ test), ${SAMPLE_SIZE} notes in data/notes/\n\n` +
      `  ${cd}npm install && npx apfa main    # embed the notes and build the index\n  npx apfa serve                  # serve it\n  npm test                        # the plugin's test`);
    return 0;
  },
};
