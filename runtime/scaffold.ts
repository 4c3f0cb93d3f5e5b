/**
 * The files `apfa init` writes: a pipeline on the embedded default whose source is a custom plugin of the
 * project's own (one document per Markdown note), the plugin's test on `apfa/testing`, a small sample corpus
 * and a README. Imports only apfa's public entries, as a user's project must.
 * @module
 */

/** The project's plugin: a source reading one document per `.md` file. */
export const PLUGIN = `/**
 * \`notes\` source: one document per Markdown file under \`dir\`. The id is the file name without \`.md\`, the
 * text the file's contents, and \`metadata.title\` its first \`# heading\`. Files are read in name order, so two
 * reads give the same pages. Change it, or copy it for another kind (docs: apfa's docs/plugins.md).
 */
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { ApfaError, definePlugin, z, type Source } from "apfa";

export interface NotesOptions {
  /** Folder of .md files, relative to pipeline.yaml. */
  dir: string;
}

export default definePlugin({
  kind: "source",
  name: "notes",
  description: "One document per .md file under a folder (id = file name)",
  options: z.strictObject({ dir: z.string().min(1).describe("Folder of .md files, relative to pipeline.yaml") }),
  create(opts: NotesOptions, ctx): Source {
    const root = path.resolve(ctx.baseDir, opts.dir);
    return {
      async *pages({ pageSize }) {
        const names = await fsp.readdir(root).catch((err: Error) => {
          throw new ApfaError("plugin", \`cannot read \${root}: \${err.message}; check the source option \\\`dir\\\`\`, { cause: err });
        });
        const files = names.filter((n) => n.endsWith(".md")).sort();
        for (let i = 0; i < files.length; i += pageSize) {
          yield await Promise.all(files.slice(i, i + pageSize).map(async (name) => {
            const text = await fsp.readFile(path.join(root, name), "utf8");
            const title = /^# (.+)$/m.exec(text)?.[1] ?? name;
            return { id: name.slice(0, -3), text, metadata: { title }, location: path.join(opts.dir, name) };
          }));
        }
      },
    };
  },
});
`;

/** Its test: the shared source conformance suite, then what is particular to this plugin. */
export const PLUGIN_TEST = `import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { pluginContext, testSource } from "apfa/testing";
import { afterAll, expect, it } from "vitest";
import notes from "./notes-source.ts";

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "notes-"));
await fsp.mkdir(path.join(dir, "notes"));
for (const [name, text] of [["b.md", "# Bee\\nsecond"], ["a.md", "# Ay\\nfirst"], ["skip.txt", "not markdown"]]) {
  await fsp.writeFile(path.join(dir, "notes", name), text);
}
afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

const make = async () => notes.create(notes.options.parse({ dir: "notes" }), pluginContext({ baseDir: dir }));

testSource("notes", make, { ids: ["a", "b"] });

it("takes the title from the first heading", async () => {
  const pages = [];
  for await (const page of (await make()).pages({ pageSize: 10 })) pages.push(...page);
  expect(pages[0]).toMatchObject({ id: "a", metadata: { title: "Ay" } });
});
`;

export const PIPELINE = `# yaml-language-server: $schema=./node_modules/apfa/pipeline.schema.json
#
# The embedded default: Postgres is embedded (unless DATABASE_URL is set), the index goes to .apfa/store, and
# the embedding model ships with apfa. The source is this project's own plugin (plugins/notes-source.ts).
# Check it: npx apfa lint     See what it runs: npx apfa plan
version: 1
name: my-notes

database:
  url: \${DATABASE_URL:-}

stages:
  source:
    plugin: ./plugins/notes-source.ts
    options:
      dir: data/notes
  embedder:
    plugin: use-lite
  index:
    plugin: flat

batch_size: 50
`;

export const README = (name: string) => `# ${name}

An [apfa](https://www.npmjs.com/package/apfa) pipeline: the Markdown notes in \`data/notes/\` are read by the
project's own source plugin (\`plugins/notes-source.ts\`), embedded, indexed and served.

\`\`\`sh
npm install && npx apfa main    # embeds data/notes with the offline model into a flat index (embedded Postgres)
npx apfa serve                  # serves /search and /generate-advice on http://127.0.0.1:8080 (token: npx apfa token)
\`\`\`

\`npm test\` runs the plugin's test (the source conformance suite from \`apfa/testing\`); \`npx apfa lint\` checks
pipeline.yaml and prints every problem with its line. Set \`DATABASE_URL\` to use your own Postgres.
`;

export const GITIGNORE = "node_modules/\n.apfa/\n";

/** Sample notes from apfa's example corpus (loan products and customer profiles), one Markdown file each. */
export function sampleNotes(docs: Array<{ id: string; text: string; metadata: Record<string, unknown> }>): Record<string, string> {
  return Object.fromEntries(docs.map((d) => [`${d.id}.md`, `# ${String(d.metadata.name ?? d.id)}\n\n${d.text}\n`]));
}
