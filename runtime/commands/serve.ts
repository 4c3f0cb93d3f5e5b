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
  usage: "apfa serve [-c pipeline.yaml] [--port N] [--processes N|auto] [--no-sync-build]",
  options: { port: { type: "string", short: "p" }, processes: { type: "string" }, "no-sync-build": { type: "boolean" } },
  async run({ values }) {
    // Loaded here, not at the top: `apfa token` shares this file and needs none of the server. Started before
    // the config is read so the two overlap; a usage error below simply leaves it unused.
    const server = import("../../server/serve.ts");
    server.catch(() => {}); // awaited below, when it is needed
    const config = await loadOrFail(values.config as string);
    const log = cliLogger({ cmd: "serve" });
    const port = values.port !== undefined ? Number(values.port) : undefined;
    if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) {
      console.error(`apfa serve: --port must be 0-65535 (got ${values.port})`);
      return 2;
    }
    const flag = values.processes as string | undefined;
    const asked = flag === undefined ? config.server.processes : flag === "auto" ? "auto" : Number(flag);
    if (asked !== "auto" && !(Number.isInteger(asked) && asked >= 0 && asked <= 256)) {
      console.error(`apfa serve: --processes must be 0-256 or auto (0 and auto: one per core; got ${flag})`);
      return 2;
    }
    const { startServer } = await server;
    const opts = { port, syncBuild: !values["no-sync-build"] };
    // A forked server process carries its slot in the environment; only then, or with more than one process
    // asked for, is node:cluster loaded at all (Deno runs a single process).
    const slot = process.env.APFA_PROCESS;
    if (slot !== undefined || asked === "auto" || asked !== 1) {
      const c = await import("../../server/cluster.ts");
      if (slot !== undefined && c.processIndex() !== undefined) {
        const index = Number(slot);
        const plog = log.child({ process: index });
        const s = await startServer(config, plog, { ...opts, port: Number(process.env[c.PORT_ENV]), cluster: { index, metrics: (r) => c.clusterMetrics(r, index), swaps: (h) => c.swapParticipant(h, plog.child({ component: "index" })), pinned: c.pinnedVersion() } });
        const st = s.status();
        c.reportReady({ url: s.url, version: st.version, count: st.count });
        // The supervisor gone (killed) means nobody restarts or stops us: stop rather than linger.
        const sig = await Promise.race([onceSignal(), new Promise<string>((r) => process.once("disconnect", () => r("supervisor gone")))]);
        plog.info("server process stopping", { signal: sig });
        await s.stop();
        // The IPC channel to the supervisor holds the event loop open: close it so the process exits now.
        if (process.connected) process.disconnect();
        return 0;
      }
      const processes = c.resolveProcesses(asked);
      if (processes > 1) return c.runSupervisor({ processes, port: port ?? config.server.port, host: config.server.host, log, stopSignal: onceSignal(), swapTimeoutMs: config.server.swap_timeout_s * 1000 });
    }
    const s = await startServer(config, log, opts);
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
