/**
 * `apfa/server` mounts the HTTP API in a server the user already runs: under a prefix of an h3 app, and as a
 * plain node:http handler, answering /search with the published index and requiring the JWT as `apfa serve` does.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { H3, serve } from "h3";
import { toNodeHandler } from "h3/node";
import { silentLogger } from "apfa";
import { createApfaHandler, type ApfaHandler } from "apfa/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openServerFixture, type Published, type ServerFixture } from "../helpers/server.ts";

let fx: ServerFixture;
let apfa: ApfaHandler;
let published: Published;

beforeAll(async () => {
  fx = await openServerFixture();
  published = await fx.publish({ count: 50 });
  apfa = await createApfaHandler(fx.config, silentLogger);
});
afterAll(async () => {
  await apfa?.close();
  await fx?.close();
});

const search = (base: string, token?: string) => fetch(`${base}/search`, {
  method: "POST",
  headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
  body: JSON.stringify({ query: "loan", k: 3 }),
});

describe("apfa/server", () => {
  it("serves the published index under a prefix of the user's h3 app, with the user's own routes beside it", async () => {
    expect(apfa.status().version).toBe(published.manifest.version);
    const app = new H3().get("/", () => "my app").mount("/rag", apfa.app);
    const server = serve(app, { port: 0, hostname: "127.0.0.1", silent: true });
    await server.ready();
    try {
      const base = server.url!.replace(/\/$/, "");
      expect(await (await fetch(`${base}/`)).text()).toBe("my app");
      expect((await search(`${base}/rag`)).status).toBe(401);
      const r = await search(`${base}/rag`, await fx.token());
      expect(r.status).toBe(200);
      const body = (await r.json()) as { hits: unknown[]; index_version: string };
      expect(body.hits).toHaveLength(3);
      expect(body.index_version).toBe(published.manifest.version);
    } finally {
      await server.close(true);
    }
  });

  it("runs as a node:http request handler", async () => {
    const server = http.createServer(toNodeHandler(apfa.app));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const r = await search(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, await fx.token());
      expect(r.status).toBe(200);
      expect(((await r.json()) as { hits: unknown[] }).hits).toHaveLength(3);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("answers web-standard requests through fetch()", async () => {
    const res = await apfa.fetch(new Request("http://localhost/health"));
    expect(res.status).toBe(200);
  });
});
