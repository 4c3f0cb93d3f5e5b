/**
 * apfa's error type: a stable `code`, a message prefixed with where it happened (`[apfa] [stage:embedder]`),
 * and the underlying `cause`. The CLI and HTTP layers print `message` and never a stack trace.
 * @module
 */

export type ErrorCode =
  | "config"
  | "not_found"
  | "access_denied"
  | "invalid_key"
  | "invalid_input"
  | "plugin"
  | "store"
  | "embedder"
  | "index"
  | "notifier"
  | "database"
  | "timeout"
  | "internal";

/** Marks ApfaErrors across copies of this module (dist/ and the sources, or two installs of apfa). */
const BRAND = Symbol.for("apfa.error");

export class ApfaError extends Error {
  /**
   * `err instanceof ApfaError` holds for an ApfaError thrown by any copy of apfa — a plugin importing `apfa`
   * may get another copy than the runtime loading it. Subclasses keep the ordinary prototype check.
   */
  static [Symbol.hasInstance](value: unknown): boolean {
    if (this !== ApfaError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
  readonly code: ErrorCode;
  /** HTTP status the server answers with when this error reaches a request. */
  readonly status: number;

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; status?: number; where?: string } = {}) {
    super(`[apfa]${opts.where ? ` [${opts.where}]` : ""} ${message}`, { cause: opts.cause });
    this.name = "ApfaError";
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    this.status = opts.status ?? (code === "not_found" ? 404 : code === "invalid_input" || code === "invalid_key" ? 400 : 500);
  }
}

/** True for an ApfaError with the given code (or any code). */
export function isApfaError(err: unknown, code?: ErrorCode): err is ApfaError {
  return err instanceof ApfaError && (code === undefined || err.code === code);
}

/** The message of anything thrown, without a stack. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error && !err.message.includes(err.cause.message) ? `: ${err.cause.message}` : "";
    return err.message + cause;
  }
  return String(err);
}

/** Wraps a failure of a stage plugin with its kind and name, keeping the original as `cause`. */
export function stageError(kind: string, name: string, err: unknown, code: ErrorCode = "plugin"): ApfaError {
  if (err instanceof ApfaError) return err;
  return new ApfaError(code, errorMessage(err), { cause: err, where: `stage:${kind}:${name}` });
}
