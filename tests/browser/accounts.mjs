// Two browsers sign up and sign in on the page, over https and wss with a self-signed
// certificate (which the test made: the browser is told to accept it, as a user would click
// through); a third page, anonymous, is refused one of their names; a reload signs in again
// with the remembered token, never the password. Started by tests/end_to_end/browser.rs:
// node accounts.mjs WS ARTIFACTS
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [ws, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const WAIT = 15000;

function fail(message) {
  console.error("FAIL: " + message);
  process.exitCode = 1;
  throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const open = async (width) => {
    const context = await browser.newContext({ viewport: { width, height: 760 }, ignoreHTTPSErrors: true });
    const page = await context.newPage();
    page.on("pageerror", (e) => fail("page error: " + e.message));
    await page.goto(`https://${ws}/`);
    await page.waitForSelector("#status.up", { timeout: WAIT });
    if (!(await page.evaluate(() => location.protocol === "https:"))) fail("not over https");
    return page;
  };
  const signUp = async (page, name, password, button) => {
    await page.click("#account summary");
    await page.fill("#account-user", name);
    await page.fill("#account-password", password);
    await page.click(button);
    await page.waitForFunction(
      (n) => document.querySelector("#account-name")?.textContent === "signed in as " + n,
      name,
      { timeout: WAIT },
    );
  };
  const sees = async (page, text) => {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll("#log .msg, #log .note")].some((m) => m.textContent.endsWith(t)),
      text,
      { timeout: WAIT },
    );
  };

  const ann = await open(1000);
  const bea = await open(390);
  await signUp(ann, "ann", "ann's password", "#signup");
  await signUp(bea, "bea", "bea's password", "#signup");
  const token = await ann.evaluate(() => JSON.parse(localStorage.getItem("chat-router")).token);
  if (!token) fail("no token remembered");
  const stored = await ann.evaluate(() => localStorage.getItem("chat-router"));
  if (stored.includes("ann's password")) fail("the password was stored");

  // An anonymous page cannot take ann's name.
  const eve = await open(800);
  await eve.fill("#nick", "ann");
  await eve.click("#nickform button");
  await sees(eve, "ann is a registered name: sign in to use it");

  // A reload signs ann in again with the token; she and bea talk under their names.
  await ann.reload();
  await ann.waitForFunction(
    () => document.querySelector("#account-name")?.textContent === "signed in as ann",
    null,
    { timeout: WAIT },
  );
  let carried = false;
  for (let i = 0; i < 50 && !carried; i++) {
    await ann.fill("#text", `hello from ann ${i}`);
    await ann.click("#say button");
    try {
      await bea.waitForFunction(
        (t) => [...document.querySelectorAll("#log .msg")].some((m) => m.textContent.includes("ann" + t)),
        `hello from ann ${i}`,
        { timeout: 300 },
      );
      carried = true;
    } catch {}
  }
  if (!carried) fail("bea never saw ann's message");
  await ann.screenshot({ path: `${artifacts}/accounts-ann.png` });
  await bea.screenshot({ path: `${artifacts}/accounts-bea.png` });
  await eve.screenshot({ path: `${artifacts}/accounts-eve.png` });
  console.log("OK: accounts");
} finally {
  await browser.close();
}
