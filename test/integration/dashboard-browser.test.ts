/**
 * The dashboard in real headless Chromium against a live system (Postgres, a worker that ran two runs with the
 * hash test embedder, `apfa serve` with a JWT secret): the page takes `?token=` into sessionStorage, renders
 * workers, queues, runs and versions, starts a rebuild and retries a failed job from its buttons, and asks for
 * a token when it has none. Saves `test-artifacts/dashboard.png`. Skipped only when /usr/bin/chromium is absent
 * (`apt-get install -y chromium`).
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunRow } from "../../runtime/runs.ts";
import { openOpsSystem, until, type OpsServer, type OpsSystem } from "../fixtures/ops-system.ts";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = fs.existsSync(CHROMIUM);
const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
if (!hasChromium) console.warn(`dashboard-browser: SKIPPED — ${CHROMIUM} not found; install it with: apt-get install -y chromium`);

describe.skipIf(!hasChromium)("dashboard in headless Chromium", () => {
  let sys: OpsSystem;
  let server: OpsServer;
  let browser: Browser;
  let page: Page;
  let token: string;
  let first: RunRow;
  let second: RunRow;
  let failedJob: string;
  const problems: string[] = [];

  beforeAll(async () => {
    sys = await openOpsSystem({ docs: 50 });
    await sys.startWorker();
    first = await sys.runToEnd();
    await sys.writeCorpus(60, "second");
    second = await sys.runToEnd();
    failedJob = await sys.addJob("flaky", { maxAttempts: 1 });
    await until("the flaky job to fail for good", async () =>
      (await sys.db.pool.query("select 1 from apfa.jobs where id = $1 and attempts >= max_attempts and locked_at is null", [failedJob])).rowCount === 1);
    server = await sys.serve();
    token = await sys.token();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
    page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  });
  afterAll(async () => {
    await browser?.close();
    await sys?.close();
  });

  const rowIds = (table: string) => page.locator(`#${table} tbody tr[data-id]`).evaluateAll((rows) => rows.map((r) => r.getAttribute("data-id")));

  it("takes ?token= into sessionStorage, drops it from the address bar and renders every section", async () => {
    await page.goto(`${server.base}/dashboard?token=${encodeURIComponent(token)}`);
    await page.waitForSelector("body[data-loaded=true]", { timeout: 15_000 });
    expect(page.url()).toBe(`${server.base}/dashboard`);
    expect(await page.evaluate(() => sessionStorage.getItem("apfa.token"))).toBe(token);
    expect(await page.textContent("#pipeline")).toContain("pipeline dash");

    const worker = page.locator(`#workers tr[data-id="${sys.worker!.id}"]`);
    expect(await worker.getAttribute("data-status")).toBe("online");
    expect(await worker.textContent()).toContain("embedding ×4");
    expect(await page.textContent("#workers-count")).toBe("1 online");

    expect(await page.locator("#queues tbody tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-queue")))).toEqual(["embedding", "indexing", "maintenance"]);
    expect(await page.locator('#queues tr[data-queue="embedding"] td').nth(4).textContent()).toBe("8");

    expect(await rowIds("runs")).toEqual([second.id, first.id]);
    const run = page.locator(`#runs tr[data-id="${second.id}"]`);
    expect(await run.getAttribute("data-status")).toBe("succeeded");
    expect(await run.locator("[role=progressbar]").getAttribute("aria-valuenow")).toBe("100");
    expect(await run.textContent()).toContain("100% · 3/3 batches");

    expect(await rowIds("versions")).toEqual([second.index_version, first.index_version]);
    expect(await page.locator("#versions tr.current").getAttribute("data-id")).toBe(second.index_version);
    expect(await page.locator("#versions tr.current .badge").textContent()).toBe("current");

    const failed = page.locator(`#failed tr[data-id="${failedJob}"]`);
    expect(await failed.textContent()).toContain("fails on purpose");
    // 2 runs × (embed_all + 3 embed_batch + build_index) and the flaky job's one attempt.
    expect(await page.locator("#recent tbody tr[data-id]").count()).toBe(11);
    expect(problems).toEqual([]);
  });

  it("starts a run from the Rebuild button", async () => {
    const before = (await sys.db.pool.query<{ id: string }>("select id from apfa.runs")).rows.map((r) => r.id);
    await page.click("#rebuild");
    const created = await until("a new row in apfa.runs", async () =>
      (await sys.db.pool.query<{ id: string; trigger: string }>("select id, trigger from apfa.runs where id <> all($1)", [before])).rows[0]);
    expect(created.trigger).toBe("api");
    expect(await page.textContent("#notice")).toBe(`Run ${created.id} started.`);
    await page.waitForSelector(`#runs tr[data-id="${created.id}"]`, { timeout: 10_000 });
    expect((await sys.waitForRun(created.id)).status).toBe("succeeded");
    await page.waitForSelector(`#runs tr[data-id="${created.id}"][data-status=succeeded]`, { timeout: 10_000 });
  });

  it("retries a failed job from its Retry button", async () => {
    sys.gates.flakyPasses = true;
    await page.click(`#failed tr[data-id="${failedJob}"] button.retry`);
    await until("the retried job to succeed", async () =>
      (await sys.db.pool.query("select 1 from apfa.job_history where job_id = $1 and outcome = 'success'", [failedJob])).rowCount === 1);
    await page.waitForSelector(`#failed tr[data-id="${failedJob}"]`, { state: "detached", timeout: 10_000 });
    expect(await page.textContent("#failed tbody")).toContain("No failed jobs.");
  });

  it("looks right (test-artifacts/dashboard.png)", async () => {
    await page.waitForTimeout(3500); // one more auto-refresh, so ages and the rebuild's version are current
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, "dashboard.png");
    await page.screenshot({ path: file, fullPage: true });
    expect(fs.statSync(file).size).toBeGreaterThan(20_000);
    expect(problems).toEqual([]);
  });

  it("asks for a token when it has none, and loads once one is entered", async () => {
    const context = await browser.newContext();
    try {
      const fresh = await context.newPage();
      await fresh.goto(`${server.base}/dashboard`);
      await fresh.waitForSelector("#login:not([hidden])", { timeout: 10_000 });
      expect(await fresh.textContent("#login-reason")).toContain("missing_token");
      expect(await fresh.locator("#main").isHidden()).toBe(true);
      await fresh.fill("#token", token);
      await fresh.click("#login button[type=submit]");
      await fresh.waitForSelector("body[data-loaded=true]", { timeout: 10_000 });
      expect(await fresh.locator(`#workers tr[data-id="${sys.worker!.id}"]`).count()).toBe(1);
    } finally {
      await context.close();
    }
  });
});
