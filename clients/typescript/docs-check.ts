// Opens the API's /docs page in Debian's Chromium with every host but 127.0.0.1 unresolvable, and prints (as
// JSON) the operations Swagger UI shows, plus anything that went wrong: console errors, refused or failed
// requests, Content-Security-Policy violations. tests/test_docs_offline.py runs it and judges the result.
//   node dist/docs-check.js http://127.0.0.1:8000/docs [/usr/bin/chromium]
import puppeteer from "puppeteer-core";

const [url, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node dist/docs-check.js <docs url> [chromium]");
  process.exit(2);
}

const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  args: [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-sandbox", // CI runs as root
    "--disable-gpu",
    "--no-first-run",
  ],
});
const problems: string[] = [];
const requested: string[] = [];
try {
  const page = await browser.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${String(error)}`));
  page.on("request", (request) => requested.push(request.url()));
  page.on("requestfailed", (request) => problems.push(`failed: ${request.url()} ${request.failure()?.errorText ?? ""}`));
  await page.evaluateOnNewDocument(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  const response = await page.goto(url, { waitUntil: "networkidle0", timeout: 60_000 });
  await page.waitForSelector(".opblock", { timeout: 60_000 });
  const operations = await page.$$eval(".opblock", (blocks) =>
    blocks.map((block) => [
      block.querySelector(".opblock-summary-method")?.textContent?.trim() ?? "",
      block.querySelector(".opblock-summary-path")?.getAttribute("data-path") ?? "",
      block.querySelector(".opblock-summary-description")?.textContent?.trim() ?? "",
    ]),
  );
  const title = await page.$eval(".info .title", (element) => element.textContent ?? "");
  console.log(
    JSON.stringify({ status: response?.status(), csp: response?.headers()["content-security-policy"], title, operations, problems, requested }),
  );
} finally {
  await browser.close();
}
