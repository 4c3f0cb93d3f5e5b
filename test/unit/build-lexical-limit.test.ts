/**
 * `server.retrieval.lexical_max_docs`: a version with more documents is built without `lexical.json` (its build
 * and load hold the whole index in one heap, and past ~800k sample documents its JSON is longer than V8's
 * longest string), with a warning; an unchanged run keeps such a base instead of rebuilding it for a lexical
 * index it should not have.
 */
import { describe, expect, it } from "vitest";
import flat from "../../plugins/index/flat.ts";
import type { IndexEngine } from "../../runtime/contracts.ts";
import { LEXICAL_FILE } from "../../runtime/lexical.ts";
import { silentLogger } from "../../runtime/log.ts";
import { buildVersion, unchangedBase, wantsLexical, type NewPart } from "../../runtime/stages/build.ts";
import { normalizeRows, randomUnitVectors } from "../conformance/index.ts";

const dims = 8;
const engine = (await flat.create(flat.options.parse({ search_threads: 0 }), { baseDir: "/", log: silentLogger, env: {} })) as IndexEngine;

function part(rows: number): NewPart {
  const docs = new TextEncoder().encode(Array.from({ length: rows }, (_, i) => JSON.stringify({ id: `d${i}`, text: `document ${i}` })).join("\n") + "\n");
  return { n: 0, docs, vectors: normalizeRows(randomUnitVectors(rows, dims, 3), dims), rows, dims, modelId: "m", maxChars: 100 };
}

const build = (rows: number, lexicalMaxDocs: number | undefined, warn?: (m: string) => void) =>
  buildVersion({ pipeline: "t", runId: null, engine, engineName: "flat", engineKey: "k", embedderKey: "e", parts: [part(rows)], reuse: [], warn, lexicalMaxDocs });

describe("lexical_max_docs", () => {
  it("builds the lexical index up to the limit and leaves it out past it, saying so", async () => {
    const at = await build(20, 20);
    expect(at.manifest.files[LEXICAL_FILE]).toBeDefined();
    expect(at.lexicalMs).toBeGreaterThan(0);
    const warnings: string[] = [];
    const past = await build(21, 20, (m) => warnings.push(m));
    expect(past.manifest.files[LEXICAL_FILE]).toBeUndefined();
    expect(past.files[LEXICAL_FILE]).toBeUndefined();
    expect(past.lexicalMs).toBe(0);
    expect(warnings.join("\n")).toMatch(/no lexical index for this version: 21 documents > server.retrieval.lexical_max_docs 20/);
    expect((await build(5, 0)).manifest.files[LEXICAL_FILE]).toBeUndefined();
    expect(wantsLexical(5, undefined)).toBe(true);
  });

  it("an unchanged run keeps a base left without one by the limit, and rebuilds one that should have it", async () => {
    const { manifest } = await build(21, 20);
    const reuse = Array.from({ length: 21 }, (_, row) => ({ row }));
    expect(unchangedBase(manifest, reuse, 0, "k", 20)).toBe(true);
    // The limit was raised since: the version is built again, now with its lexical index.
    expect(unchangedBase(manifest, reuse, 0, "k", 100)).toBe(false);
  });
});
