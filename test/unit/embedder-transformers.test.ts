import * as fsp from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { env, pipeline } from "@huggingface/transformers";
import { afterAll, expect, it } from "vitest";
import transformers, { _loaded } from "../../plugins/embedder/transformers.ts";
import { isApfaError } from "../../runtime/errors.ts";
import { silentLogger } from "../../runtime/log.ts";
import { cosine, testEmbedder } from "../conformance/embedder.ts";
import { makeBertModel } from "../fixtures/tiny-bert.ts";

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-transformers-"));
await makeBertModel(path.join(dir, "models", "tiny"));
afterAll(() => fsp.rm(dir, { recursive: true, force: true }));
const ctx = { baseDir: dir, log: silentLogger, env: {} };
const make = async (opts: Record<string, unknown>) => transformers.create(transformers.options.parse({ model: "models/tiny", ...opts }), ctx);
const failure = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e);

testEmbedder("transformers (tiny BERT, q8)", () => make({}));
testEmbedder("transformers (tiny BERT, fp32)", () => make({ dtype: "fp32" }));

it("transformers names the model and dtype in modelId and takes dims from config.json", async () => {
  const e = await make({ model: "./models/tiny/" });
  expect(e.modelId).toBe("models/tiny:q8");
  expect(e.dims).toBe(32);
  expect(e.maxChars).toBe(256 * 4);
});

it("transformers mean-pools like the transformers.js feature-extraction pipeline", async () => {
  const texts = ["what rate will i pay on my home loan", "bake the pasta", "a"];
  const ours = await (await make({ dtype: "fp32" })).embed(texts);
  const extractor = await pipeline("feature-extraction", path.join(dir, "models", "tiny"), { dtype: "fp32" });
  const ref = (await extractor(texts, { pooling: "mean", normalize: true })).data as Float32Array;
  for (let i = 0; i < texts.length; i++) expect(cosine(ours, i, ref, i, 32)).toBeGreaterThan(0.99999);
});

it("transformers q8 loads the int8 graph: close to fp32 but not identical", async () => {
  const texts = ["how much can i borrow for a house", "tomato sauce recipe"];
  const q8 = await (await make({})).embed(texts);
  const fp32 = await (await make({ dtype: "fp32" })).embed(texts);
  for (let i = 0; i < texts.length; i++) {
    expect(cosine(q8, i, fp32, i, 32)).toBeGreaterThan(0.95);
    expect(cosine(q8, i, fp32, i, 32)).toBeLessThan(0.999999);
  }
});

it("transformers cuts texts at max_tokens and keeps the closing [SEP]", async () => {
  const head = "loan rate bank home car pay";
  const texts = [`${head} money fee fees early term`, `${head} pasta sauce tomato garlic`];
  const short = await (await make({ max_tokens: 8 })).embed(texts); // [CLS] + 6 words + [SEP]: the tails differ only past the cut
  expect(cosine(short, 0, short, 1, 32)).toBeGreaterThan(0.99999);
  const long = await (await make({ max_tokens: 64 })).embed(texts);
  expect(cosine(long, 0, long, 1, 32)).toBeLessThan(0.999);
});

it("transformers with threads: 1 gives the same vectors as the default thread pool", async () => {
  const texts = ["loan rate", "pasta sauce"];
  const a = await (await make({ threads: 1 })).embed(texts);
  const b = await (await make({})).embed(texts);
  for (let i = 0; i < texts.length; i++) expect(cosine(a, i, b, i, 32)).toBeGreaterThan(0.99999);
});

it("transformers loads each model once per process", async () => {
  await make({});
  const before = _loaded.size;
  await make({ batch_size: 3, max_tokens: 64 }); // same directory, dtype and threads: no second load
  await make({ model: "./models/tiny/" });
  expect(_loaded.size).toBe(before);
});

it("transformers refuses a missing directory when allow_remote is false, naming the fix", async () => {
  for (const model of ["models/missing", "Xenova/all-MiniLM-L6-v2"]) {
    const err = await failure(make({ model }));
    expect(isApfaError(err, "config")).toBe(true);
    expect((err as Error).message).toMatch(/option model: .* allow_remote is false.*set allow_remote: true/);
  }
});

it("transformers names the dtypes a model has when the chosen one is missing", async () => {
  await makeBertModel(path.join(dir, "models", "fp32-only"));
  await fsp.rm(path.join(dir, "models", "fp32-only", "onnx", "model_quantized.onnx"));
  const err = await failure(make({ model: "models/fp32-only" }));
  expect(isApfaError(err, "config")).toBe(true);
  expect((err as Error).message).toMatch(/option dtype: "q8" needs onnx\/model_quantized\.onnx.*has dtype fp32/);
});

it("transformers downloads a hub id only with allow_remote, then loads it offline from cache_dir", async () => {
  // A local stand-in for the hub: GET /{org}/{name}/resolve/main/{file}.
  const src = path.join(dir, "hub-src");
  await makeBertModel(src, { layers: 1, hidden: 16, heads: 2, ffn: 32, vocab: 200 });
  const requests: string[] = [];
  const server = http.createServer(async (req, res) => {
    requests.push(req.url!);
    const m = /^\/acme\/tiny\/resolve\/main\/(.+)$/.exec(req.url!);
    const body = m ? await fsp.readFile(path.join(src, m[1])).catch(() => null) : null;
    res.writeHead(body ? 200 : 404, { "content-length": body?.length ?? 0 }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const remoteHost = env.remoteHost;
  env.remoteHost = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  try {
    const e = await make({ model: "acme/tiny", allow_remote: true, cache_dir: "cache" });
    expect(e.dims).toBe(16);
    expect(requests).toContain("/acme/tiny/resolve/main/onnx/model_quantized.onnx");
    await fsp.access(path.join(dir, "cache", "acme", "tiny", "onnx", "model_quantized.onnx"));
    const before = requests.length;
    const offline = await make({ model: "acme/tiny", cache_dir: "cache" });
    expect((await offline.embed(["home loan"])).length).toBe(16);
    expect(requests.length).toBe(before);
  } finally {
    env.remoteHost = remoteHost;
    server.close();
  }
});
