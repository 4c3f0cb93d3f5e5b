/**
 * Run as root, the embedded Postgres drops to the `postgres` user, which must be able to enter every folder on
 * the way to its binaries (inside node_modules) and its data directory. In a private folder (mode 0700, as
 * `/root` and `mktemp -d` make) it cannot, and initdb would die with an unhandled EACCES; this finds the folder
 * in the way first, so the error can name it and the ways out.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** uid and gid of a local user from /etc/passwd, or undefined when there is no such user (yet). */
export function localUser(name: string, passwd = "/etc/passwd"): { uid: number; gid: number } | undefined {
  try {
    for (const line of fs.readFileSync(passwd, "utf8").split("\n")) {
      const f = line.split(":");
      if (f[0] === name && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]) };
    }
  } catch {
    // No passwd file: nothing known.
  }
  return undefined;
}

/** The first folder from the root down to `target` that `user` may not enter (search permission), if any. */
export function blockedFolder(target: string, user: { uid: number; gid: number } | undefined): string | undefined {
  const parts = path.resolve(target).split(path.sep).filter(Boolean);
  let dir = path.parse(path.resolve(target)).root;
  for (const part of ["", ...parts]) {
    dir = part ? path.join(dir, part) : dir;
    let st: fs.Stats;
    try {
      st = fs.statSync(dir);
    } catch {
      return undefined; // not created yet: whoever creates it decides its mode
    }
    if (!st.isDirectory()) return undefined;
    const bits = user && st.uid === user.uid ? (st.mode >> 6) & 7 : user && st.gid === user.gid ? (st.mode >> 3) & 7 : st.mode & 7;
    if ((bits & 1) === 0) return dir;
  }
  return undefined;
}
