// Drives the dashboard in Debian's chromium with playwright-core (the test command installs it under
// ~/.cache/pcipool/npm): signs in as the admin, checks the devices render with no console error, lends
// a device with the CLI and times its row turning `lent` without a reload, then signs in as a tenant
// and counts the drain buttons it is offered. Prints one JSON line for the Rust test to check.
"use strict";
const { chromium } = require("playwright-core");
const { execFileSync } = require("child_process");

const { UI_URL, UI_ADMIN, UI_TENANT, UI_PCIPOOL, UI_SHOTS, UI_DEVICES, UI_REVIEW } = process.env;

async function signIn(browser, token, errors) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(UI_URL + "/ui");
  await page.fill("#token", token);
  await page.click("#signin button");
  await page.waitForFunction((n) => document.querySelectorAll("#devices tbody tr").length === n,
    Number(UI_DEVICES), { timeout: 10000 });
  await page.waitForSelector("#live.ok", { timeout: 10000 });
  return page;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const errors = [];
  const admin = await signIn(browser, UI_ADMIN, errors);
  const lentBefore = await admin.locator("#devices .state-lent").count();
  const drainButtons = await admin.locator("#devices button.drain").count();
  execFileSync(UI_PCIPOOL, ["borrow", "--class", "nvme", "--host", "n3", "--url", UI_URL, "--token", UI_ADMIN]);
  const borrowed = Date.now();
  let lentMs = null;
  try {
    await admin.waitForSelector("#devices .state-lent", { timeout: 2000 });
    await admin.waitForSelector("#leases tbody tr", { timeout: 2000 });
    await admin.waitForSelector("#topology path.lease", { timeout: 2000 });
    lentMs = Date.now() - borrowed;
  } catch (e) {
    errors.push("the lent device did not show within 2 s: " + e.message);
  }
  if (UI_SHOTS) await admin.screenshot({ path: UI_SHOTS + "/dashboard-admin.png", fullPage: true });
  // The lent device's page: its facts, its lease and its lend workflow's step timeline.
  let timelineSteps = 0;
  try {
    await admin.locator("#devices tr", { has: admin.locator(".state-lent") }).first().click();
    await admin.waitForSelector("#device-panel .timeline .step", { timeout: 5000 });
    timelineSteps = await admin.locator("#device-panel .timeline").first().locator(".step.done").count();
    if (UI_SHOTS) await admin.screenshot({ path: UI_SHOTS + "/device-page.png", fullPage: true });
  } catch (e) {
    errors.push("the device page did not show a workflow: " + e.message);
  }
  const topologyLeases = await admin.locator("#topology path.lease").count();
  const topologyHosts = await admin.locator("#topology circle.host").count();
  // The system review's page (written by `pcipool review`), opened from its file.
  let reviewOversubscribed = null;
  if (UI_REVIEW) {
    const review = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    review.on("console", (m) => { if (m.type() === "error") errors.push("review: " + m.text()); });
    review.on("pageerror", (e) => errors.push("review: " + String(e)));
    await review.goto("file://" + UI_REVIEW);
    reviewOversubscribed = await review.locator("#links tr.over").count();
    if (UI_SHOTS) await review.screenshot({ path: UI_SHOTS + "/review.png" });
  }
  const tenant = await signIn(browser, UI_TENANT, errors);
  const tenantButtons = await tenant.locator("button.action").count();
  const tenantRole = await tenant.evaluate(() => document.body.dataset.role);
  if (UI_SHOTS) await tenant.screenshot({ path: UI_SHOTS + "/dashboard-tenant.png", fullPage: true });
  await browser.close();
  console.log(JSON.stringify({ errors, lentBefore, drainButtons, lentMs, timelineSteps, tenantButtons, tenantRole,
    topologyLeases, topologyHosts, reviewOversubscribed }));
})().catch((e) => { console.log(JSON.stringify({ fatal: String(e) })); process.exit(1); });
