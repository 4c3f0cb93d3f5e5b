/**
 * `transformers` embedder: any BERT-style sentence-embedding model in ONNX (all-MiniLM-L6-v2, bge-small,
 * e5-small, …) through `@huggingface/transformers` on onnxruntime-node: tokenise, run the encoder, mean-pool
 * over the attention mask, L2-normalise. Models load from a local directory by default; the hub is only
 * contacted when `allow_remote: true`. One tokenizer + session per process and model, however many
 * embedders are created.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { definePlugin, type Embedder, type PluginContext } from "../../runtime/contracts.ts";
import { ApfaError, errorMessage } from "../../runtime/errors.ts";
import { byLength, normalizeRows } from "./_vectors.ts";

export const NAME = "transformers";
const where = `stage:embedder:${NAME}`;

/** Weight variants and the file each loads, as transformers.js names them. */
const DTYPE_FILES = {
  fp32: "model.onnx", fp16: "model_fp16.onnx", q8: "model_quantized.onnx", int8: "model_int8.onnx",
  uint8: "model_uint8.onnx", q4: "model_q4.onnx", q4f16: "model_q4f16.onnx", bnb4: "model_bnb4.onnx",
} as const;
type Dtype = keyof typeof DTYPE_FILES;

export interface TransformersOptions {
  /** Model directory relative to pipeline.yaml (holding config.json, tokenizer.json, onnx/…), or a hub id. */
  model: string;
  /** Allow downloading `model` from the Hugging Face hub when it is not a local directory. @default false */
  allow_remote: boolean;
  /** Weights variant; q8 loads onnx/model_quantized.onnx, fp32 onnx/model.onnx. @default "q8" */
  dtype: Dtype;
  /** Tokens per text the model sees (capped by the model's own limit); longer texts are cut. @default 256 */
  max_tokens: number;
  /** Texts per forward pass. @default 32 */
  batch_size: number;
  /** onnxruntime intra-op threads; 0 = one per physical core. @default 0 */
  threads: number;
  /** Where hub downloads are kept, relative to pipeline.yaml; later runs load them from here offline. @default ".apfa/models" */
  cache_dir: string;
}

const options = z.strictObject({
  model: z.string().min(1).describe("Model directory relative to pipeline.yaml, or a Hugging Face hub id"),
  allow_remote: z.boolean().default(false).describe("Allow downloading the model from the Hugging Face hub"),
  dtype: z.enum(Object.keys(DTYPE_FILES) as [Dtype, ...Dtype[]]).default("q8")
    .describe("Weights variant: q8 = onnx/model_quantized.onnx, fp32 = onnx/model.onnx"),
  max_tokens: z.int().min(8).max(8192).default(256).describe("Tokens per text the model sees; longer texts are cut"),
  batch_size: z.int().min(1).max(1024).default(32).describe("Texts per forward pass"),
  threads: z.int().min(0).max(256).default(0).describe("onnxruntime intra-op threads; 0 = one per physical core"),
  cache_dir: z.string().min(1).default(".apfa/models").describe("Cache for hub downloads, relative to pipeline.yaml"),
});

type Transformers = typeof import("@huggingface/transformers");
interface Loaded {
  tokenizer: Awaited<ReturnType<Transformers["AutoTokenizer"]["from_pretrained"]>>;
  model: Awaited<ReturnType<Transformers["AutoModel"]["from_pretrained"]>>;
  dims: number;
  maxTokens: number;
  /** Special id that closes every sequence ([SEP], </s>), restored after truncation; null if none. */
  closing: bigint | null;
}

const loaded = new Map<string, Promise<Loaded>>();

/** @internal Loaded models by directory/hub id and dtype, exposed for tests. */
export const _loaded: ReadonlyMap<string, Promise<Loaded>> = loaded;

function checkDtype(dir: string, opts: TransformersOptions): void {
  if (fs.existsSync(path.join(dir, "onnx", DTYPE_FILES[opts.dtype]))) return;
  const have = fs.existsSync(path.join(dir, "onnx")) ? fs.readdirSync(path.join(dir, "onnx")) : [];
  const fits = Object.entries(DTYPE_FILES).filter(([, f]) => have.includes(f)).map(([d]) => d);
  throw new ApfaError("config", `option dtype: "${opts.dtype}" needs onnx/${DTYPE_FILES[opts.dtype]} in ${dir}, which is missing; ` +
    `this model has dtype ${fits.join(", ") || "(none: no onnx/model*.onnx files)"}`, { where });
}

/**
 * Resolves `model` to a directory: the path itself, else a hub id already downloaded into `cache_dir` (same
 * layout), else the hub id for transformers.js to download when `allow_remote` is on. Otherwise says how to fix it.
 */
function locate(opts: TransformersOptions, baseDir: string): string {
  const isDir = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() === true;
  const isHubId = /^([\w.-]+\/)?[\w.-]+$/.test(opts.model) && !opts.model.includes("..");
  const dir = path.resolve(baseDir, opts.model);
  const cached = path.resolve(baseDir, opts.cache_dir, opts.model);
  for (const d of isHubId ? [dir, cached] : [dir]) {
    if (!isDir(d)) continue;
    checkDtype(d, opts);
    return d;
  }
  if (!opts.allow_remote) {
    throw new ApfaError("config", `option model: "${opts.model}" is not a directory (looked in ${dir}) and allow_remote is false; ` +
      `put the model there (config.json, tokenizer.json, onnx/${DTYPE_FILES[opts.dtype]}) or set allow_remote: true to download it`, { where });
  }
  if (!isHubId) {
    throw new ApfaError("config", `option model: "${opts.model}" is neither a local directory nor a hub id like "Xenova/all-MiniLM-L6-v2"`, { where });
  }
  return opts.model;
}

async function load(id: string, opts: TransformersOptions, ctx: PluginContext): Promise<Loaded> {
  const tf = await import("@huggingface/transformers");
  // transformers.js keeps these process-wide; set them right before each load that depends on them.
  tf.env.allowRemoteModels = opts.allow_remote;
  tf.env.allowLocalModels = true;
  tf.env.localModelPath = ctx.baseDir;
  tf.env.cacheDir = path.resolve(ctx.baseDir, opts.cache_dir);
  // Deno has the Web Cache API, which transformers.js would otherwise prefer, keeping downloads out of cache_dir.
  tf.env.useBrowserCache = false;
  const local_files_only = !opts.allow_remote;
  const [tokenizer, model] = await Promise.all([
    tf.AutoTokenizer.from_pretrained(id, { local_files_only }),
    tf.AutoModel.from_pretrained(id, {
      dtype: opts.dtype,
      local_files_only,
      // No spin-waiting: the pipeline shares the machine with Postgres, the server and other jobs, where spinning
      // threads burn CPU others need (measured: ~1.6x more CPU per document on a busy 2-core box, same speed).
      session_options: { intraOpNumThreads: opts.threads, extra: { session: { intra_op: { allow_spinning: "0" } } } },
    }),
  ]);
  const config = model.config as unknown as { hidden_size?: number; max_position_embeddings?: number };
  if (!config.hidden_size) throw new Error("config.json has no hidden_size");
  const maxTokens = Math.min(opts.max_tokens, tokenizer.model_max_length, config.max_position_embeddings ?? Infinity);
  const last = (tokenizer("", { return_tensor: false }) as unknown as { input_ids: number[] }).input_ids.at(-1);
  const closing = last !== undefined && tokenizer.all_special_ids.includes(last) ? BigInt(last) : null;
  ctx.log.info("embedder model loaded", { model: opts.model, dtype: opts.dtype, dims: config.hidden_size, max_tokens: maxTokens });
  return { tokenizer, model, dims: config.hidden_size, maxTokens, closing };
}

/**
 * transformers.js truncates after adding special tokens, so a cut text loses its closing [SEP]; Python
 * sentence-transformers keeps it, and the models were trained with it. Put it back on rows that were cut.
 */
function closeTruncated(ids: BigInt64Array, mask: BigInt64Array, seqLen: number, maxTokens: number, closing: bigint | null): void {
  if (seqLen < maxTokens || closing === null) return;
  for (let row = 0; row < ids.length / seqLen; row++) {
    const last = (row + 1) * seqLen - 1;
    if (mask[last] === 1n) ids[last] = closing;
  }
}

/** Averages the token vectors of each row over its attention mask into `out` at the rows' original positions. */
function meanPool(hidden: Float32Array, mask: BigInt64Array, rows: number[], seqLen: number, dims: number, out: Float32Array): void {
  rows.forEach((row, b) => {
    const dst = out.subarray(row * dims, (row + 1) * dims);
    let count = 0;
    for (let t = 0; t < seqLen; t++) {
      if (mask[b * seqLen + t] === 0n) continue;
      count++;
      const src = (b * seqLen + t) * dims;
      for (let i = 0; i < dims; i++) dst[i] += hidden[src + i];
    }
    for (let i = 0; i < dims; i++) dst[i] /= Math.max(count, 1);
  });
}

export default definePlugin({
  kind: "embedder",
  name: NAME,
  description: "Sentence-embedding ONNX model via @huggingface/transformers (mean pooling, local directory or hub id)",
  options,
  identity: (opts: TransformersOptions) => ({ model: opts.model, dtype: opts.dtype, max_tokens: opts.max_tokens }),
  async create(opts: TransformersOptions, ctx): Promise<Embedder> {
    const id = locate(opts, ctx.baseDir);
    const key = `${id}\0${opts.dtype}\0${opts.threads}`;
    let p = loaded.get(key);
    if (!p) {
      p = load(id, opts, ctx).catch((err) => {
        loaded.delete(key);
        throw new ApfaError("embedder", `cannot load model "${opts.model}" (dtype ${opts.dtype}): ${errorMessage(err)}`, { cause: err, where });
      });
      loaded.set(key, p);
    }
    const { tokenizer, model, dims, maxTokens: modelMax, closing } = await p;
    const maxTokens = Math.min(opts.max_tokens, modelMax);
    // ~4 characters per WordPiece token in English text; the tokenizer still cuts at max_tokens.
    const maxChars = maxTokens * 4;
    return {
      modelId: `${opts.model.replace(/^\.\/|\/+$/g, "")}:${opts.dtype}`,
      dims,
      maxChars,
      async embed(texts) {
        const out = new Float32Array(texts.length * dims);
        // Sorting by length keeps padding (and wasted attention) small inside each batch.
        const order = byLength(texts);
        try {
          for (let i = 0; i < order.length; i += opts.batch_size) {
            const rows = order.slice(i, i + opts.batch_size);
            const enc = tokenizer(rows.map((r) => texts[r].slice(0, maxChars)), { padding: true, truncation: true, max_length: maxTokens });
            closeTruncated(enc.input_ids.data as BigInt64Array, enc.attention_mask.data as BigInt64Array, enc.input_ids.dims[1], maxTokens, closing);
            const res = await model(enc);
            let h = res.last_hidden_state ?? res.token_embeddings;
            if (!h) throw new Error(`model outputs ${Object.keys(res).join(", ")}, expected last_hidden_state`);
            if (h.type !== "float32") h = h.to("float32");
            const [, seqLen, width] = h.dims as number[];
            if (width !== dims) throw new Error(`model returned ${width}-d token vectors but config.json says hidden_size ${dims}`);
            meanPool(h.data as Float32Array, enc.attention_mask.data as BigInt64Array, rows, seqLen, dims, out);
            h.dispose?.();
          }
          normalizeRows(out, dims);
        } catch (err) {
          throw new ApfaError("embedder", `embedding ${texts.length} texts failed: ${errorMessage(err)}`, { cause: err, where });
        }
        return out;
      },
    };
  },
});
