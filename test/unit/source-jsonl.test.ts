import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { expect, it } from "vitest";
import jsonl from "../../plugins/source/jsonl.ts";
import { isMalformed } from "../../runtime/contracts.ts";
import { silentLogger } from "../../runtime/log.ts";
import { testSource } from "../conformance/source.ts";

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-jsonl-"));
const lines = Array.from({ length: 20 }, (_, i) => JSON.stringify({ id: `d${i}`, text: `doc ${i}`, kind: "loan" }));
lines.splice(5, 0, "{not json");
lines.splice(9, 0, "[1,2]");
await fsp.writeFile(path.join(dir, "c.jsonl"), lines.join("\r\n") + "\n\n");
const ctx = { baseDir: dir, log: silentLogger, env: {} };
const make = async () => jsonl.create(jsonl.options.parse({ path: "c.jsonl" }), ctx);

testSource("jsonl", make, { ids: Array.from({ length: 20 }, (_, i) => `d${i}`), malformed: 2 });

it("jsonl names the file and line of a malformed line", async () => {
  const items = [];
  for await (const p of (await make()).pages({ pageSize: 100 })) items.push(...p);
  const bad = items.filter(isMalformed);
  expect(bad.map((b) => b.location)).toEqual(["c.jsonl:6", "c.jsonl:10"]);
  expect(bad[0].malformed).toMatch(/invalid JSON/);
  expect(bad[1].malformed).toMatch(/expected a JSON object, got array/);
});

it("jsonl keeps other fields as metadata", async () => {
  for await (const p of (await make()).pages({ pageSize: 1 })) {
    expect(p[0]).toMatchObject({ id: "d0", text: "doc 0", metadata: { kind: "loan" } });
    break;
  }
});
