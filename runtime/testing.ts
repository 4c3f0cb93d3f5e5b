/**
 * `apfa/testing`: the conformance suite of each plugin kind, for a plugin author's own vitest (vitest is an
 * optional peer dependency of apfa: install it in the project that runs these). Each suite registers its
 * `describe` block when called at the top of a test file; a plugin's whole test can be a few lines.
 *
 * @example
 * ```ts
 * import { pluginContext, testSource } from "apfa/testing";
 * import mySource from "../my-source.ts";
 *
 * testSource("my-source", async () => mySource.create(mySource.options.parse({}), pluginContext()), { ids: ["doc-1", "doc-2", "doc-3"] });
 * ```
 * @module
 */
import type { PluginContext } from "./contracts.ts";
import { silentLogger } from "./log.ts";

export { sampleTexts, testEmbedder } from "../test/conformance/embedder.ts";
export { SAMPLE_DOCS, SAMPLE_QUERY, testGenerator } from "../test/conformance/generator.ts";
export { randomUnitVectors, testIndexEngine, type IndexSuiteOptions } from "../test/conformance/index.ts";
export { swapEvent, testNotifier, type NotifierSuiteOptions } from "../test/conformance/notifier.ts";
export { testSource } from "../test/conformance/source.ts";
export { testStore } from "../test/conformance/store.ts";

/** The context `create` gets at run time, for calling a plugin in a test: quiet log, `baseDir` the cwd. */
export function pluginContext(overrides: Partial<PluginContext> = {}): PluginContext {
  return { baseDir: process.cwd(), log: silentLogger, env: { ...process.env }, ...overrides };
}
