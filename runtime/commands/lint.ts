/** `apfa lint` and `apfa schema`. @module */
import * as fs from "node:fs";
import { z } from "zod";
import type { Command } from "../cli.ts";
import { formatProblem, loadConfig } from "../config/load.ts";
import { pipelineSchema } from "../config/schema.ts";

export const lint: Command = {
  summary: "Check a pipeline.yaml and print every problem, one per line: file:line:col  path  message.",
  usage: "apfa lint [file] [--json]    exit 0 when valid, 1 when any problem is found",
  options: { json: { type: "boolean" } },
  async run({ values, positionals }) {
    const file = positionals[0] ?? (values.config as string);
    const r = await loadConfig(file);
    if (values.json) {
      console.log(JSON.stringify({ file, valid: r.problems.length === 0, problems: r.problems }, null, 2));
    } else if (r.problems.length) {
      for (const p of r.problems) console.log(formatProblem(p));
      console.error(`${r.problems.length} problem${r.problems.length === 1 ? "" : "s"} in ${file}`);
    } else {
      console.log(`${file}: ok`);
    }
    return r.problems.length ? 1 : 0;
  },
};

/** The JSON Schema of pipeline.yaml (input form: defaults shown, nothing required that has one). */
export function pipelineJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(pipelineSchema, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
  return { ...schema, $id: "https://apfa.dev/pipeline.schema.json", title: "apfa pipeline.yaml" };
}

export const schema: Command = {
  summary: "Write the JSON Schema of pipeline.yaml, for editors (yaml-language-server).",
  usage: "apfa schema [--out pipeline.schema.json]   (stdout without --out)",
  options: { out: { type: "string", short: "o" } },
  async run({ values }) {
    const text = JSON.stringify(pipelineJsonSchema(), null, 2) + "\n";
    if (values.out) {
      fs.writeFileSync(values.out as string, text);
      console.error(`wrote ${values.out}`);
    } else {
      process.stdout.write(text);
    }
    return 0;
  },
};
