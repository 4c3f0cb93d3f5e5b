/**
 * `apfa/server`: the HTTP API (`/search`, `/generate-advice`, `/health`, `/ready`, `/metrics`, `/index`, the
 * operations `/api` and `/dashboard`) for mounting in a server you already run. It loads the latest index,
 * follows hot swaps and answers with the auth, cache and limits of pipeline.yaml's `server:` block — what
 * `apfa serve` does, minus the listening socket.
 *
 * @example Inside an h3 app, under a prefix:
 * ```ts
 * import { H3, serve } from "h3";
 * import { loadPipeline } from "apfa";
 * import { createApfaHandler, consoleLogger } from "apfa/server";
 *
 * const apfa = await createApfaHandler(await loadPipeline("pipeline.yaml"), consoleLogger());
 * const app = new H3().get("/", () => "my app").mount("/rag", apfa.app);
 * serve(app, { port: 3000 });
 * ```
 * @example In a plain Node server: `http.createServer(toNodeHandler(apfa.app))` with `toNodeHandler` from `h3/node`.
 * @module
 */
import type { Logger } from "../runtime/contracts.ts";
import { createLogger } from "../runtime/log.ts";

export { createApfaHandler, startServer, type ApfaHandler, type HandlerOptions, type RunningServer } from "./serve.ts";

/** The CLI's logger (one line per event on stderr; APFA_LOG_LEVEL, APFA_LOG_FORMAT=json). */
export function consoleLogger(fields: Record<string, unknown> = {}): Logger {
  return createLogger(fields);
}
