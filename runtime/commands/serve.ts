/**
 * `apfa serve`: a thin command over server/serve.ts (the CLI imports the server, never the
 * reverse).
 * @module
 */
import { cliLogger, loadOrFail, onceSignal, type Command } from "./common.ts";

export const serveCmd: Command = {
  summary: "Serve the advice API: loads the latest index, hot-swaps on events, answers /generate-advice, /search, /health, /ready, /metrics, /index.",
  usage: "apfa serve [-c pipeline.yaml] [--port N] [--processes N|auto (default: auto, one per core)] [--no-sync-build]",
  options: { port: { type: "string", short: "p" }, processes: { type: "string" }, "no-sync-build": { type: "boolean" } },
  async run({ values }) {
    // Loaded here, not at the top, so the CLI's other commands load none of the server. Started before the
    // config is read so the two overlap; a usage error below simply leaves it unused.
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
    let asked = flag === undefined ? config.server.processes : flag === "auto" ? "auto" : Number(flag);
    if (asked !== "auto" && !(Number.isInteger(asked) && asked >= 0 && asked <= 256)) {
      console.error(`apfa serve: --processes must be 0-256 or auto (0 and auto: one per core; got ${flag})`);
      return 2;
    }
    // Deno forks through node:cluster, but there a forked process cannot start worker threads (flat's search
    // worker: "process.connected is not supported in workers") and sharing the port needs --unstable-net.
    if ("Deno" in globalThis && asked !== 1) {
      if (asked !== "auto" && asked !== 0) {
        console.error(`apfa serve: ${flag === undefined ? "server.processes" : "--processes"} ${asked} needs Node (node:cluster); under Deno apfa serve runs one process: set 1 or auto, or run it with node`);
        return 2;
      }
      log.info("one server process: under Deno `auto` means 1 (several processes need Node's node:cluster)", { processes: 1 });
      asked = 1;
    }
    const { startServer } = await server;
    const opts = { port, syncBuild: !values["no-sync-build"] };
    // A forked server process carries its slot in the environment; only then, or with more than one process
    // asked for (auto included), is node:cluster loaded at all (Deno has come here with 1).
    const slot = process.env.APFA_PROCESS;
    if (slot !== undefined || asked !== 1) {
      const c = await import("../../server/cluster.ts");
      if (slot !== undefined && c.processIndex() !== undefined) {
        const index = Number(slot);
        const plog = log.child({ process: index });
        const s = await startServer(config, plog, { ...opts, port: Number(process.env[c.PORT_ENV]), cluster: { index, metrics: (r) => c.clusterMetrics(r, index), swaps: (h) => c.swapParticipant(h, plog.child({ component: "index" })), pinned: c.pinnedVersion(), cachePeers: c.cachePeers(), share: c.processShare() } });
        const st = s.status();
        c.reportReady({ url: s.url, version: st.version, count: st.count });
        // The supervisor gone (killed) means nobody restarts or stops us: stop rather than linger. A Ctrl-C reaches
        // every process of the terminal's group and the supervisor then sends SIGTERM too: that second signal must
        // not cut the graceful stop short (in-flight requests, the embedded Postgres process 0 runs); the
        // supervisor's SIGKILL after its stop timeout is what forces.
        const sig = await Promise.race([onceSignal({ repeat: "ignore" }), new Promise<string>((r) => process.once("disconnect", () => r("supervisor gone")))]);
        plog.info("server process stopping", { signal: sig });
        await s.stop();
        plog.info("server process stopped");
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
