// The operators' dashboard in a real browser (Debian's headless chromium, driven by
// playwright-core): a real `tollgate serve` and `tollgate demo-upstream` on free loopback
// ports, a known mix of traffic, then the page is loaded, the token pasted, and the numbers
// it shows are checked against the mix. A screenshot goes to target/dashboard.png
// (SCREENSHOT=docs/dashboard.png refreshes the one the docs show; a relative path is
// taken from the repository's root).
//
// Run with `npm test` in this directory after `cargo build -p tollgate` (or set
// TOLLGATE_BIN). CHROMIUM overrides /usr/bin/chromium. Every wait is bounded.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const bin = process.env.TOLLGATE_BIN || join(repo, "target", "debug", "tollgate");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshot = resolve(repo, process.env.SCREENSHOT || join("target", "dashboard.png"));
const TOKEN = "dashboard-test-admin-token";
const OPERATOR = "dashboard-test-operator-token";

const children = [];
let dir;
let proxy;
let admin;
let logPath;

// `n` distinct ports of 127.0.0.1 that were free a moment ago: every listener stays open
// until all are picked, so the kernel cannot hand out one port twice (it may reuse a port
// just closed, and then two servers of the test would race for it).
async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      servers.push(
        await new Promise((ok, fail) => {
          const s = createServer();
          s.once("error", fail);
          s.listen(0, "127.0.0.1", () => ok(s));
        })
      );
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((ok) => s.close(() => ok()))));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

function start(args, env, log) {
  const child = spawn(bin, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const chunks = [];
  child.stdout.on("data", (d) => chunks.push(d));
  child.stderr.on("data", (d) => chunks.push(d));
  child.exited = new Promise((ok) =>
    child.on("exit", () => {
      try {
        writeFileSync(log, Buffer.concat(chunks));
      } catch (_) {
        /* the directory is gone */
      }
      ok();
    })
  );
  child.logText = () => Buffer.concat(chunks).toString();
  children.push(child);
  return child;
}

async function adminCall(method, path, body, token = TOKEN) {
  const resp = await fetch(`http://${admin}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  return { status: resp.status, json: text ? JSON.parse(text) : null };
}

async function call(path, key) {
  const resp = await fetch(`http://${proxy}${path}`, {
    headers: key ? { "Ocp-Apim-Subscription-Key": key } : {},
  });
  await resp.arrayBuffer();
  return resp.status;
}

// What the mix below makes.
const EXPECTED = { calls: 25, success: 12, blocked: 8, failed: 3, other: 2, rateLimited: 2 };

before(async () => {
  assert.ok(existsSync(bin), `the tollgate binary is missing at ${bin}: run cargo build -p tollgate`);
  assert.ok(existsSync(chromiumPath), `chromium is missing at ${chromiumPath}: apt-get install chromium`);
  rmSync(screenshot, { force: true }); // the size check below reads this run's
  dir = mkdtempSync(join(tmpdir(), "tollgate-dashboard-"));
  const [upstreamPort, closedPort, proxyPort, adminPort] = await freePorts(4);
  start(["demo-upstream", "--listen", `127.0.0.1:${upstreamPort}`], {}, join(dir, "upstream.log"));
  const config = `version: 1
products:
  - id: gold
    title: Gold
    apis: [petstore]
  - id: starter
    title: Starter
    apis: [petstore]
    policies:
      inbound:
        - base
        - rate-limit: { calls: 3, renewal_period: 1h }
apis:
  - id: petstore
    path: /petstore
    upstream: { targets: ["http://127.0.0.1:${upstreamPort}"] }
    operations:
      - { id: get-pet, method: GET, path: "/pets/{id}" }
      - { id: list-pets, method: GET, path: /pets }
  - id: legacy
    path: /legacy
    subscription_required: false
    upstream: { targets: ["http://127.0.0.1:${closedPort}"] }
`;
  writeFileSync(join(dir, "policy.yaml"), config);
  proxy = `127.0.0.1:${proxyPort}`;
  admin = `127.0.0.1:${adminPort}`;
  logPath = join(dir, "tollgate.log");
  const gw = start(
    [
      "serve",
      "--config", join(dir, "policy.yaml"),
      "--listen", proxy,
      "--admin-listen", admin,
      "--data-dir", join(dir, "data"),
      "--threads", "2",
    ],
    { TOLLGATE_ADMIN_TOKEN: TOKEN, TOLLGATE_OPERATOR_TOKEN: OPERATOR, RUST_LOG: "warn" },
    logPath
  );
  await waitFor("the gateway to be ready", 15000, async () => {
    if (gw.exitCode !== null) throw new Error(`tollgate exited: ${gw.logText()}`);
    const r = await fetch(`http://${admin}/readyz`);
    return r.status === 200;
  });
  await waitFor("the upstream", 10000, async () => (await fetch(`http://127.0.0.1:${upstreamPort}/`)).ok);

  // Stay inside one rate-limit hour.
  const left = 3600 - (Math.floor(Date.now() / 1000) % 3600);
  if (left < 60) await sleep((left + 1) * 1000);

  const alpha = (await adminCall("POST", "/subscriptions", { id: "alpha", display_name: "Alpha", scope: "product:gold" })).json;
  const beta = (await adminCall("POST", "/subscriptions", { id: "beta", display_name: "Beta", scope: "product:starter" })).json;
  assert.ok(alpha.primary_key && beta.primary_key);
  const expect = async (path, key, status) => assert.equal(await call(path, key), status, path);
  // alpha (gold): 6 × get-pet, 3 × list-pets, all 200 (the demo upstream echoes).
  for (let i = 0; i < 6; i++) await expect(`/petstore/pets/${i}`, alpha.primary_key, 200);
  for (let i = 0; i < 3; i++) await expect("/petstore/pets", alpha.primary_key, 200);
  // beta (starter, 3 per hour): 3 × 200, 2 × 429.
  for (let i = 0; i < 3; i++) await expect("/petstore/pets/7", beta.primary_key, 200);
  for (let i = 0; i < 2; i++) await expect("/petstore/pets/7", beta.primary_key, 429);
  // No key: 4 × 401; unknown key: 2 × 401.
  for (let i = 0; i < 4; i++) await expect("/petstore/pets/1", null, 401);
  for (let i = 0; i < 2; i++) await expect("/petstore/pets/1", "wrong-key", 401);
  // Unknown path: 1 × 404; wrong method: 1 × 405 (both "other").
  await expect("/nothing-here", null, 404);
  assert.equal((await fetch(`http://${proxy}/petstore/pets`, { method: "DELETE" })).status, 405);
  // The legacy API's target refuses: 3 × 502.
  for (let i = 0; i < 3; i++) await expect("/legacy/x", null, 502);
  await waitFor("analytics to show every call", 5000, async () => {
    const r = await adminCall("GET", "/analytics/requests?group_by=api");
    return r.json.total.calls_total === EXPECTED.calls;
  });
});

after(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  }
  await Promise.all(children.map((c) => c.exited));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function withBrowser(fn) {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30000,
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 1300 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    const problems = [];
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("request", (r) => {
      if (!r.url().startsWith(`http://${admin}/`)) problems.push(`request to another origin: ${r.url()}`);
    });
    await fn(page, problems);
  } finally {
    await browser.close();
  }
}

const text = (page, sel) => page.locator(sel).innerText();

test("the dashboard shows the exact numbers of the traffic", async (t) => {
  t.after(() => {
    if (!t.passed) console.error("--- tollgate log ---\n" + children[1].logText());
  });
  await withBrowser(async (page, problems) => {
    const resp = await page.goto(`http://${admin}/`);
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()["content-security-policy"], /default-src 'none'/);
    assert.match(await text(page, "#status"), /Paste an admin or operator token/);
    assert.equal(await page.locator("#main").isHidden(), true);

    // The operator token is enough.
    await page.fill("#token", OPERATOR);
    await page.click("#token-save");
    await page.waitForFunction(() => document.body.dataset.loaded);
    assert.equal(await text(page, "#kpi-calls"), String(EXPECTED.calls));
    assert.equal(await text(page, "#kpi-success"), String(EXPECTED.success));
    assert.equal(await text(page, "#kpi-blocked"), String(EXPECTED.blocked));
    assert.equal(await text(page, "#kpi-failed"), String(EXPECTED.failed));
    assert.equal(await text(page, "#kpi-other"), String(EXPECTED.other));
    assert.equal(await text(page, "#kpi-rate-limited"), String(EXPECTED.rateLimited));
    assert.equal(await text(page, "#kpi-quota"), "0");
    assert.match(await text(page, "#kpi-latency"), /^[\d.]+ ms \/ [\d.]+ ms \/ [\d.]+ ms$/);
    assert.match(await text(page, "#kpi-bandwidth"), /^0 B \/ [\d.]+ KiB$/);
    assert.equal(await text(page, "#kpi-cache"), "–");
    assert.equal(await text(page, "#resolution"), "minute");

    // Top tables: rows in order of calls, with their counts.
    const rows = async (id) =>
      page.locator(`#${id} tr[data-key]`).evaluateAll((trs) =>
        trs.map((tr) => [...tr.cells].slice(0, 5).map((c) => c.innerText))
      );
    assert.deepEqual(await rows("top-subscription"), [
      ["(none)", "11", "0", "6", "3"],
      ["alpha", "9", "9", "0", "0"],
      ["beta", "5", "3", "2", "0"],
    ]);
    assert.deepEqual(await rows("top-product"), [
      ["(none)", "11", "0", "6", "3"],
      ["gold", "9", "9", "0", "0"],
      ["starter", "5", "3", "2", "0"],
    ]);
    assert.deepEqual(await rows("top-api"), [
      ["petstore", "20", "12", "8", "0"],
      ["legacy", "3", "0", "0", "3"],
      ["(none)", "2", "0", "0", "0"],
    ]);
    assert.deepEqual(await rows("top-operation"), [
      ["petstore/get-pet", "17", "9", "8", "0"],
      ["(none)", "5", "0", "0", "3"],
      ["petstore/list-pets", "3", "3", "0", "0"],
    ]);
    // Four charts drawn by uPlot, with their legends.
    assert.equal(await page.locator(".uplot").count(), 4);
    assert.equal(await page.locator(".uplot canvas").count(), 4);
    const legend = await text(page, "#chart-calls");
    for (const s of ["success", "blocked", "failed", "other"]) assert.ok(legend.includes(s), legend);

    // The token stays for the tab (sessionStorage): a reload loads without asking again.
    assert.equal(await page.evaluate(() => sessionStorage.getItem("tollgate.token")), OPERATOR);
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.loaded);
    assert.equal(await text(page, "#kpi-calls"), String(EXPECTED.calls));

    // Another range asks the server again; a much older one is empty-handed but works.
    await page.selectOption("#range", "86400");
    await page.waitForFunction(() => document.getElementById("status").innerText.startsWith("Loaded"));
    assert.equal(await text(page, "#kpi-calls"), String(EXPECTED.calls));
    await page.selectOption("#range", "3600");
    await page.waitForFunction((n) => document.getElementById("kpi-calls").innerText === n, String(EXPECTED.calls));

    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });

    // A wrong token is refused and said so.
    await page.click("#token-forget");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("tollgate.token")), null);
    await page.fill("#token", "not-a-token");
    await page.click("#token-save");
    await page.waitForFunction(() => document.getElementById("status").classList.contains("error"));
    assert.match(await text(page, "#status"), /401/);

    const unexpected = problems.filter((p) => !p.includes("401"));
    assert.deepEqual(unexpected, []);
  });
  const png = readFileSync(screenshot);
  assert.ok(png.length > 10000, "the screenshot is suspiciously small");
});
