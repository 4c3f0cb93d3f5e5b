/**
 * The serve suite's raw baseline: the least a search endpoint can do, on plain `node:http`. Reads the flat
 * index file and docs.jsonl of argv[2] with readFileSync, listens on argv[3], and answers `POST /search`
 * `{query, k}` by hashing the query (the same embedder apfa serve uses here), usearch `exactSearch`, and the
 * hits as JSON. No auth, cache, validation, leases or metrics.
 * @module
 */
import * as fs from "node:fs";
import * as http from "node:http";
import { createRequire } from "node:module";
import * as path from "node:path";
import type * as Usearch from "usearch";
import { hashEmbed } from "../fixtures/hash-embedder.ts";

const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;
const HEADER = 45; // FAISS IndexFlatIP header (plugins/index/flat.ts)
const dir = process.argv[2];
const file = fs.readFileSync(path.join(dir, "index.faiss"));
const dims = file.readInt32LE(4);
const data = new Float32Array(file.buffer.slice(file.byteOffset + HEADER, file.byteOffset + file.byteLength));
const docs = fs.readFileSync(path.join(dir, "docs.jsonl"), "utf8").split("\n");

const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/search") {
    res.writeHead(404).end();
    return;
  }
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const { query, k = 5 } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { query: string; k?: number };
    const m = usearch.exactSearch(data, hashEmbed(query, dims), dims, k, usearch.MetricKind.IP, 0) as Usearch.Matches;
    const hits = Array.from(m.keys, (key, i) => {
      const d = JSON.parse(docs[Number(key)]) as { id: string; text: string; metadata?: Record<string, unknown> };
      return { id: d.id, score: 1 - m.distances[i], text: d.text, metadata: d.metadata ?? {} };
    });
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ hits }));
  });
});
server.listen(Number(process.argv[3]), "127.0.0.1", () => process.send?.({ ready: true }));
process.once("SIGTERM", () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
