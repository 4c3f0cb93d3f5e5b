/**
 * Realistic vectors for the index suite: use-lite embeddings of the sample corpus (and of a second corpus
 * drawn with another seed, as queries), projected from 512 to the wanted width with a fixed Gaussian random
 * projection (which keeps inner products close, Johnson–Lindenstrauss) and L2-normalised. Larger sets repeat the
 * corpus rows with small seeded perturbations. Embeddings are cached under bench/results/.cache.
 * @module
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { generateCorpus, type CorpusDoc } from "../examples/corpus.ts";
import type { Embedder } from "../runtime/contracts.ts";
import { silentLogger } from "../runtime/log.ts";
import useLite from "../plugins/embedder/use-lite.ts";
import { ROOT } from "./lib.ts";

const CACHE = path.join(ROOT, "bench/results/.cache");

/** mulberry32 + Box–Muller: seeded standard normal samples. */
export function gaussian(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u());
}

function normalise(v: Float32Array, dims: number): void {
  for (let r = 0; r < v.length / dims; r++) {
    let s = 0;
    for (let i = r * dims; i < (r + 1) * dims; i++) s += v[i] * v[i];
    const inv = 1 / Math.sqrt(s || 1);
    for (let i = r * dims; i < (r + 1) * dims; i++) v[i] *= inv;
  }
}

let embedder: Promise<Embedder> | undefined;

/** use-lite vectors (512-d) of `docs`, cached by name. */
export async function embedCached(name: string, docs: CorpusDoc[], log: (m: string) => void): Promise<Float32Array> {
  const file = path.join(CACHE, `${name}.f32`);
  if (fs.existsSync(file) && fs.statSync(file).size === docs.length * 512 * 4) {
    const b = fs.readFileSync(file);
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  }
  log(`embedding ${docs.length} docs with use-lite (cached in ${path.relative(ROOT, file)})`);
  embedder ??= Promise.resolve(useLite.create(useLite.options.parse({ threads: Math.max(1, Math.min(os.cpus().length, 4)) }), { baseDir: ROOT, log: silentLogger, env: {} }));
  const e = await embedder;
  const out = new Float32Array(docs.length * 512);
  for (let i = 0; i < docs.length; i += 128) out.set(await e.embed(docs.slice(i, i + 128).map((d) => d.text)), i * 512);
  fs.mkdirSync(CACHE, { recursive: true });
  fs.writeFileSync(file, new Uint8Array(out.buffer));
  return out;
}

/** Rows × 512 → rows × dims through a fixed seeded Gaussian matrix, then normalised. */
function project(v: Float32Array, dims: number): Float32Array {
  const rows = v.length / 512;
  const g = gaussian(4242);
  const m = Float32Array.from({ length: 512 * dims }, g);
  const out = new Float32Array(rows * dims);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < 512; k++) {
      const x = v[r * 512 + k];
      if (x === 0) continue;
      for (let j = 0; j < dims; j++) out[r * dims + j] += x * m[k * dims + j];
    }
  }
  normalise(out, dims);
  return out;
}

export interface RealVectors {
  dims: number;
  docs: CorpusDoc[];
  /** docs.length × dims. */
  base: Float32Array;
  queries: Float32Array;
  queryCount: number;
}

/** Embeds (or loads) `baseCount` corpus docs and `queryCount` queries, projected to `dims`. */
export async function realVectors(baseCount: number, queryCount: number, dims: number, log: (m: string) => void): Promise<RealVectors> {
  const docs = generateCorpus({ count: baseCount });
  const qdocs = generateCorpus({ count: queryCount, seed: 7 });
  const base = project(await embedCached(`use-lite-corpus-${baseCount}`, docs, log), dims);
  const queries = project(await embedCached(`use-lite-queries-s7-${queryCount}`, qdocs, log), dims);
  return { dims, docs, base, queries, queryCount };
}

/** Median over base rows of the cosine to their nearest other base row (how far apart real neighbours are). */
export function medianNeighbourCosine(rv: Pick<RealVectors, "dims" | "base">): number {
  const { dims, base } = rv;
  const b = base.length / dims;
  const best: number[] = [];
  for (let i = 0; i < b; i++) {
    let top = -1;
    for (let j = 0; j < b; j++) {
      if (i === j) continue;
      let s = 0;
      for (let k = 0; k < dims; k++) s += base[i * dims + k] * base[j * dims + k];
      if (s > top) top = s;
    }
    best.push(top);
  }
  return best.sort((x, y) => x - y)[best.length >> 1];
}

/** The relative noise norm that puts a perturbed copy at cosine `cos` from its source: 1/√(1+ε²) = cos. */
export const noiseForCosine = (cos: number): number => Math.sqrt(1 / (cos * cos) - 1);

/**
 * `count` rows in batches of `batchRows` (separate buffers, like the pipeline's batch files): row i is base row
 * i mod B, and every repeat past the first gets seeded Gaussian noise of norm ≈ `noise`, then is normalised.
 */
export function expand(rv: RealVectors, count: number, batchRows = 1000, noise = 0.25): Float32Array[] {
  const { dims, base } = rv;
  const b = base.length / dims;
  const g = gaussian(99);
  const sigma = noise / Math.sqrt(dims);
  const out: Float32Array[] = [];
  for (let start = 0; start < count; start += batchRows) {
    const rows = Math.min(batchRows, count - start);
    const part = new Float32Array(rows * dims);
    for (let r = 0; r < rows; r++) {
      const i = start + r;
      part.set(base.subarray((i % b) * dims, (i % b + 1) * dims), r * dims);
      if (i >= b) for (let j = r * dims; j < (r + 1) * dims; j++) part[j] += sigma * g();
    }
    normalise(part, dims);
    out.push(part);
  }
  return out;
}

/** docs.jsonl bytes for `count` rows: the corpus repeated, ids suffixed past the first copy. */
export function docsJsonl(docs: CorpusDoc[], count: number): Uint8Array {
  const lines: string[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const d = docs[i % docs.length];
    const k = Math.floor(i / docs.length);
    lines[i] = JSON.stringify({ id: k ? `${d.id}~${k}` : d.id, text: d.text, metadata: d.metadata });
  }
  return new TextEncoder().encode(lines.join("\n") + "\n");
}
