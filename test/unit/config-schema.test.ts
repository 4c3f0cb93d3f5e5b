/**
 * The JSON Schema editors validate pipeline.yaml with (`apfa schema`): the shipped pipeline passes, and a stage's
 * `options` are checked against the plugin the stage names, for built-ins and for a plugin named by path.
 */
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv2020 } from "ajv/dist/2020.js";
import { parse } from "yaml";
import { afterAll, describe, expect, it } from "vitest";
import { pipelineJsonSchema } from "../../runtime/commands/lint.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-schema-"));
afterAll(() => fsp.rm(dir, { recursive: true, force: true }));
await fsp.writeFile(path.join(dir, "my-source.mjs"), [
  'import { z } from "zod";',
  'export default { kind: "source", name: "mine", description: "test", options: z.strictObject({ folder: z.string() }), create() {} };',
].join("\n"));
// The plugin imports zod the way a user's would: from a node_modules next to it.
await fsp.symlink(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));

const ajv = new Ajv2020({ strict: false, allErrors: true });
const validate = ajv.compile(await pipelineJsonSchema({ baseDir: dir, external: { source: ["./my-source.mjs"] } }));
const errors = (doc: unknown) => (validate(doc) ? [] : validate.errors!.map((e) => `${e.instancePath} ${e.message}${e.params && "additionalProperty" in e.params ? ` ${e.params.additionalProperty}` : ""}`));

describe("pipeline JSON Schema", () => {
  it("accepts the shipped pipeline.yaml", () => {
    expect(errors(parse(fs.readFileSync(path.join(ROOT, "pipeline.yaml"), "utf8")))).toEqual([]);
  });

  it("checks a built-in plugin's options, including the default plugin's when `plugin` is left out", () => {
    expect(errors({ stages: { index: { plugin: "hnsw", options: { connectivity: "many" } } } }).join("\n")).toMatch(/\/stages\/index\/options\/connectivity must be (integer|number)/);
    expect(errors({ stages: { index: { plugin: "hnsw", options: { rebuild_after_removed: 0.3 } } } })).toEqual([]);
    expect(errors({ stages: { source: { options: { pth: "x.jsonl" } } } }).join("\n")).toMatch(/\/stages\/source\/options must NOT have additional properties pth/);
    expect(errors({ store: { plugin: "s3", options: { bucket: "apfa-data", endpoint: "http://127.0.0.1:9000" } } })).toEqual([]);
  });

  it("checks the options of a plugin named by path", () => {
    expect(errors({ stages: { source: { plugin: "./my-source.mjs", options: { folder: "docs" } } } })).toEqual([]);
    expect(errors({ stages: { source: { plugin: "./my-source.mjs", options: { folder: 3 } } } }).join("\n")).toMatch(/\/stages\/source\/options\/folder must be string/);
  });
});
