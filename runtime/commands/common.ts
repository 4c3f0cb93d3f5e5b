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

/**
 * Waits for SIGINT/SIGTERM once; returns the signal name. A second signal then ends the process at once (a second
 * Ctrl-C forces), unless `repeat: "ignore"`: for a process whose stop is forced by someone else (a server process
 * under `apfa serve --processes N`, which gets the terminal's Ctrl-C and then its supervisor's SIGTERM).
 */
export function onceSignal(opts: { repeat?: "force" | "ignore" } = {}): Promise<string> {
  return new Promise((resolve) => {
    const handler = (sig: string) => {
      if (opts.repeat === "ignore") {
        process.on("SIGINT", ignore);
        process.on("SIGTERM", ignore);
      }
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
      resolve(sig);
    };
    const ignore = () => {};
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
  });
}
