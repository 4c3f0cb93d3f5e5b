/**
 * The serve suite's raw baseline: the least a search endpoint can do, on plain `node:http`. Reads the flat
 * index file and docs.jsonl of argv[2] with readFileSync, listens on argv[3], and answers `POST /search`
 * `{query, k}` by hashing the query (the same embedder apfa serve uses here), usearch `exactSearch`, and the
 * hits as JSON. No auth, cache, validation, leases or metrics. argv[4] (default 1) is the process count: above
 * 1, a primary that serves nothing forks that many processes sharing the port through node:cluster, each with
 * its own copy of the index, as `apfa serve --processes N` does.
 * @module
 */
import cluster from "node:cluster";
import * as fs from "node:fs";
import * as http from "node:http";
import { createRequire } from "node:module";
import * as path from "node:path";
import type * as Usearch from "usearch";
import { hashEmbed } from "../fixtures/hash-embedder.ts";

const HEADER = 45; // FAISS IndexFlatIP header (plugins/index/flat.ts)
const [dir, port, processesArg = "1"] = process.argv.slice(2);
const processes = Number(processesArg);
if (!Number.isInteger(processes) || processes < 1) throw new Error(`[apfa] [bench:raw-server] process count must be a whole number ≥ 1 (got ${processesArg})`);

if (processes > 1 && cluster.isPrimary) supervise();
else serve();

/** The primary: forks the processes, reports ready once all listen, and on SIGTERM stops them and exits. */
function supervise(): void {
  let listening = 0;
  let stopping = false;
  for (let i = 0; i < processes; i++) cluster.fork();
  cluster.on("listening", () => ++listening === processes && process.send?.({ ready: true }));
  cluster.on("exit", (w, code, signal) => {
    if (!stopping) {
      console.error(`raw-server: process ${w.process.pid} died (${signal ?? code}); stopping`);
      process.exit(1);
    }
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  });
  process.once("SIGTERM", () => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
  });
}

/** One serving process (the only one when the process count is 1). */
function serve(): void {
  const usearch = createRequire(import.meta.url)("usearch") as typeof Usearch;
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
  // Under cluster the primary counts "listening" events; alone, this process tells the bench itself.
  server.listen(Number(port), "127.0.0.1", () => cluster.isPrimary && process.send?.({ ready: true }));
  process.once("SIGTERM", () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
