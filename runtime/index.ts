/**
 * `apfa`: the public API for plugin authors and for programs that embed apfa. Everything else in the package
 * is private and may change without notice.
 *
 * @example A source plugin in its own file (load it from pipeline.yaml with `plugin: ./my-source.ts`):
 * ```ts
 * import { definePlugin, z } from "apfa";
 *
 * export default definePlugin({
 *   kind: "source",
 *   name: "my-source",
 *   description: "three fixed documents",
 *   options: z.strictObject({ prefix: z.string().default("doc") }),
 *   create: (opts) => ({
 *     async *pages() {
 *       yield [1, 2, 3].map((i) => ({ id: `${opts.prefix}-${i}`, text: `document ${i}` }));
 *     },
 *   }),
 * });
 * ```
 * @example Reading a pipeline in a program (every problem located, as `apfa lint` prints them):
 * ```ts
 * import { loadPipeline } from "apfa";
 * const config = await loadPipeline("pipeline.yaml");
 * ```
 * @module
 */
import { formatProblem, loadConfig } from "./config/load.ts";
import type { PipelineConfig } from "./config/schema.ts";
import { ApfaError } from "./errors.ts";

export { definePlugin, isMalformed, PLUGIN_KINDS } from "./contracts.ts";
export type {
  Advice, Embedder, Generator, IndexArtifact, IndexEngine, Logger, Metric, Notifier, PluginContext, PluginDefinition,
  PluginInstance, PluginKind, RetrievedDoc, SearchResult, Searcher, Source, SourceChanges, SourceItem, SourceMalformed,
  SourceRecord, Store, StoreStat, SwapEvent,
} from "./contracts.ts";
export { ApfaError, errorMessage, isApfaError, type ErrorCode } from "./errors.ts";
export { createLogger, silentLogger } from "./log.ts";
export { formatProblem, loadConfig, type LoadResult, type Problem, type ProblemKind } from "./config/load.ts";
export type { PipelineConfig } from "./config/schema.ts";
/** apfa's own zod, so a plugin's options schema needs no zod install of its own (any zod v4 works too). */
export { z } from "zod";

/**
 * Loads and validates a pipeline file (defaults → file → environment), including each stage plugin's options.
 * Throws one {@link ApfaError} (code `config`) whose message lists every problem as `file:line:col  path  message`.
 */
export async function loadPipeline(file: string, opts: { env?: Record<string, string | undefined> } = {}): Promise<PipelineConfig> {
  const r = await loadConfig(file, opts);
  if (r.config) return r.config;
  throw new ApfaError("config", `${file}: ${r.problems.length} problem${r.problems.length === 1 ? "" : "s"}:\n${r.problems.map(formatProblem).join("\n")}`);
}
