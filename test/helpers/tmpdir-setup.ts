/**
 * vitest global setup: every temporary file or folder a test run makes goes under one folder of its own, removed
 * when the run ends. Tests and the servers, workers and CLIs they start take `os.tmpdir()` (TMPDIR, inherited),
 * and several leave what they made behind (version files written for an engine, a source file per module, a
 * killed process's cache): ~160 MB in /tmp after a few runs before this.
 * @module
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export default function setup(): () => void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "apfa-tmp-run-"));
  // As /tmp is: the embedded Postgres runs as the `postgres` user under root and reads files tests put here.
  fs.chmodSync(dir, 0o1777);
  const before = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  return () => {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    fs.rmSync(dir, { recursive: true, force: true });
  };
}
