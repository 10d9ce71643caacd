// Opens a page in Debian's Chromium (headless, through playwright-core) with every request
// that leaves 127.0.0.1 refused, waits for Swagger UI to render the API's operations, and
// prints a JSON report: {operations, titles, offHost, failed, consoleErrors}.
//
//   node docs_page.mjs http://127.0.0.1:8000/docs
import { chromium } from "playwright-core";

const url = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const report = { operations: 0, titles: [], offHost: [], failed: [], consoleErrors: [] };
try {
  const page = await browser.newPage();
  await page.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === "127.0.0.1") return route.continue();
    report.offHost.push(route.request().url());
    return route.abort();
  });
  page.on("requestfailed", (request) => report.failed.push(request.url()));
  page.on("console", (message) => {
    if (message.type() === "error") report.consoleErrors.push(message.text());
  });
  await page.goto(url, { waitUntil: "load", timeout: 30_000 });
  await page.waitForSelector(".opblock", { timeout: 30_000 });
  report.operations = await page.locator(".opblock").count();
  report.titles = await page.locator(".opblock-summary-path").allInnerTexts();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
