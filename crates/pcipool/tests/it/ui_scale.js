// The dashboard on the 1,024-host fabric (16,384 devices) in Debian's chromium: signs in and times
// the first screen (devices listed, the fabric drawn), with no console error. Prints one JSON line.
"use strict";
const { chromium } = require("playwright-core");

const { UI_URL, UI_ADMIN, UI_SHOTS } = process.env;

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const errors = [];
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(UI_URL + "/ui");
  await page.fill("#token", UI_ADMIN);
  const started = Date.now();
  await page.click("#signin button");
  let firstScreenMs = null;
  try {
    await page.waitForFunction(() => document.querySelectorAll("#devices tbody tr").length > 0 &&
      document.querySelectorAll("#topology circle.host").length > 0, null, { timeout: 30000 });
    firstScreenMs = Date.now() - started;
  } catch (e) {
    errors.push("the first screen did not render: " + e.message);
  }
  const rows = await page.locator("#devices tbody tr").count();
  const count = await page.locator("#device-count").textContent();
  const hosts = await page.locator("#topology circle.host").count();
  if (UI_SHOTS) await page.screenshot({ path: UI_SHOTS + "/dashboard-1024.png" });
  await browser.close();
  console.log(JSON.stringify({ errors, firstScreenMs, rows, count, hosts }));
})().catch((e) => { console.log(JSON.stringify({ fatal: String(e) })); process.exit(1); });
