// Drives the search page in Debian's Chromium (playwright-core) against a running `clip-retrieval back`.
// Usage: node e2e/ui.mjs BASE_URL QUERY_IMAGE QUERY_IMAGE_CAPTION OUT_DIR
// Exits non-zero with a message on the first failed check; saves OUT_DIR/results.png.
import { chromium } from "playwright-core";

const [base, imagePath, imageCaption, outDir] = process.argv.slice(2);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

function check(ok, message) {
  if (!ok) throw new Error(message);
}

const firstCaption = (page) => page.textContent("#results li .caption");

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: FLAGS });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(base + "/");
  await page.waitForFunction(() => document.querySelector("#index")?.options.length > 0);

  // A text query shows the expected top image, and the URL holds the query.
  await page.fill("#text", "a red circle");
  await page.press("#text", "Enter");
  await page.waitForSelector("#results li img");
  const top = await firstCaption(page);
  check(/red circle/.test(top), `top result of "a red circle" is ${JSON.stringify(top)}`);
  check(new URL(page.url()).searchParams.get("query") === "a red circle", `URL ${page.url()} lacks the query`);
  const shown = await page.locator("#results li").count();
  check(shown >= 10, `only ${shown} results shown`);

  // Toggling similarities shows scores.
  check((await page.locator("#results .similarity").count()) === 0, "similarities shown before asked");
  await page.click("#settings summary");
  await page.check("#show-similarities");
  await page.waitForSelector("#results .similarity");
  const score = Number(await page.textContent("#results .similarity"));
  check(score > 0 && score <= 1, `similarity ${score}`);
  await page.screenshot({ path: `${outDir}/results.jpg`, type: "jpeg", quality: 75 });

  // The URL restores the whole search in a new page.
  const shared = page.url();
  const restored = await browser.newPage();
  await restored.goto(shared);
  await restored.waitForSelector("#results .similarity");
  check((await restored.inputValue("#text")) === "a red circle", "shared URL did not restore the query");
  check(/red circle/.test(await firstCaption(restored)), "shared URL did not restore the results");

  // Scrolling to the end loads the next page of results through /metadata.
  const firstPage = await restored.locator("#results li").count();
  await restored.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await restored.waitForFunction((n) => document.querySelectorAll("#results li").length > n, firstPage);

  // Clicking a caption searches for it.
  const clicked = await restored.locator("#results li .caption").nth(3).textContent();
  await restored.locator("#results li .caption").nth(3).click();
  await restored.waitForFunction((c) => document.querySelector("#text").value === c, clicked);
  check(new URL(restored.url()).searchParams.get("query") === clicked, "caption search not in the URL");
  await restored.waitForSelector("#results li img");

  // Phone width: the grid still shows results, two per row.
  await restored.setViewportSize({ width: 390, height: 800 });
  check(await restored.isVisible("#results li"), "results hidden at phone width");
  await restored.screenshot({ path: `${outDir}/results-phone.jpg`, type: "jpeg", quality: 75 });

  // An uploaded image finds itself or a near-identical twin (similarity >= 0.99; the tiny model confuses some
  // colours, so the twin may have another caption) and replaces the text query's results.
  await page.setInputFiles("#image-file", imagePath);
  await page
    .waitForFunction(() => {
      const caption = document.querySelector("#results li .caption")?.textContent ?? "red circle";
      const similarity = Number(document.querySelector("#results .similarity")?.textContent ?? 0);
      return !caption.includes("red circle") && similarity >= 0.99;
    }, undefined, { timeout: 15000 })
    .catch(async (e) => {
      const captions = await page.locator("#results li .caption").allTextContents();
      throw new Error(`image query (${imageCaption}): status ${await page.textContent("#status")}, ` +
        `top captions ${JSON.stringify(captions.slice(0, 3))}: ${e.message}`);
    });

  // Backend errors show a message: a refused image URL (400 from the server) and an unreachable backend.
  await page.fill("#image-url", "http://127.0.0.1:9/x.jpg");
  await page.fill("#text", "");
  await page.dispatchEvent("#image-url", "change");
  await page.waitForSelector("#status.error");
  const refused = await page.textContent("#status");
  check(/400/.test(refused) && /image_url/.test(refused), `error message: ${refused}`);
  const down = await browser.newPage();
  await down.goto(base + "/?back=" + encodeURIComponent("http://127.0.0.1:9/") + "&query=cat");
  await down.waitForSelector("#status.error");
  check(/127\.0\.0\.1:9/.test(await down.textContent("#status")), "unreachable backend not reported");

  console.log("ui checks passed");
} finally {
  await browser.close();
}
