/**
 * `apfa serve` and `apfa token`: thin commands over server/serve.ts (the CLI imports the server, never the
 * reverse).
 * @module
 */
import { mintToken } from "../../server/auth.ts";
import { resolveAuth } from "../../server/auth-config.ts";
import { cliLogger, loadOrFail, onceSignal, type Command } from "./common.ts";

export const serveCmd: Command = {
  summary: "Serve the advice API: loads the latest index, hot-swaps on events, answers /generate-advice, /search, /health, /ready, /metrics, /index.",
  usage: "apfa serve [-c pipeline.yaml] [--port N] [--no-sync-build]",
  options: { port: { type: "string", short: "p" }, "no-sync-build": { type: "boolean" } },
  async run({ values }) {
    const config = await loadOrFail(values.config as string);
    const log = cliLogger({ cmd: "serve" });
    const port = values.port !== undefined ? Number(values.port) : undefined;
    if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) {
      console.error(`apfa serve: --port must be 0-65535 (got ${values.port})`);
      return 2;
    }
    // Loaded here, not at the top: `apfa token` shares this file and needs none of the server.
    const { startServer } = await import("../../server/serve.ts");
    const s = await startServer(config, log, { port, syncBuild: !values["no-sync-build"] });
    const sig = await onceSignal();
    log.info("server stopping", { signal: sig });
    await s.stop();
    return 0;
  },
};

export const tokenCmd: Command = {
  summary: "Mint a development JWT for the configured HS256 secret (or the per-install dev secret).",
  usage: "apfa token [--sub user] [--ttl 3600]",
  options: { sub: { type: "string", default: "dev" }, ttl: { type: "string", default: "3600" } },
  async run({ values }) {
    const config = await loadOrFail(values.config as string, { checkPlugins: false });
    const auth = resolveAuth(config);
    if (!auth) {
      console.error("apfa token: server.auth.mode is none; no token is needed");
      return 1;
    }
    console.log(await mintToken(auth, { sub: String(values.sub), ttl_s: Number(values.ttl) }));
    return 0;
  },
};
