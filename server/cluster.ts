/**
 * `apfa serve --processes N`: a supervisor forks N server processes that share one listening port through
 * node:cluster (Node 20 has no `reusePort`; cluster's round-robin hands each connection to one process).
 * The supervisor serves nothing itself: it starts the processes, restarts one that dies (with backoff),
 * answers a process's request for every process's metrics (each ready process's registry as JSON, merged with
 * prom-client's AggregatorRegistry.aggregate), and on
 * SIGTERM/SIGINT stops them all gracefully. Each process keeps its own notifier subscription and `latest` poll,
 * but does not swap on them: it asks the supervisor, which runs a swap round (server/swap-rounds.ts) so that a
 * version is served by every process or by none. Node-only: this file is the runtime adapter.
 * @module
 */
import cluster, { type Worker } from "node:cluster";
import * as net from "node:net";
import * as os from "node:os";
import promClient from "prom-client";
import type { Logger } from "../runtime/contracts.ts";
import type { CacheFill, CachePeers } from "./cache.ts";
import { coreShareEnv } from "../runtime/cores.ts";
import { errorMessage } from "../runtime/errors.ts";
import type { IndexHolder, PreparedSwap } from "./index-holder.ts";
import { createSwapRounds, type RoundCommand } from "./swap-rounds.ts";

/** The env var that tells a forked process its slot (0-based); unset in a single-process server. */
export const PROCESS_ENV = "APFA_PROCESS";
/** The port every process listens on (the supervisor resolves port 0 once, so all share it). */
export const PORT_ENV = "APFA_PROCESS_PORT";
/** The version a (re)started process loads first: the one the others serve, so it joins on the same version. */
export const VERSION_ENV = "APFA_PROCESS_VERSION";
/** How many processes serve: each warms its share of a new version's most asked questions. */
export const PROCESSES_ENV = "APFA_PROCESSES";

type Metrics = promClient.MetricObjectWithValues<promClient.MetricValue<string>>[];

/** Messages between the supervisor and its processes (over cluster's IPC channel). */
type Msg =
  | { apfa: "ready"; url: string; version?: string; count?: number }
  | { apfa: "metrics-req"; id: number }
  | { apfa: "metrics-res"; id: number; text?: string; error?: string }
  | { apfa: "metrics-get"; id: number }
  | { apfa: "metrics-json"; id: number; json?: Metrics; error?: string }
  | { apfa: "swap-request"; version: string; reason: string }
  | { apfa: "swap-prepared"; round: number; version: string }
  | { apfa: "swap-failed"; round: number; version: string; reason: string }
  | { apfa: "cache-fill"; fill: CacheFill }
  | RoundCommand;

/**
 * `server.processes` / `--processes` resolved: 0 or `auto` (the default) = one per core, so a 1-core machine
 * runs a single process without a supervisor; a number is taken as asked.
 */
export function resolveProcesses(v: number | "auto", cores = os.availableParallelism()): number {
  return v === "auto" || v === 0 ? Math.max(1, cores) : v;
}

/** This process's slot when it runs under the supervisor, else undefined. */
export function processIndex(): number | undefined {
  return cluster.isWorker && process.env[PROCESS_ENV] !== undefined ? Number(process.env[PROCESS_ENV]) : undefined;
}

/**
 * cluster shares a listening socket by its address and port, but gives each process its own random port for
 * port 0: the supervisor asks the OS for a free port once and hands it to every process.
 */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().once("error", reject).listen(0, host, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export interface SupervisorOptions {
  processes: number;
  /** The port every process listens on; 0 = one free port picked here. */
  port: number;
  host: string;
  log: Logger;
  /** Resolves with the signal that should stop the supervisor. */
  stopSignal: Promise<string>;
  /** First restart delay, doubled per consecutive failure of a slot up to `maxBackoffMs`. @default 500 */
  backoffMs?: number;
  /** @default 30000 */
  maxBackoffMs?: number;
  /** A swap round not settled this long after it started is aborted in every process. @default 300000 */
  swapTimeoutMs?: number;
  /** A process that has not exited this long after SIGTERM is killed. @default 30000 */
  stopTimeoutMs?: number;
  /** A ready process that has not sent its metrics this long after being asked is left out of /metrics. @default 5000 */
  metricsTimeoutMs?: number;
}

/**
 * Runs in the primary: forks the processes (the first alone, so a sync build or a download happens once and
 * the rest find the local cache), keeps them running, and resolves 0 once all stopped after a signal.
 */
export async function runSupervisor(o: SupervisorOptions): Promise<number> {
  const { log, processes } = o;
  const port = o.port === 0 ? await freePort(o.host) : o.port;
  const backoff = o.backoffMs ?? 500;
  const maxBackoff = o.maxBackoffMs ?? 30_000;
  const slots: Array<{ worker?: Worker; failures: number; timer?: NodeJS.Timeout; ready: boolean }> =
    Array.from({ length: processes }, () => ({ failures: 0, ready: false }));
  let stopping = false;
  let announced = false;
  let firstReady: (() => void) | undefined;
  const firstUp = new Promise<void>((r) => (firstReady = r));
  const live = () => slots.flatMap((s, i) => (s.ready && s.worker ? [i] : []));
  let nextAsk = 0;
  const asked = new Map<number, (json: Metrics | undefined) => void>();
  /**
   * Every ready process's metrics, merged. Only ready processes are asked: one still starting (or restarting)
   * has no registry to answer with, and waiting for it made /metrics fail for as long as a start takes. A
   * ready process that does not answer in time is left out (and logged) rather than failing the scrape.
   */
  const gatherMetrics = async (): Promise<string> => {
    const parts = await Promise.all(live().map((i) => new Promise<Metrics | undefined>((resolve) => {
      const w = slots[i].worker;
      if (!w?.isConnected()) return resolve(undefined);
      const id = nextAsk++;
      const timer = setTimeout(() => {
        asked.delete(id);
        log.warn("server process sent no metrics in time; left out of this scrape", { process: i, pid: w.process.pid });
        resolve(undefined);
      }, o.metricsTimeoutMs ?? 5_000);
      asked.set(id, (json) => (clearTimeout(timer), asked.delete(id), resolve(json)));
      w.send({ apfa: "metrics-get", id } satisfies Msg, (err: Error | null) => err && asked.get(id)?.(undefined));
    })));
    return promClient.AggregatorRegistry.aggregate(parts.filter((p): p is Metrics => p !== undefined)).metrics();
  };
  const rounds = createSwapRounds<NodeJS.Timeout>({
    timeoutMs: o.swapTimeoutMs ?? 300_000,
    timer: { set: (fn, ms) => setTimeout(fn, ms), clear: (t) => clearTimeout(t) },
    send(slot, cmd) {
      const w = slots[slot].worker;
      if (w?.isConnected()) w.send(cmd, (err: Error | null) => err && log.warn("cannot reach server process", { process: slot, error: err.message }));
    },
    onCommit: (version, at) => log.info("swap committed in every process", { version, processes: at }),
    onAbort: (version, reason, at, code) => log.warn("swap aborted in every process", { version, reason, code, processes: at }),
  });

  const fork = (i: number) => {
    const slot = slots[i];
    slot.ready = false;
    const w = cluster.fork({ [PROCESS_ENV]: String(i), [PORT_ENV]: String(port), [PROCESSES_ENV]: String(processes), [VERSION_ENV]: rounds.committed() ?? "", ...coreShareEnv(processes) });
    slot.worker = w;
    w.on("message", (m: Msg) => {
      if (m?.apfa === "cache-fill") {
        // To every other process that runs, ready or not: one still warming a version may use it.
        for (const [j, other] of slots.entries()) if (j !== i && other.worker?.isConnected()) other.worker.send(m, undefined, {}, () => {});
      } else if (m?.apfa === "ready") {
        slot.ready = true;
        slot.failures = 0;
        if (i === 0) firstReady?.();
        log.info("server process ready", { process: i, pid: w.process.pid, url: m.url, index_version: m.version });
        rounds.joined(i, m.version, live());
        if (!announced && slots.every((s) => s.ready)) {
          announced = true;
          log.info("server ready", { url: m.url, processes, pids: slots.map((s) => s.worker?.process.pid), index_version: m.version, count: m.count });
        }
      } else if (m?.apfa === "swap-request") {
        if (rounds.request(m.version, live()) === "started") log.info("swap round started", { version: m.version, reason: m.reason, asked_by: i, processes: live() });
      } else if (m?.apfa === "swap-prepared") {
        rounds.prepared(i, m.round);
      } else if (m?.apfa === "swap-failed") {
        rounds.failed(i, m.round, m.reason);
      } else if (m?.apfa === "metrics-json") {
        asked.get(m.id)?.(m.json);
      } else if (m?.apfa === "metrics-req") {
        gatherMetrics().then(
          (text) => w.send({ apfa: "metrics-res", id: m.id, text } satisfies Msg),
          (err) => w.send({ apfa: "metrics-res", id: m.id, error: errorMessage(err) } satisfies Msg),
        ).catch(() => { /* the process died meanwhile */ });
      }
    });
    w.on("exit", (code, signal) => {
      if (slot.worker !== w) return;
      slot.worker = undefined;
      slot.ready = false;
      rounds.exited(i);
      if (i === 0) firstReady?.(); // start the others even if the first failed: they may do better
      if (stopping) return;
      const delay = Math.min(maxBackoff, backoff * 2 ** slot.failures);
      slot.failures++;
      log.warn("server process exited; restarting", { process: i, pid: w.process.pid, code, signal, restart_in_ms: delay });
      slot.timer = setTimeout(() => fork(i), delay);
    });
  };

  fork(0);
  await Promise.race([firstUp, o.stopSignal]);
  if (!stopping) for (let i = 1; i < processes; i++) fork(i);

  const sig = await o.stopSignal;
  stopping = true;
  rounds.close();
  log.info("server stopping", { signal: sig, processes });
  const running = slots.map((s) => (clearTimeout(s.timer), s.worker)).filter((w): w is Worker => Boolean(w));
  await Promise.all(running.map((w) => new Promise<void>((resolve) => {
    if (w.isDead()) return resolve();
    const kill = setTimeout(() => w.process.kill("SIGKILL"), o.stopTimeoutMs ?? 30_000);
    w.once("exit", () => (clearTimeout(kill), resolve()));
    w.process.kill("SIGTERM");
  })));
  log.info("server stopped", { processes });
  return 0;
}

/**
 * In a supervised process: serves `/metrics` for every process. Each process's registry gets a `process`
 * label, and the supervisor merges them, so any process answers with the figures of all.
 */
export function clusterMetrics(registry: promClient.Registry, index: number): () => Promise<string> {
  registry.setDefaultLabels({ process: String(index) });
  let next = 0;
  const waiting = new Map<number, { resolve: (t: string) => void; reject: (e: Error) => void }>();
  process.on("message", (m: Msg) => {
    if (m?.apfa === "metrics-get") {
      registry.getMetricsAsJSON().then(
        (json) => process.send?.({ apfa: "metrics-json", id: m.id, json } satisfies Msg),
        (err) => process.send?.({ apfa: "metrics-json", id: m.id, error: errorMessage(err) } satisfies Msg),
      );
      return;
    }
    if (m?.apfa !== "metrics-res") return;
    const w = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.text !== undefined) w?.resolve(m.text);
    else w?.reject(new Error(m.error ?? "no metrics"));
  });
  return () => new Promise<string>((resolve, reject) => {
    const id = next++;
    waiting.set(id, { resolve, reject });
    process.send!({ apfa: "metrics-req", id } satisfies Msg);
  });
}

/**
 * In a supervised process: the in-process cache's link to the other processes' (server/cache.ts `peers`). A fill
 * goes to the supervisor, which passes it to every other process; a process that cannot be reached misses it
 * and computes that answer itself when asked.
 */
export function cachePeers(): CachePeers {
  return {
    send: (fill) => process.send?.({ apfa: "cache-fill", fill } satisfies Msg, undefined, {}, () => {}),
    onFill(receive) {
      process.on("message", (m: Msg) => {
        if (m?.apfa === "cache-fill") receive(m.fill);
      });
    },
  };
}

/** This process's slot and how many serve, under the supervisor. */
export function processShare(): { index: number; of: number } | undefined {
  const index = processIndex();
  const of = Number(process.env[PROCESSES_ENV]);
  return index !== undefined && Number.isInteger(of) && of > index ? { index, of } : undefined;
}

/** Tells the supervisor this process listens and serves (it then counts towards "server ready"). */
export function reportReady(info: { url: string; version?: string; count?: number }): void {
  process.send?.({ apfa: "ready", ...info } satisfies Msg);
}

/** The version the supervisor asks this process to start on (the one the others serve), if any. */
export function pinnedVersion(): string | undefined {
  return process.env[VERSION_ENV] || undefined;
}

/**
 * In a supervised process: takes part in the supervisor's swap rounds. Returns what the process calls instead of
 * swapping when its subscription or poll sees a version: a request to the supervisor for a round.
 */
export function swapParticipant(holder: Pick<IndexHolder, "prepare" | "commit" | "abort" | "current">, log: Logger): (version: string, reason: string) => Promise<void> {
  const prepared = new Map<number, Promise<PreparedSwap | undefined>>();
  /** Rounds aborted before their prepare finished: one still waiting for its turn then loads nothing. */
  const aborted = new Set<number>();
  const send = (m: Msg) => process.send?.(m, undefined, {}, (err: Error | null) => err && log.warn("cannot reach the supervisor", { error: err.message }));
  process.on("message", (m: Msg) => {
    if (m?.apfa === "swap-prepare") {
      prepared.set(m.round, holder.prepare(m.version, "coordinated", () => aborted.has(m.round)).then(
        (p) => (send({ apfa: "swap-prepared", round: m.round, version: m.version }), p),
        (err) => (send({ apfa: "swap-failed", round: m.round, version: m.version, reason: errorMessage(err) }), undefined),
      ));
    } else if (m?.apfa === "swap-commit" || m?.apfa === "swap-abort") {
      const p = prepared.get(m.round) ?? Promise.resolve(undefined);
      prepared.delete(m.round);
      if (m.apfa === "swap-abort") aborted.add(m.round);
      void p.then((h) => {
        aborted.delete(m.round);
        if (m.apfa === "swap-commit") {
          if (h) holder.commit(h);
        } else {
          holder.abort(h ?? { version: m.version, reason: "coordinated" }, { code: m.code, reason: m.reason });
        }
      }).catch((err) => log.error("swap round step failed", { version: m.version, step: m.apfa, error: errorMessage(err) }));
    }
  });
  return async (version, reason) => {
    if (holder.current()?.version !== version) send({ apfa: "swap-request", version, reason });
  };
}
