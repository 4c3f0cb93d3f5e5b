/** Helpers shared by CLI commands. @module */
import type { PipelineConfig } from "../config/schema.ts";
import { formatProblem, loadConfig } from "../config/load.ts";
import { ApfaError } from "../errors.ts";
import { createLogger } from "../log.ts";
import type { Logger } from "../contracts.ts";

/** Loads and validates the pipeline; on problems prints them all and throws. */
export async function loadOrFail(file: string): Promise<PipelineConfig> {
  const r = await loadConfig(file);
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
