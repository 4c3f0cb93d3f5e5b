/**
 * A real S3 API for tests: `s3rver` in a child process on a random free 127.0.0.1 port, storing into a fresh
 * temp directory, with its own random credentials. `stop()` kills the process (connections drop mid-flight,
 * like a crashed server); `restart()` brings it back on the same port and data directory.
 *
 * Why a child process: s3rver signs ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only has in
 * its legacy provider, so any listing longer than one page fails with a 500 unless Node runs with
 * `--openssl-legacy-provider` — a flag a process cannot turn on for itself.
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export interface TestS3 {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  /** A unique bucket name, not yet created. */
  bucket: string;
  accessKey: string;
  secretKey: string;
  /** The data directory (kept across restarts, removed by `cleanup`). */
  dir: string;
  /** Env for a store: `{ AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY }`. */
  env: Record<string, string>;
  /** `METHOD url` of every request the server received, oldest first (clear it with `requests.length = 0`). */
  requests: string[];
  /** Resolves once `requests` holds every request the server has received so far (it arrives over a pipe). */
  settle(): Promise<void>;
  /** Kills the server; open connections are reset. */
  stop(): Promise<void>;
  /** Starts it again (stopping it first if running) on the same port with the same data. */
  restart(): Promise<void>;
  /** Stops (if running) and deletes the data directory. */
  cleanup(): Promise<void>;
}

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

// Runs in the child. s3rver checks access key ids against a static registry, so the random pair is added
// there; V4 signatures themselves are not verified by s3rver.
const CHILD = `
const S3rver = require("s3rver");
const { DUMMY_ACCOUNT } = require("s3rver/lib/models/account");
const [port, dir, ak, sk] = process.argv.slice(1);
DUMMY_ACCOUNT.createKeyPair(ak, sk);
process.on("disconnect", () => process.exit(0));
const s = new S3rver({ address: "127.0.0.1", port: Number(port), directory: dir, silent: true, vhostBuckets: false });
s.run().then((addr) => {
  s.httpServer.on("request", (req) => process.stdout.write("REQ " + req.method + " " + req.url + "\\n"));
  process.stdout.write("READY " + addr.port + "\\n");
}, (err) => { console.error(err); process.exit(1); });
`;

export async function startS3(): Promise<TestS3> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-s3rver-"));
  const accessKey = `AK${crypto.randomBytes(8).toString("hex").toUpperCase()}`;
  const secretKey = crypto.randomBytes(20).toString("base64url");
  const requests: string[] = [];
  let child: ChildProcess | undefined;
  let port = 0;

  const start = () =>
    new Promise<void>((resolve, reject) => {
      const c = spawn(process.execPath, ["--openssl-legacy-provider", "-e", CHILD, String(port), dir, accessKey, secretKey], {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "inherit", "ipc"],
      });
      c.once("exit", (code) => reject(new Error(`s3rver exited with code ${code} before it was ready`)));
      createInterface({ input: c.stdout! }).on("line", (line) => {
        if (line.startsWith("REQ ")) requests.push(line.slice(4));
        else if (line.startsWith("READY ")) {
          port = Number(line.slice(6));
          child = c;
          resolve();
        }
      });
    });

  const stop = async () => {
    const c = child;
    if (!c) return;
    child = undefined;
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once("exit", r));
      c.kill("SIGKILL");
      await exited;
    }
  };

  await start();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket: `apfa-test-${Date.now().toString(36)}-${crypto.randomBytes(3).toString("hex")}`,
    accessKey,
    secretKey,
    dir,
    env: { AWS_ACCESS_KEY_ID: accessKey, AWS_SECRET_ACCESS_KEY: secretKey },
    requests,
    async settle() {
      const mark = `/?apfa-settle=${crypto.randomUUID()}`;
      await fetch(`http://127.0.0.1:${port}${mark}`).then((r) => r.arrayBuffer());
      while (!requests.includes(`GET ${mark}`)) await new Promise((r) => setTimeout(r, 5));
      requests.splice(requests.indexOf(`GET ${mark}`), 1);
    },
    stop,
    async restart() {
      await stop();
      await start();
    },
    async cleanup() {
      await stop();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
