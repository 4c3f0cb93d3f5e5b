import { describe, expect, it } from "vitest";
import { createSwapRounds, type RoundCommand } from "../../server/swap-rounds.ts";

/** A coordinator with a hand-driven clock: `fire()` runs the pending timer as if its time had come. */
function setup(retryAfterMs?: number) {
  const sent: Array<[number, RoundCommand]> = [];
  const outcomes: string[] = [];
  let timer: (() => void) | undefined;
  let t = 0;
  const rounds = createSwapRounds<number>({
    timeoutMs: 300_000,
    retryAfterMs,
    now: () => t,
    send: (slot, cmd) => sent.push([slot, cmd]),
    timer: { set: (fn) => ((timer = fn), 1), clear: () => (timer = undefined) },
    onCommit: (v, slots) => outcomes.push(`commit ${v} ${slots.join(",")}`),
    onAbort: (v, reason, slots) => outcomes.push(`abort ${v} ${slots.join(",")}: ${reason}`),
  });
  const take = () => sent.splice(0).map(([slot, c]) => `${slot} ${c.apfa.slice(5)} ${c.version}`);
  const roundOf = () => (sent.at(-1)?.[1].round ?? 0);
  return { rounds, take, outcomes, roundOf, fire: () => timer?.(), hasTimer: () => Boolean(timer), advance: (ms: number) => (t += ms) };
}

describe("swap rounds", () => {
  it("commits in every process once all prepared", () => {
    const s = setup();
    s.rounds.joined(0, "v1", [0]);
    expect(s.rounds.request("v2", [0, 1])).toBe("started");
    const id = s.roundOf();
    expect(s.take()).toEqual(["0 prepare v2", "1 prepare v2"]);
    s.rounds.prepared(1, id);
    expect(s.take()).toEqual([]);
    s.rounds.prepared(0, id);
    expect(s.take()).toEqual(["0 commit v2", "1 commit v2"]);
    expect(s.rounds.committed()).toBe("v2");
    expect(s.hasTimer()).toBe(false);
    expect(s.rounds.request("v2", [0, 1])).toBe("ignored");
  });

  it("aborts in every process when one fails to prepare", () => {
    const s = setup();
    s.rounds.joined(0, "v1", [0]);
    s.rounds.request("v2", [0, 1]);
    const id = s.roundOf();
    s.take();
    s.rounds.prepared(0, id);
    s.rounds.failed(1, id, "unreadable");
    expect(s.take()).toEqual(["0 abort v2", "1 abort v2"]);
    expect(s.outcomes).toEqual(["abort v2 0,1: process 1: unreadable"]);
    expect(s.rounds.committed()).toBe("v1");
    s.rounds.prepared(1, id); // late answers of a finished round change nothing
    expect(s.take()).toEqual([]);
  });

  it("aborts when the round times out, and does not retry the version at once", () => {
    const s = setup(60_000);
    s.rounds.joined(0, "v1", [0]);
    s.rounds.request("v2", [0, 1]);
    s.rounds.prepared(0, s.roundOf());
    s.take();
    s.fire();
    expect(s.take()).toEqual(["0 abort v2", "1 abort v2"]);
    expect(s.outcomes[0]).toMatch(/timed out after 300 s/);
    expect(s.rounds.request("v2", [0, 1])).toBe("ignored");
    s.advance(60_000);
    expect(s.rounds.request("v2", [0, 1])).toBe("started");
  });

  it("a newer version supersedes the pending round", () => {
    const s = setup();
    s.rounds.joined(0, "v1", [0]);
    s.rounds.request("v2", [0, 1]);
    const old = s.roundOf();
    s.rounds.prepared(0, old);
    expect(s.rounds.request("v2", [0, 1])).toBe("ignored");
    s.take();
    s.rounds.request("v3", [0, 1]);
    const id = s.roundOf();
    expect(s.take()).toEqual(["0 abort v2", "1 abort v2", "0 prepare v3", "1 prepare v3"]);
    expect(s.outcomes).toEqual(["abort v2 0,1: superseded by v3"]);
    s.rounds.prepared(1, old);
    s.rounds.prepared(0, id);
    s.rounds.prepared(1, id);
    expect(s.take()).toEqual(["0 commit v3", "1 commit v3"]);
    expect(s.rounds.committed()).toBe("v3");
    // A late relay or a poll that read `latest` before v3 was published: taking v2 up again would swap back to
    // an older version (and, during a round for v3, abort it). It may come back once the retry delay is over.
    expect(s.rounds.request("v2", [0, 1])).toBe("ignored");
    s.advance(60_000);
    expect(s.rounds.request("v2", [0, 1])).toBe("started");
  });

  it("a late request for a superseded version does not abort the newer round (no flapping)", () => {
    const s = setup();
    s.rounds.joined(0, "v1", [0]);
    s.rounds.request("v2", [0, 1]);
    s.rounds.request("v3", [0, 1]);
    const id = s.roundOf();
    s.take();
    expect(s.rounds.request("v2", [0, 1])).toBe("ignored");
    expect(s.take()).toEqual([]);
    s.rounds.prepared(0, id);
    s.rounds.prepared(1, id);
    expect(s.take()).toEqual(["0 commit v3", "1 commit v3"]);
    expect(s.outcomes).toEqual(["abort v2 0,1: superseded by v3", "commit v3 0,1"]);
  });

  it("a process that exits mid-round aborts it; restarted, it is brought to the committed version", () => {
    const s = setup();
    s.rounds.joined(0, "v1", [0]);
    s.rounds.request("v2", [0, 1]);
    s.rounds.prepared(0, s.roundOf());
    s.take();
    s.rounds.exited(1);
    expect(s.take()).toEqual(["0 abort v2"]);
    expect(s.outcomes).toEqual(["abort v2 0: process 1 exited"]);
    s.rounds.joined(1, "v1", [0, 1]); // restarted on the committed version: nothing to do
    expect(s.take()).toEqual([]);
    s.rounds.joined(1, "v2", [0, 1]); // restarted on another one: everyone is brought to v1
    expect(s.take()).toEqual(["0 prepare v1", "1 prepare v1"]);
  });

  it("a process that comes up during a round joins it", () => {
    const s = setup();
    s.rounds.joined(0, "v1", [0]);
    s.rounds.request("v2", [0]);
    const id = s.roundOf();
    s.rounds.joined(1, "v1", [0, 1]);
    expect(s.take()).toEqual(["0 prepare v2", "1 prepare v2"]);
    s.rounds.prepared(0, id);
    expect(s.take()).toEqual([]);
    s.rounds.prepared(1, id);
    expect(s.take()).toEqual(["0 commit v2", "1 commit v2"]);
  });
});
