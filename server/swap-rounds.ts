/**
 * The supervisor's side of a coordinated swap under `apfa serve --processes N`: a version is served by every
 * process or by none. A round asks each live process to PREPARE the version (download, verify, open, but not
 * serve it); once all have answered `prepared` every process gets COMMIT; a failure, a process that exits, a
 * timeout or a newer version ends the round with ABORT to all, and each keeps serving what it served.
 *
 * Pure and runtime-agnostic: messages go out through `send`, time through an injected timer and clock, so the
 * state machine is tested without processes or sleeps (test/unit/swap-rounds.test.ts). server/cluster.ts wires
 * it to node:cluster's IPC.
 * @module
 */

/** What the supervisor tells a process. */
export type RoundCommand =
  | { apfa: "swap-prepare"; round: number; version: string }
  | { apfa: "swap-commit"; round: number; version: string }
  | { apfa: "swap-abort"; round: number; version: string; code: AbortCode; reason: string };

/** Why a round aborted, as a metric label: a process failed to prepare, the timeout, a newer version, a process exit. */
export type AbortCode = "failed" | "timeout" | "superseded" | "exited";

export interface RoundTimer<T> {
  set(fn: () => void, ms: number): T;
  clear(handle: T): void;
}

export interface SwapRoundsOptions<T> {
  /** A round not settled this long after it started is aborted (`server.swap_timeout_s`). */
  timeoutMs: number;
  send(slot: number, cmd: RoundCommand): void;
  timer: RoundTimer<T>;
  /** @default Date.now */
  now?: () => number;
  /**
   * A version whose round aborted is not tried again for this long: every process relays the same event, and a
   * poll would otherwise retry a broken version every time. A version superseded by a newer one is not taken
   * up again for this long either: a request for it then is a late relay or a poll that read `latest` before
   * the newer publish, and starting it would abort the newer round and flap between the two. @default 60000
   */
  retryAfterMs?: number;
  onCommit?(version: string, slots: number[]): void;
  onAbort?(version: string, reason: string, slots: number[], code: AbortCode): void;
}

interface Round<T> {
  id: number;
  version: string;
  slots: Set<number>;
  waiting: Set<number>;
  timer: T;
}

export function createSwapRounds<T>(o: SwapRoundsOptions<T>) {
  const now = o.now ?? Date.now;
  const retryAfter = o.retryAfterMs ?? 60_000;
  let committed: string | undefined;
  let round: Round<T> | undefined;
  let nextId = 1;
  let lastAbort: { version: string; code: AbortCode; at: number } | undefined;
  /** Versions superseded by a newer request, with when: see `retryAfterMs`. */
  const superseded = new Map<string, number>();

  function start(version: string, live: number[]): boolean {
    if (live.length === 0) return false;
    const id = nextId++;
    const timer = o.timer.set(() => {
      if (round?.id === id) abort("timeout", `timed out after ${Math.round(o.timeoutMs / 1000)} s`);
    }, o.timeoutMs);
    round = { id, version, slots: new Set(live), waiting: new Set(live), timer };
    for (const slot of live) o.send(slot, { apfa: "swap-prepare", round: id, version });
    return true;
  }

  function abort(code: AbortCode, reason: string, gone?: number): void {
    const r = round;
    if (!r) return;
    round = undefined;
    o.timer.clear(r.timer);
    lastAbort = { version: r.version, code, at: now() };
    if (code === "superseded") superseded.set(r.version, now());
    const slots = [...r.slots].filter((s) => s !== gone);
    for (const slot of slots) o.send(slot, { apfa: "swap-abort", round: r.id, version: r.version, code, reason });
    o.onAbort?.(r.version, reason, slots, code);
  }

  function commit(r: Round<T>): void {
    round = undefined;
    o.timer.clear(r.timer);
    committed = r.version;
    const slots = [...r.slots];
    for (const slot of slots) o.send(slot, { apfa: "swap-commit", round: r.id, version: r.version });
    o.onCommit?.(r.version, slots);
  }

  return {
    /** The version every process serves (or will once restarted): what a forked process should load. */
    committed: () => committed,
    /** The version of the round in progress, if any. */
    pending: () => round?.version,
    /**
     * A process saw `version` (an event, a reconnect, a poll). Starts a round over the `live` slots unless the
     * version is already committed, being prepared, or was just aborted; a round for another version is aborted
     * first.
     */
    request(version: string, live: number[]): "started" | "ignored" {
      if (round ? round.version === version : committed === version) return "ignored";
      if (lastAbort?.version === version && lastAbort.code !== "superseded" && now() - lastAbort.at < retryAfter) return "ignored";
      for (const [v, at] of superseded) if (now() - at >= retryAfter) superseded.delete(v);
      if (superseded.has(version)) return "ignored";
      if (round) abort("superseded", `superseded by ${version}`);
      return start(version, live) ? "started" : "ignored";
    },
    prepared(slot: number, id: number): void {
      if (round?.id !== id || !round.waiting.delete(slot)) return;
      if (round.waiting.size === 0) commit(round);
    },
    failed(slot: number, id: number, reason: string): void {
      if (round?.id === id && round.slots.has(slot)) abort("failed", `process ${slot}: ${reason}`);
    },
    /** A process died: a round it was part of cannot commit everywhere, so it aborts. */
    exited(slot: number): void {
      if (round?.slots.has(slot)) abort("exited", `process ${slot} exited`, slot);
    },
    /**
     * A process came up serving `version`. The first one names the committed version; a later one joins a
     * round in progress, or, if it started on another version than the committed one, a round brings every
     * process (those already on it answer at once) to the committed version.
     */
    joined(slot: number, version: string | undefined, live: number[]): void {
      if (round) {
        round.slots.add(slot);
        round.waiting.add(slot);
        o.send(slot, { apfa: "swap-prepare", round: round.id, version: round.version });
      } else if (committed === undefined) {
        committed = version;
      } else if (version !== committed) {
        start(committed, live);
      }
    },
    /** Stops the timer of a round in progress (the supervisor is stopping). */
    close(): void {
      if (round) o.timer.clear(round.timer);
      round = undefined;
    },
  };
}

export type SwapRounds = ReturnType<typeof createSwapRounds>;
