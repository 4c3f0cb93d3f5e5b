/**
 * Admission control for the expensive routes (search, advice): at most `max_active` requests are worked on at
 * once, at most `max_queued` more wait in arrival order for at most `max_wait_ms`, and anything past that is
 * refused, so the server answers an overload with a fast 503 instead of a backlog that ends in client timeouts.
 * Runtime-neutral (no Node APIs): the server wraps its route handlers with it.
 * @module
 */

/** `server.overload` in pipeline.yaml. */
export interface AdmissionOptions {
  /** Search/advice requests worked on at once. @default 64 */
  max_active: number;
  /** Requests waiting for a slot; one more is answered 503. @default 1024 */
  max_queued: number;
  /** Longest a request waits for a slot before it is refused too. @default 500 */
  max_wait_ms: number;
  /** Seconds sent in `Retry-After` with the 503. @default 1 */
  retry_after_s: number;
}

/** Ends a request's hold on its slot (hands it to the oldest waiter); calling it twice is harmless. */
export type Release = () => void;

export interface Admission {
  /**
   * A slot now, a place in the queue, or `undefined` when the queue is full (answer 503). A request whose
   * `signal` aborts while queued leaves the queue and the promise rejects with the signal's reason; one that
   * waits `max_wait_ms` (or `waitMs`, when given: what is left of a request's own budget) leaves it and the
   * promise rejects with a {@link QueueWaitExceeded}; with no slot free and `waitMs` <= 0 it rejects at once.
   */
  enter(signal?: AbortSignal, waitMs?: number): Promise<Release> | undefined;
  /** Requests holding a slot and requests waiting, right now. */
  stats(): { active: number; queued: number };
}

/** A queued request that waited `max_wait_ms` without getting a slot (answer 503, like a full queue). */
export class QueueWaitExceeded extends Error {
  constructor(ms: number) {
    // Under overload thousands are made a second and none is logged: a stack trace would be pure cost.
    const depth = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(`waited ${ms} ms for a slot`);
    Error.stackTraceLimit = depth;
    this.name = "QueueWaitExceeded";
  }
}

interface Waiter {
  grant: (r: Release) => void;
  fail: (err: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
  timer?: ReturnType<typeof setTimeout>;
}

/** Creates an admission gate; all state is in the returned object. */
export function createAdmission(opts: Pick<AdmissionOptions, "max_active" | "max_queued" | "max_wait_ms">): Admission {
  let active = 0;
  // An array with a moving head: shift() on a long queue is O(n) per request.
  let queue: Waiter[] = [];
  let head = 0;

  const release = (): Release => {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      while (head < queue.length) {
        const w = queue[head++];
        if (head > 1024 && head * 2 > queue.length) {
          queue = queue.slice(head);
          head = 0;
        }
        if (w.signal?.aborted) continue;
        if (w.onAbort) w.signal!.removeEventListener("abort", w.onAbort);
        clearTimeout(w.timer);
        w.grant(release()); // the slot passes straight on: `active` is unchanged
        return;
      }
      active--;
    };
  };

  return {
    enter(signal, waitMs = opts.max_wait_ms) {
      if (signal?.aborted) return Promise.reject(signal.reason);
      if (active < opts.max_active) {
        active++;
        return Promise.resolve(release());
      }
      if (queue.length - head >= opts.max_queued) return undefined;
      if (waitMs <= 0) return Promise.reject(new QueueWaitExceeded(opts.max_wait_ms));
      return new Promise<Release>((grant, fail) => {
        const w: Waiter = { grant, fail, signal };
        const leave = (err: unknown) => {
          const i = queue.indexOf(w, head);
          if (i >= 0) queue.splice(i, 1);
          clearTimeout(w.timer);
          if (w.onAbort) signal!.removeEventListener("abort", w.onAbort);
          fail(err);
        };
        if (signal) {
          w.onAbort = () => leave(signal.reason);
          signal.addEventListener("abort", w.onAbort, { once: true });
        }
        w.timer = setTimeout(() => leave(new QueueWaitExceeded(opts.max_wait_ms)), waitMs);
        queue.push(w);
      });
    },
    stats: () => ({ active, queued: queue.length - head }),
  };
}
