/**
 * The `apfa` command line. Every command has `--help`; commands a script would parse take `--json`.
 * Exit codes: 0 ok, 1 problems found or the operation failed, 2 usage error, 3 a run finished failed.
 * @module
 */
import { parseArgs } from "node:util";
import type { Command } from "./commands/common.ts";
import { ApfaError, errorMessage } from "./errors.ts";

export type { Command };

const common = {
  config: { type: "string", short: "c", default: process.env.APFA_CONFIG ?? "pipeline.yaml" },
  help: { type: "boolean", short: "h" },
} as const;

const commands: Record<string, () => Promise<Command>> = {
  lint: async () => (await import("./commands/lint.ts")).lint,
  schema: async () => (await import("./commands/lint.ts")).schema,
  plan: async () => (await import("./commands/plan.ts")).plan,
  migrate: async () => (await import("./commands/ops.ts")).migrateCmd,
  worker: async () => (await import("./commands/ops.ts")).worker,
  run: async () => (await import("./commands/run.ts")).runCmd,
  main: async () => (await import("./commands/run.ts")).main,
  serve: async () => (await import("./commands/serve.ts")).serveCmd,
  token: async () => (await import("./commands/token.ts")).tokenCmd,
  bench: async () => (await import("./commands/bench.ts")).bench,
  inspect: async () => (await import("./commands/inspect.ts")).inspect,
  index: async () => (await import("./commands/index-cmd.ts")).indexCmd,
  init: async () => (await import("./commands/init.ts")).init,
};

/** Extra commands registered by later modules (serve, token, inspect, bench…). */
export function registerCommand(name: string, load: () => Promise<Command>): void {
  commands[name] = load;
}

function usage(): string {
  return [
    "apfa — background embedding pipeline and zero-downtime index serving",
    "",
    "Usage: apfa <command> [options]   (apfa <command> --help for details)",
    "",
    "Commands:",
    "  lint [file]     check pipeline.yaml and print every problem as file:line:col  path  message",
    "  schema          write the JSON Schema of pipeline.yaml (for editors)",
    "  plan [file]     show tasks, queues, cron entries (next fires), batch size and plugins",
    "  migrate         apply graphile-worker's and apfa's database migrations",
    "  worker          run the queues' jobs (graphile-worker), with the crontab from schedules",
    "  run             start an embedding run (--wait to follow it to the end)",
    "  main            the embedded default end to end: migrate, worker, run, index, summary",
    "  serve           serve the advice API with zero-downtime index hot swap",
    "  token           mint a development JWT for the configured secret",
    "  bench           run the benchmark suites and write BENCHMARKS.md (--quick, --compare)",
    "  inspect <what>  workers (ping), active jobs, scheduled cron fires, queues, runs (--json)",
    "  index <cmd>     list index versions, or rollback <version> to re-publish an existing one",
    "  init [dir]      scaffold a new project: pipeline.yaml, sample notes, a custom plugin and its test",
    ...extraUsage,
    "",
    "Global options: -c, --config <file> (default pipeline.yaml or $APFA_CONFIG), -h, --help",
  ].join("\n");
}
const extraUsage: string[] = [];
export function addUsageLine(line: string): void {
  extraUsage.push(line);
}

export async function cli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name ? 0 : 2;
  }
  if (name === "--version" || name === "-v") {
    console.log("apfa 0.1.0");
    return 0;
  }
  const load = commands[name];
  if (!load) {
    console.error(`apfa: unknown command "${name}"; commands: ${Object.keys(commands).join(", ")}`);
    return 2;
  }
  const cmd = await load();
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: { ...common, ...cmd.options }, allowPositionals: true, strict: true });
  } catch (err) {
    console.error(`apfa ${name}: ${errorMessage(err)}\n\n${cmd.usage}`);
    return 2;
  }
  if (parsed.values.help) {
    console.log(`${cmd.summary}\n\n${cmd.usage}\n\nOptions:\n${describeOptions({ ...common, ...cmd.options })}`);
    return 0;
  }
  try {
    return await cmd.run(parsed as { values: Record<string, unknown>; positionals: string[] });
  } catch (err) {
    console.error(err instanceof ApfaError ? err.message : `[apfa] ${name} failed: ${errorMessage(err)}`);
    if (process.env.APFA_DEBUG) console.error(err);
    return 1;
  }
}

function describeOptions(opts: Command["options"]): string {
  return Object.entries(opts)
    .map(([k, o]) => `  ${o.short ? `-${o.short}, ` : "    "}--${k}${o.type === "string" ? " <value>" : ""}${o.default !== undefined && o.type === "string" ? `  (default ${o.default})` : ""}`)
    .join("\n");
}
