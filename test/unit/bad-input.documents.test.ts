/**
 * The bad-document corpus (test/bad-input/documents.jsonl, plus an invalid-UTF-8 line and a 10 MB text added
 * here): each line is skipped with its stated reason or accepted, by the same rules the orchestrator applies,
 * and nothing throws.
 */
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { expect, it } from "vitest";
import jsonl from "../../plugins/source/jsonl.ts";
import { checkItem, isSkip } from "../../runtime/documents.ts";
import { silentLogger } from "../../runtime/log.ts";

const DIR = path.join(import.meta.dirname, "../bad-input");

it("every bad document is skipped with its reason, good ones pass, nothing throws", async () => {
  const expected = JSON.parse(fs.readFileSync(path.join(DIR, "documents.expected.json"), "utf8")) as string[];
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-baddocs-"));
  const file = path.join(tmp, "docs.jsonl");
  const latin1 = Buffer.concat([Buffer.from('{"id": "enc1", "text": "caf'), Buffer.from([0xe9, 0xff, 0xfe]), Buffer.from('"}\n')]);
  const huge = JSON.stringify({ id: "huge1", text: "loan ".repeat(2_000_000) }) + "\n";
  await fsp.writeFile(file, Buffer.concat([fs.readFileSync(path.join(DIR, "documents.jsonl")), latin1, Buffer.from(huge), Buffer.from("\n\n")]));
  const all = [...expected, "ok", "ok"];
  expect(all.length).toBeGreaterThanOrEqual(30);

  const src = await jsonl.create(jsonl.options.parse({ path: file }), { baseDir: tmp, log: silentLogger, env: {} });
  const seen = new Set<string>();
  const got: string[] = [];
  for await (const page of src.pages({ pageSize: 7 })) {
    for (const item of page) {
      const r = checkItem(item, seen);
      got.push(isSkip(r) ? r.reason : "ok");
      if (isSkip(r) && r.reason === "malformed") expect(r.location).toMatch(/docs\.jsonl:\d+$/);
    }
  }
  expect(got).toEqual(all);
  expect(seen.has("huge1")).toBe(true);
  await fsp.rm(tmp, { recursive: true, force: true });
});
