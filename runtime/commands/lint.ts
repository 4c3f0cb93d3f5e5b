/** `apfa lint` and `apfa schema`. @module */
import * as fs from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import type { Command } from "./common.ts";
import { formatProblem, loadConfig } from "../config/load.ts";
import { pipelineSchema } from "../config/schema.ts";
import type { PluginKind } from "../contracts.ts";
import { builtinPlugins, isUserPlugin, loadPlugin } from "../plugins.ts";

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

type Node = { properties: Record<string, Node & { default?: unknown }>; allOf?: unknown[] };

/** Each plugin's options schema, under `if: plugin is <name>` (the stage's default plugin also when it is absent). */
async function pluginBranches(kind: PluginKind, names: string[], defaultName: string, baseDir: string): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const name of names) {
    const def = await loadPlugin(kind, name, baseDir).catch(() => undefined);
    if (!def) continue;
    const { $schema: _, ...options } = z.toJSONSchema(def.options, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
    const named = { properties: { plugin: { const: name } }, required: ["plugin"] };
    out.push({
      if: name === defaultName ? { anyOf: [named, { not: { required: ["plugin"] } }] } : named,
      then: { properties: { options: { ...options, description: `Options of the ${name} ${kind} plugin: ${def.description}` } } },
    });
  }
  return out;
}

/**
 * The JSON Schema of pipeline.yaml (input form: defaults shown, nothing required that has one). Each stage's
 * `options` is typed per `plugin:` value, for every built-in plugin and the plugins `external` names by path.
 */
export async function pipelineJsonSchema(opts: { baseDir?: string; external?: Partial<Record<PluginKind, string[]>> } = {}): Promise<Record<string, unknown>> {
  const schema = z.toJSONSchema(pipelineSchema, { io: "input", unrepresentable: "any" }) as Record<string, unknown> & Node;
  const baseDir = opts.baseDir ?? process.cwd();
  const stages: Array<[Node, PluginKind]> = [
    [schema.properties.store, "store"],
    ...(["source", "embedder", "index", "notifier", "generator"] as const).map((k) => [schema.properties.stages.properties[k], k] as [Node, PluginKind]),
  ];
  for (const [node, kind] of stages) {
    const names = [...builtinPlugins(kind), ...(opts.external?.[kind] ?? [])];
    node.allOf = await pluginBranches(kind, names, String(node.properties.plugin.default), baseDir);
  }
  return { ...schema, $id: "https://apfa.dev/pipeline.schema.json", title: "apfa pipeline.yaml" };
}

/** Plugins a pipeline.yaml names by path or package, by kind (none when the file is absent or unreadable). */
async function externalPlugins(file: string): Promise<Partial<Record<PluginKind, string[]>>> {
  if (!fs.existsSync(file)) return {};
  const r = await loadConfig(file, { checkPlugins: false });
  if (!r.config) return {};
  const out: Partial<Record<PluginKind, string[]>> = {};
  const refs: Array<[PluginKind, string]> = [["store", r.config.store.plugin], ...Object.entries(r.config.stages).map(([k, v]) => [k as PluginKind, v.plugin] as [PluginKind, string])];
  for (const [kind, name] of refs) if (isUserPlugin(kind, name)) (out[kind] ??= []).push(name);
  return out;
}

export const schema: Command = {
  summary: "Write the JSON Schema of pipeline.yaml, for editors (yaml-language-server).",
  usage: "apfa schema [-c pipeline.yaml] [--out pipeline.schema.json]   (stdout without --out; plugins the pipeline names by path are included)",
  options: { out: { type: "string", short: "o" } },
  async run({ values }) {
    const file = values.config as string;
    const text = JSON.stringify(await pipelineJsonSchema({ baseDir: path.dirname(path.resolve(file)), external: await externalPlugins(file) }), null, 2) + "\n";
    if (values.out) {
      fs.writeFileSync(values.out as string, text);
      console.error(`wrote ${values.out}`);
    } else {
      process.stdout.write(text);
    }
    return 0;
  },
};
