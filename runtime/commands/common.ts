/** The command shape and helpers shared by CLI commands. @module */
import type { ParseArgsConfig } from "node:util";
import type { PipelineConfig } from "../config/schema.ts";
import { formatProblem, loadConfig } from "../config/load.ts";
import { ApfaError } from "../errors.ts";
import { createLogger } from "../log.ts";
import type { Logger } from "../contracts.ts";

/** One `apfa <name>` command: runtime/cli.ts parses `options` and hands the result to `run` (exit code back). */
export interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig["options"]>;
  run(args: { values: Record<string, unknown>; positionals: string[] }): Promise<number>;
}

/**
 * Loads and validates the pipeline; on problems prints them all and throws. `checkPlugins: false` skips
 * loading the stage plugins to check their options (for commands that use no plugin, like `apfa token`).
 */
export async function loadOrFail(file: string, opts: Parameters<typeof loadConfig>[1] = {}): Promise<PipelineConfig> {
  const r = await loadConfig(file, opts);
  if (!r.config) {
    for (const p of r.problems) console.error(formatProblem(p));
    throw new ApfaError("config", `${file}: ${r.problems.length} problem${r.problems.length === 1 ? "" : "s"}; fix them (apfa lint ${file})`);
  }
  return r.config;
}

export function cliLogger(fields: Record<string, unknown> = {}): Logger {
  return createLogger(fields);
}

/** Waits for SIGINT/SIGTERM once; returns the signal name. */
export function onceSignal(): Promise<string> {
  return new Promise((resolve) => {
    const handler = (sig: string) => {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
      resolve(sig);
    };
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
  });
}
