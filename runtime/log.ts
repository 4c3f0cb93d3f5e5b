/**
 * Structured JSON logs, one object per line on stderr, so `apfa worker | jq` works and log shippers need no
 * parser. `APFA_LOG_LEVEL` (debug|info|warn|error) filters; `APFA_LOG_FORMAT=pretty` prints a short
 * human form instead. Values under keys that look like secrets are masked.
 * @module
 */
import type { Logger } from "./contracts.ts";

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
type Level = keyof typeof LEVELS;

const SECRET_KEY = /pass(word)?|secret|token|api[_-]?key|authorization|credential/i;

function env(name: string): string | undefined {
  return (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
}

/** Replaces secret-looking values and credentials embedded in URLs. */
export function redact(value: unknown, key = ""): unknown {
  if (SECRET_KEY.test(key) && value !== undefined && value !== null && value !== "") return "***";
  if (typeof value === "string") return value.replace(/(\w+:\/\/[^:/@\s]*:)[^@\s]+@/g, "$1***@");
  if (Array.isArray(value)) return value.map((v) => redact(v));
  if (value instanceof Error) return value.message;
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v, k)]));
  }
  return value;
}

export interface LoggerOptions {
  level?: Level;
  pretty?: boolean;
  write?: (line: string) => void;
}

export function createLogger(fields: Record<string, unknown> = {}, opts: LoggerOptions = {}): Logger {
  const min = LEVELS[opts.level ?? (env("APFA_LOG_LEVEL") as Level | undefined) ?? "info"] ?? LEVELS.info;
  const pretty = opts.pretty ?? env("APFA_LOG_FORMAT") === "pretty";
  const write = opts.write ?? ((line: string) => console.error(line));
  const emit = (level: Level, msg: string, extra?: Record<string, unknown>) => {
    if (LEVELS[level] < min) return;
    const rec = redact({ time: new Date().toISOString(), level, msg, ...fields, ...extra }) as Record<string, unknown>;
    if (pretty) {
      const { time: _t, level: _l, msg: _m, ...rest } = rec;
      const tail = Object.keys(rest).length ? " " + JSON.stringify(rest) : "";
      write(`${level.toUpperCase().padEnd(5)} ${msg}${tail}`);
    } else {
      write(JSON.stringify(rec));
    }
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (f) => createLogger({ ...fields, ...f }, { level: opts.level, pretty, write }),
  };
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};
