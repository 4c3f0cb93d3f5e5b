/**
 * Secrets never reach a log line or a CLI output: a full run through the real CLI (migrate, worker, run --wait,
 * serve, token-authenticated requests whose LLM generator fails and falls back, plan, lint, inspect) with a
 * database password, S3 keys, a JWT secret and an OpenAI key set in the environment. Every byte the processes
 * print is searched for each secret.
 */
import { spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, expect, it } from "vitest";
import { HASH_EMBEDDER, withTestDatabase, type TestDatabase } from "../helpers/pg.ts";
import { startS3, type TestS3 } from "../helpers/s3.ts";
import { ROOT, spawnWorker, waitFor, type WorkerProc } from "../faults/harness.ts";

let db: TestDatabase | undefined;
let s3: TestS3 | undefined;
const procs: WorkerProc[] = [];
let dir: string | undefined;

afterAll(async () => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
  await db?.drop();
  await s3?.cleanup();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

function cli(args: string[], env: Record<string, string>, cwd: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(ROOT, "bin/apfa.mjs"), ...args], { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (b) => (out += b));
    p.stderr.on("data", (b) => (out += b));
    p.on("exit", (code) => resolve({ code, out }));
  });
}

it("no secret appears in any output of a full run", async () => {
  db = await withTestDatabase({ prefix: "apfa_secrets" });
  s3 = await startS3();
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-secrets-"));
  const secrets = {
    dbPassword: `pw-${crypto.randomBytes(9).toString("hex")}`,
    jwt: `jwt-${crypto.randomBytes(24).toString("hex")}`,
    openai: `sk-${crypto.randomBytes(16).toString("hex")}`,
    s3: s3.secretKey,
  };
  // Trust auth on the test server ignores the password, so it can be any secret string.
  const url = new URL(db.url);
  url.password = secrets.dbPassword;
  const env: Record<string, string> = {
    ...s3.env,
    DATABASE_URL: url.toString(),
    APFA_JWT_SECRET: secrets.jwt,
    OPENAI_API_KEY: secrets.openai,
    APFA_LOG_LEVEL: "debug",
  };
  await fsp.writeFile(path.join(dir, "docs.jsonl"), Array.from({ length: 300 }, (_, i) => JSON.stringify({ id: `d${i}`, text: `personal loan ${i} at ${5 + (i % 9)}% APR` })).join("\n") + "\n");
  const yaml = path.join(dir, "pipeline.yaml");
  await fsp.writeFile(yaml, [
    "name: secrets",
    "database: { url: \"${DATABASE_URL}\" }",
    `store: { plugin: s3, options: { endpoint: "${s3.endpoint}", bucket: ${s3.bucket} } }`,
    "batch_size: 100",
    "stages:",
    "  source: { plugin: jsonl, options: { path: docs.jsonl } }",
    `  embedder: { plugin: ${HASH_EMBEDDER} }`,
    "  notifier: { plugin: postgres, options: { url: \"${DATABASE_URL}\" } }",
    "  generator: { plugin: openai, options: { base_url: 'http://127.0.0.1:1/v1', timeout_ms: 500 } }",
    "server: { port: 0, auth: { jwt_secret: \"${APFA_JWT_SECRET}\" } }",
  ].join("\n") + "\n");

  const outputs: string[] = [];
  const run = async (args: string[]) => {
    const r = await cli([...args, "-c", yaml], env, dir!);
    outputs.push(`$ apfa ${args.join(" ")}\n${r.out}`);
    return r;
  };
  const lint = await run(["lint"]);
  expect(lint.code, lint.out).toBe(0);
  expect((await run(["plan", "--json"])).code).toBe(0);
  expect((await run(["migrate"])).code).toBe(0);
  const worker = spawnWorker(yaml, env);
  procs.push(worker);
  const r = await run(["run", "--wait", "--json"]);
  expect(r.code, r.out).toBe(0);

  const server = spawnWorker(yaml, env, ["serve", "--processes", "1"]);
  procs.push(server);
  const ready = await waitFor(async () => server.logs.find((l) => l.includes('"server ready"')), 60_000, "server ready");
  const base = (JSON.parse(ready) as { url: string }).url.replace(/\/$/, "");
  const token = (await run(["token"])).out.trim().split("\n").at(-1)!;
  for (const q of ["debt consolidation", "auto loan"]) {
    const res = await fetch(`${base}/generate-advice`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify({ query: q }) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { fallback_reason?: string };
    expect(body.fallback_reason).toBeTruthy(); // the LLM endpoint failed: the error path ran
    outputs.push(JSON.stringify(body));
  }
  const bad = await fetch(`${base}/search`, { method: "POST", headers: { authorization: "Bearer nope", "content-type": "application/json" }, body: "{}" });
  outputs.push(await bad.text());
  outputs.push(await (await fetch(`${base}/metrics`)).text());
  outputs.push(await (await fetch(`${base}/ready`)).text());
  await run(["inspect", "runs", "--json"]);
  server.proc.kill("SIGTERM");
  worker.proc.kill("SIGTERM");
  await Promise.all([server.exited, worker.exited]); // resolves once their output is drained

  const all = [...outputs, ...worker.logs, ...server.logs].join("\n");
  expect(all.length).toBeGreaterThan(1000);
  expect(all).toContain("server ready");
  for (const [name, value] of Object.entries(secrets)) {
    expect(all.includes(value), `${name} leaked into the output`).toBe(false);
  }
}, 240_000);
